"""Write a predicted label volume in the exact geometry of its source NIfTI file.

Why: ITK-SNAP and 3D Slicer overlay a segmentation on an image by header geometry alone. ITK takes
the voxel spacing from ``pixdim[1:4]`` and the direction and origin from the sform or qform (chosen
by their codes), so an overlay is exact only when every one of those fields is copied verbatim. An
affine re-derived by nibabel is not enough: real ACDC files (data-formats.md 2.1) have
``qform_code 0``, ``sform_code 2``, a placeholder sform ``diag(-1, -1, 1)`` with zero offset and
the true spacing (patient001: 1.5625 x 1.5625 x 10 mm) only in pixdim, which ``img.affine`` does
not carry. ``nifti.write_nifti`` writes both forms from an affine with code 1, so for these files
the written pixdim, codes and sform all change and the overlay is off.

The geometry record (``header_geometry``) is a JSON-able dict of the raw header fields, read
from ``header[...]`` and never from a derived affine:

    format       "nifti1" or "nifti2"
    dim          8 ints (dim[0] = number of dimensions, dim[1:4] = X, Y, Z)
    pixdim       8 floats (pixdim[0] = qfac, pixdim[1:4] = spacing)
    qform_code   int
    sform_code   int
    quatern      [quatern_b, quatern_c, quatern_d]
    qoffset      [qoffset_x, qoffset_y, qoffset_z]
    srow         [srow_x, srow_y, srow_z], each 4 floats
    xyzt_units   int
    dim_info     int

Header values are float32 (NIfTI-1) or float64 (NIfTI-2); ``float()`` of either is exact and
survives ``json.dumps``/``json.loads`` bit for bit.

``write_like_source`` writes a (X, Y, Z) integer label array with every field of the record (dim
only as 3D: a 4D cine source gives a 3D file with dim[4:] = 1), an integer on-disk dtype and no
intensity scaling, then reads the written bytes back to prove it. ``geometry_differences`` names
the fields in which two headers disagree.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from cmrssp.atomic import atomic_path
from cmrssp.errors import InputError

GEOMETRY_FIELDS = (
    "dim", "pixdim", "qform_code", "sform_code", "quatern", "qoffset", "srow", "xyzt_units", "dim_info",
)

_IMAGE_CLASSES = {"nifti1": nib.Nifti1Image, "nifti2": nib.Nifti2Image}
_QUATERN_KEYS = ("quatern_b", "quatern_c", "quatern_d")
_QOFFSET_KEYS = ("qoffset_x", "qoffset_y", "qoffset_z")
_SROW_KEYS = ("srow_x", "srow_y", "srow_z")
# (field, slice of the record value that counts as geometry): dim[0] and dim[4:] only say how
# many volumes the file holds, pixdim[4:] their time step; neither moves a voxel in space.
_COMPARED = (
    ("dim", slice(1, 4)), ("pixdim", slice(0, 4)), ("qform_code", None), ("sform_code", None),
    ("quatern", None), ("qoffset", None), ("srow", None), ("xyzt_units", None), ("dim_info", None),
)


def header_geometry(header: Any, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The geometry record of a nibabel ``Nifti1Header`` or ``Nifti2Header`` (see module doc).

    ``path`` only names the file in the ``InputError`` raised for a header that is not NIfTI.
    """
    # Nifti2Header subclasses Nifti1Header, so it must be tested first.
    if isinstance(header, nib.Nifti2Header):
        file_format = "nifti2"
    elif isinstance(header, nib.Nifti1Header):
        file_format = "nifti1"
    else:
        raise InputError(path, f"not a NIfTI header (nibabel read it as {type(header).__name__})")
    return {
        "format": file_format,
        "dim": [int(value) for value in header["dim"]],
        "pixdim": [float(value) for value in header["pixdim"]],
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "quatern": [float(header[key]) for key in _QUATERN_KEYS],
        "qoffset": [float(header[key]) for key in _QOFFSET_KEYS],
        "srow": [[float(value) for value in header[key]] for key in _SROW_KEYS],
        "xyzt_units": int(header["xyzt_units"]),
        "dim_info": int(header["dim_info"]),
    }


def geometry_differences(header_a: Any, header_b: Any) -> list[str]:
    """Names of the geometry fields in which two headers (or geometry records) differ.

    Compared exactly, element by element: dim[1:4], pixdim[0:4], both codes, quatern, qoffset,
    srow, xyzt_units and dim_info. The format (NIfTI-1 or -2) is not geometry and is not compared.
    An empty list means both define the same voxel-to-world mapping for a viewer.
    """
    record_a, record_b = _as_record(header_a), _as_record(header_b)
    differences = []
    for field, part in _COMPARED:
        value_a, value_b = record_a[field], record_b[field]
        if part is not None:
            value_a, value_b = value_a[part], value_b[part]
        if not _same(value_a, value_b):
            differences.append(field)
    return differences


def write_like_source(
    path: str | os.PathLike,
    labels: np.ndarray,
    record: Mapping[str, Any],
    dtype: np.dtype | type = np.uint8,
) -> None:
    """Write ``labels`` atomically as NIfTI with the geometry of ``record`` copied field by field.

    Args:
        path: the ``.nii.gz`` or ``.nii`` file to write.
        labels: integer labels, (X, Y, Z) with (X, Y, Z) = the record's dim[1:4], or a cine of
            them (X, Y, Z, T) (the record's pixdim[4], the frame time, is kept).
        record: a geometry record from :func:`header_geometry` (possibly through JSON).
        dtype: the on-disk integer type; values are stored unscaled (scl_slope 1, scl_inter 0).

    Raises:
        InputError: a shape mismatch, non-integer labels or dtype, labels outside ``dtype``'s
            range, or a malformed record; nothing is written then.
    """
    path = Path(path)
    record = _checked_record(path, record)
    labels = np.asarray(labels)
    dtype = np.dtype(dtype)
    expected_shape = tuple(record["dim"][1:4])
    if labels.ndim not in (3, 4) or labels.shape[:3] != expected_shape:
        raise InputError(
            path, f"label volume shape {tuple(labels.shape)} differs from the source image shape {expected_shape}"
        )
    if dtype.kind not in "iu":
        raise InputError(path, f"label on-disk dtype must be an integer type, not {dtype}")
    if labels.dtype.kind not in "biu":
        raise InputError(path, f"label volume must hold integers, not {labels.dtype}")
    if labels.size and (labels.min() < np.iinfo(dtype).min or labels.max() > np.iinfo(dtype).max):
        raise InputError(
            path, f"label values {int(labels.min())}..{int(labels.max())} do not fit the on-disk dtype {dtype}"
        )
    data = np.ascontiguousarray(labels.astype(dtype))

    # affine=None: nibabel then never re-derives sform/qform/pixdim from an affine, neither here
    # nor in save() (update_header returns early), so the fields set below reach the disk as set.
    # They are set on image.header itself because the constructor runs check_fix on a copy of a
    # passed header, which could "fix" fields such as qfac.
    image = _IMAGE_CLASSES[record["format"]](data, affine=None, dtype=dtype)
    header = image.header
    _set_geometry(header, record)
    # Explicit 1/0 (not NaN) makes nibabel write the integers as they are, with no chosen scaling.
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    unrepresentable = geometry_differences(header, record)
    if unrepresentable:
        raise InputError(
            path, f"geometry record fields {unrepresentable} cannot be stored exactly in {record['format']}"
        )

    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as temporary:
        nib.save(image, str(temporary))
        _verify_written(temporary, record, data)


def _as_record(header: Any) -> Mapping[str, Any]:
    return header if isinstance(header, Mapping) else header_geometry(header)


def _same(value_a: Any, value_b: Any) -> bool:
    if isinstance(value_a, list) or isinstance(value_b, list):
        return (
            isinstance(value_a, list) and isinstance(value_b, list) and len(value_a) == len(value_b)
            and all(_same(a, b) for a, b in zip(value_a, value_b))
        )
    if isinstance(value_a, float) and isinstance(value_b, float) and math.isnan(value_a) and math.isnan(value_b):
        return True
    return value_a == value_b


def _checked_record(path: Path, record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The record if it has every field with the right length, else an InputError."""
    lengths = {"dim": 8, "pixdim": 8, "quatern": 3, "qoffset": 3, "srow": 3}
    if not isinstance(record, Mapping):
        raise InputError(path, f"geometry record must be a mapping, not {type(record).__name__}")
    missing = [field for field in ("format", *GEOMETRY_FIELDS) if field not in record]
    if missing:
        raise InputError(path, f"geometry record lacks the fields {missing}")
    if record["format"] not in _IMAGE_CLASSES:
        raise InputError(path, f"geometry record format {record['format']!r} is not one of {list(_IMAGE_CLASSES)}")
    for field, length in lengths.items():
        value = record[field]
        if not isinstance(value, (list, tuple)) or len(value) != length:
            raise InputError(path, f"geometry record field {field!r} must be a list of {length} values")
    if any(not isinstance(row, (list, tuple)) or len(row) != 4 for row in record["srow"]):
        raise InputError(path, "geometry record field 'srow' must hold 3 rows of 4 values")
    return record


def _set_geometry(header: nib.Nifti1Header, record: Mapping[str, Any]) -> None:
    # dim stays as the constructor set it from the data (3D or 4D); everything else is
    # copied raw, bypassing set_qform/set_sform/set_zooms, which would recompute or re-round.
    header["pixdim"] = record["pixdim"]
    header["qform_code"] = record["qform_code"]
    header["sform_code"] = record["sform_code"]
    for key, value in zip(_QUATERN_KEYS, record["quatern"]):
        header[key] = value
    for key, value in zip(_QOFFSET_KEYS, record["qoffset"]):
        header[key] = value
    for key, row in zip(_SROW_KEYS, record["srow"]):
        header[key] = row
    header["xyzt_units"] = record["xyzt_units"]
    header["dim_info"] = record["dim_info"]


def _verify_written(temporary: Path, record: Mapping[str, Any], data: np.ndarray) -> None:
    """Re-read the raw bytes just written, without nibabel's load-time fixes, and compare.

    A mismatch means nibabel changed a field on save (a nibabel behaviour change), not bad input.
    """
    raw = temporary.read_bytes()
    if temporary.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    header_class = _IMAGE_CLASSES[record["format"]].header_class
    header = header_class(raw[: header_class.sizeof_hdr], check=False)
    problems = geometry_differences(header, record)
    if list(header["dim"][: data.ndim + 1]) != [data.ndim, *data.shape]:
        problems.append("dim")
    if header.get_data_dtype().newbyteorder("=") != data.dtype.newbyteorder("="):
        problems.append("datatype")
    if (float(header["scl_slope"]), float(header["scl_inter"])) != (1.0, 0.0):
        problems.append("scl_slope/scl_inter")
    if not problems:
        written = np.frombuffer(
            raw, dtype=header.get_data_dtype(), count=data.size, offset=int(header["vox_offset"])
        ).reshape(data.shape, order="F")
        if not np.array_equal(written, data):
            problems.append("voxel data")
    if problems:
        raise RuntimeError(f"{temporary}: nibabel did not write the source geometry as set: {problems}")
