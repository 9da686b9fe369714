"""Checked NIfTI reading and atomic writing with nibabel.

The pitfalls these helpers guard against are listed in ``docs/data-formats.md`` section 2:
voxel geometry is resolved from the affine and pixdim together by the one rule of
:mod:`cmrssp.data.geometry`, images are cast to float32 without nibabel's float64 cache, labels
are rounded to integers, and every failure names its file.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from cmrssp.atomic import atomic_path
from cmrssp.data.geometry import Geometry, resolve_geometry, voxel_spacing
from cmrssp.errors import InputError

__all__ = ["Geometry", "find_nifti", "read_image", "read_labels", "strip_nifti_suffix", "voxel_spacing", "write_nifti"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_nifti(folder: Path, stem: str) -> Path | None:
    """``folder/stem.nii.gz`` or ``folder/stem.nii``, whichever exists (None if neither)."""
    for suffix in NIFTI_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load(path: Path) -> tuple[nib.Nifti1Image, nib.Nifti1Header]:
    """(image, the header exactly as stored): nibabel's loaded header is "fixed" (a zero pixdim
    becomes 1, a zero qfac 1), which would hide the very header problems geometry must see."""
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.name.endswith(".gz"):
        # Decompress the whole stream ourselves: nibabel stops reading before the gzip checksum,
        # so damage in the middle of a .nii.gz would otherwise load silently.
        compressed = path.read_bytes()
        if compressed[:2] != b"\x1f\x8b":
            raise InputError(path, "not a gzip file, although its name ends in .gz")
        try:
            raw = gzip.decompress(compressed)
        except (EOFError, OSError, zlib.error) as error:
            raise InputError(path, f"truncated or corrupt gzip data ({error})") from None
        image = _from_bytes(path, raw)
        return image, _stored_header(image, raw[:540])
    try:
        image = nib.load(str(path), mmap=False)
    except Exception as error:  # nibabel raises many types for unreadable headers
        raise InputError(path, f"not a readable NIfTI file ({error})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI image (nibabel read it as {type(image).__name__})")
    with open(path, "rb") as stream:
        return image, _stored_header(image, stream.read(540))


def _stored_header(image: nib.Nifti1Image, first_bytes: bytes) -> nib.Nifti1Header:
    return type(image.header).from_fileobj(io.BytesIO(first_bytes), check=False)


def _from_bytes(path: Path, raw: bytes) -> nib.Nifti1Image:
    header_size = int(np.frombuffer(raw[:4], dtype="<i4")[0]) if len(raw) >= 4 else 0
    if header_size not in (348, 540) and len(raw) >= 4:
        header_size = int(np.frombuffer(raw[:4], dtype=">i4")[0])
    klass = nib.Nifti2Image if header_size == 540 else nib.Nifti1Image
    try:
        return klass.from_bytes(raw)
    except Exception as error:
        raise InputError(path, f"not a readable NIfTI file ({error})") from None


def _data(path: Path, image: nib.Nifti1Image) -> np.ndarray:
    try:
        return np.asanyarray(image.dataobj)
    except (EOFError, OSError, zlib.error, ValueError) as error:
        raise InputError(path, f"truncated or corrupt image data ({error})") from None


def read_image(
    path: str | os.PathLike, ndim: int | tuple[int, ...] = 4, geometry: str = "auto"
) -> tuple[np.ndarray, Geometry]:
    """Read an image as float32 with its resolved geometry.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        ndim: the number (or allowed numbers) of dimensions; a 4D file whose last axis has length 1
            counts as 3D, and vice versa a 3D file is never silently promoted to 4D.
        geometry: the rule of :mod:`cmrssp.data.geometry` ("auto", "affine" or "header").

    Returns:
        ``(data, geometry)``: float32 array (x, y, z[, t]) and the file's :class:`Geometry`
        (``geometry.affine`` is the 4×4 float64 voxel-to-world map to use).
    """
    path = Path(path)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    image, stored_header = _load(path)
    data = _data(path, image)
    if data.ndim == 4 and 3 in allowed and 4 not in allowed and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in allowed:
        expected = " or ".join(f"{n}D" for n in allowed)
        raise InputError(path, f"expected a {expected} image, found {data.ndim}D with shape {tuple(data.shape)}")
    resolved = resolve_geometry(image, path, geometry, stored_header)
    data = np.array(data, dtype=np.float32)  # a copy: never tied to the file
    if not np.all(np.isfinite(data)):
        count = int((~np.isfinite(data)).sum())
        raise InputError(path, f"{count} non-finite voxel values (NaN or inf)")
    return data, resolved


def read_labels(
    path: str | os.PathLike,
    ndim: int | tuple[int, ...] = 3,
    valid_labels: tuple[int, ...] = (0, 1, 2, 3),
    geometry: str = "auto",
) -> tuple[np.ndarray, Geometry]:
    """Read a label map as uint8, checking that every value is an integer in ``valid_labels``.

    Labels stored as floats or with scl_slope/scl_inter are rounded (nibabel returns floats for
    them); values more than 1e-3 away from an integer are an error, not silently rounded.
    """
    path = Path(path)
    data, resolved = read_image(path, ndim=ndim, geometry=geometry)
    rounded = np.rint(data)
    if np.any(np.abs(rounded - data) > 1e-3):
        raise InputError(path, "label map holds non-integer values")
    present = np.unique(rounded).astype(np.int64)
    unexpected = sorted(set(present.tolist()) - set(valid_labels))
    if unexpected:
        raise InputError(
            path, f"label values {unexpected} outside the dataset's convention {list(valid_labels)}"
        )
    return rounded.astype(np.uint8), resolved


def write_nifti(
    path: str | os.PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    dtype: np.dtype | type | None = None,
    slope: float | None = None,
) -> None:
    """Write ``data`` atomically as NIfTI-1 with ``affine`` (sform and qform set, code 1).

    ``dtype`` fixes the on-disk type (nibabel otherwise may pick scaling for floats, see
    data-formats.md 2.2); ``slope`` stores an explicit scl_slope.
    """
    path = Path(path)
    dtype = np.dtype(dtype if dtype is not None else data.dtype)
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    image.set_data_dtype(dtype)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as temporary:
        nib.save(image, str(temporary))
