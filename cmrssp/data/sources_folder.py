"""A folder of the user's own unlabelled 4D cine NIfTI files, for pretraining.

Every ``*.nii`` / ``*.nii.gz`` under the root (recursively, hidden files skipped) is one subject;
its id is the path relative to the root without the suffix, ``/`` replaced by ``_``
(``site1/scan03.nii.gz`` -> ``site1_scan03``). Files must be 4D (x, y, z, t); nothing else
(labels, ED/ES, vendor) is known.
"""

from __future__ import annotations

from pathlib import Path

from cmrssp.data.nifti import read_image, strip_nifti_suffix
from cmrssp.data.sources import SubjectRef, find_files, geometry_notices, nifti_pattern
from cmrssp.data.subject import Subject
from cmrssp.errors import InputError

DATASET = "folder"
LOOKED_FOR = "looked for *.nii and *.nii.gz recursively"
NIFTI = nifti_pattern(r".+")


def subject_id(path: Path, root: Path) -> str:
    return strip_nifti_suffix(path.relative_to(root).as_posix()).replace("/", "_")


def discover(root: Path) -> list[SubjectRef]:
    return [SubjectRef(DATASET, subject_id(path, root), (("image", str(path)),)) for path in find_files(root, NIFTI)]


def load(ref: SubjectRef, geometry: str = "auto") -> Subject:
    path = ref.path("image")
    image, image_geometry = read_image(path, ndim=(3, 4), geometry=geometry)
    if image.ndim != 4:
        raise InputError(path, f"expected a 4D cine (x, y, z, t), found a {image.ndim}D image with shape {image.shape}")
    return Subject(dataset=DATASET, subject_id=ref.subject_id, image=image, affine=image_geometry.affine,
                   source=(str(path),), geometry=image_geometry, notices=geometry_notices(image_geometry))
