"""Voxel geometry of a NIfTI file from its affine and its pixdim together: the one rule.

A NIfTI-1 header describes voxel size twice. ``pixdim[1:4]`` is the voxel size; the qform
(method 2) is a rotation scaled by pixdim, so it can never disagree; the sform (method 3,
``srow_x/y/z``) is a free affine whose column norms are a second voxel size. nibabel's
``img.affine`` is the sform when ``sform_code > 0``, else the qform when ``qform_code > 0``,
else a fallback built from pixdim; ``header.get_zooms()`` is pixdim. ITK and SimpleITK (so
nnU-Net, ITK-SNAP and 3D Slicer) always take the spacing from pixdim and only the direction and
origin from the s/qform (sform preferred). Usually both records agree; the real ACDC files do not:
every file has ``qform_code 0``, ``sform_code 2`` and a placeholder sform ``diag(-1, -1, 1)``,
so ``img.affine`` says 1 x 1 x 1 mm while pixdim holds the true spacing (data-formats.md 2.1).

The rule (``--geometry auto``, the default), per file:

1. The records agree (every axis within ``AGREEMENT_RTOL``): the affine is used unchanged.
2. pixdim is unusable (non-finite, zero or negative): the affine.
3. The affine's voxel size is exactly 1 x 1 x 1 mm and pixdim's is not: the affine is a
   placeholder (ACDC); pixdim wins.
4. pixdim is exactly 1 x 1 x 1 mm and the affine's is not: pixdim is the placeholder; the affine
   wins.
5. Any other disagreement: pixdim wins, as in ITK, so that the toolkit measures what a viewer
   and nnU-Net show.

"pixdim wins" means the ITK reading: direction cosines and origin from the affine (its columns
normalised), voxel sizes from pixdim, i.e. ``A' = [R · diag(pixdim) | origin]``. Every case other
than 1 is a *finding*, reported once per dataset and kind (``Geometry.finding``).
``--geometry affine`` always uses the affine (the toolkit's behaviour before real headers were
read); ``--geometry header`` always uses the ITK reading. The slice axis is never reoriented.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cmrssp.data.source_header import header_geometry
from cmrssp.errors import InputError

GEOMETRY_MODES = ("auto", "affine", "header")
# Two voxel sizes that differ by less than this (relative, per axis) describe the same grid: the
# header stores both in float32, and a 0.1 % difference moves nothing by a measurable amount.
AGREEMENT_RTOL = 1e-3
_UNIT_ATOL = 1e-6

# Finding kind -> (record chosen, why). The kinds name the disagreement, not the file.
FINDINGS = {
    "pixdim-unusable": ("affine", "pixdim is not a valid voxel size"),
    "placeholder-affine": ("header", "an affine of exactly 1 x 1 x 1 mm against another pixdim is a placeholder"),
    "placeholder-pixdim": ("affine", "a pixdim of exactly 1 x 1 x 1 mm against another affine is a placeholder"),
    "conflict": ("header", "both look real; pixdim wins, as in ITK/SimpleITK/nnU-Net"),
    "forced-affine": ("affine", "--geometry affine"),
    "forced-header": ("header", "--geometry header"),
}


@dataclass(frozen=True)
class Geometry:
    """How one file's voxel-to-world map was resolved.

    Attributes:
        affine: (4, 4) float64 voxel-to-world map used by the toolkit (mm).
        mode: the rule asked for, one of ``GEOMETRY_MODES``.
        chosen: "affine" or "header" (pixdim spacing with the affine's direction and origin).
        finding: None when affine and pixdim agree, else a key of ``FINDINGS``.
        affine_spacing: (3,) voxel size from the affine's column norms.
        header_spacing: (3,) voxel size from pixdim[1:4].
        affine_source: which header record nibabel's affine came from ("sform code 2", ...).
        path: the file.
        source_header: every header field that defines the file's geometry, as read
            (:func:`cmrssp.data.source_header.header_geometry`), so that an export can copy them.
    """

    affine: np.ndarray
    mode: str
    chosen: str
    finding: str | None
    affine_spacing: tuple[float, float, float]
    header_spacing: tuple[float, float, float]
    affine_source: str
    path: str
    source_header: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def spacing(self) -> np.ndarray:
        """(3,) voxel size in mm of ``affine``."""
        return voxel_spacing(self.affine)

    def record(self) -> dict[str, Any]:
        """What a cache stores about the geometry used (JSON-able)."""
        return {
            "mode": self.mode, "chosen": self.chosen, "finding": self.finding,
            "affine_spacing": list(self.affine_spacing), "header_spacing": list(self.header_spacing),
            "affine_source": self.affine_source, "file": self.path,
        }

    def message(self) -> str:
        """One line for a warning: the file, both voxel sizes, what was chosen and why."""
        chosen, why = FINDINGS[self.finding]
        used = "pixdim's voxel size with the affine's direction and origin" if chosen == "header" else "the affine"
        return (
            f"{self.path}: the affine ({self.affine_source}) gives voxels of {_mm(self.affine_spacing)}, "
            f"pixdim {_mm(self.header_spacing)}; using {used} ({why}). "
            "`prepare --geometry affine|header` overrides"
        )


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) as the column norms of the 3×3 part of a 4×4 affine, shape (3,)."""
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def check_mode(mode: str) -> str:
    if mode not in GEOMETRY_MODES:
        raise InputError(None, f"unknown geometry rule {mode!r} (choose from {', '.join(GEOMETRY_MODES)})")
    return mode


def resolve_geometry(image, path: str | os.PathLike, mode: str = "auto", stored_header=None) -> Geometry:
    """Resolve the voxel-to-world map of a nibabel NIfTI image by the module's rule.

    ``stored_header`` is the header as stored on disk (read with ``check=False``); nibabel's
    loaded ``image.header`` has a zero pixdim silently set to 1. Default: ``image.header``.

    Raises InputError naming the file when the chosen record cannot define a grid (a singular
    or non-finite affine, or ``--geometry header`` with an unusable pixdim).
    """
    check_mode(mode)
    path = Path(path)
    header = image.header if stored_header is None else stored_header
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise InputError(path, "the affine contains non-finite values")
    affine_spacing = voxel_spacing(affine)
    if np.any(affine_spacing <= 1e-6):
        raise InputError(path, f"zero or negative voxel spacing {affine_spacing.round(4).tolist()} in the affine")
    if abs(np.linalg.det(affine[:3, :3])) <= 1e-9:
        raise InputError(path, "the affine is singular (its axes are not independent)")
    header_spacing = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    usable = bool(np.all(np.isfinite(header_spacing)) and np.all(header_spacing > 1e-6))
    agree = usable and bool(np.allclose(header_spacing, affine_spacing, rtol=AGREEMENT_RTOL, atol=0))

    if mode == "affine":
        finding = None if agree else "forced-affine"
    elif mode == "header":
        if not usable:
            raise InputError(path, f"pixdim {header_spacing.tolist()} is not a valid voxel size; use --geometry affine")
        finding = None if agree else "forced-header"
    elif agree:
        finding = None
    elif not usable:
        finding = "pixdim-unusable"
    elif _is_unit(affine_spacing) and not _is_unit(header_spacing):
        finding = "placeholder-affine"
    elif _is_unit(header_spacing) and not _is_unit(affine_spacing):
        finding = "placeholder-pixdim"
    else:
        finding = "conflict"

    chosen = "header" if mode == "header" or (finding is not None and FINDINGS[finding][0] == "header") else "affine"
    resolved = affine.copy()
    if chosen == "header":
        resolved[:3, :3] = affine[:3, :3] / affine_spacing * header_spacing  # scale columns
    return Geometry(
        affine=resolved, mode=mode, chosen=chosen, finding=finding,
        affine_spacing=tuple(float(s) for s in affine_spacing),
        header_spacing=tuple(float(s) for s in header_spacing),
        affine_source=_affine_source(header), path=str(path), source_header=header_geometry(header, path),
    )


def in_memory_geometry(affine: np.ndarray, where: str = "") -> Geometry:
    """The geometry of a subject built in memory from an affine alone (no header to compare)."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = tuple(float(s) for s in voxel_spacing(affine))
    return Geometry(affine, "affine", "affine", None, spacing, spacing, "in memory", where)


def _is_unit(spacing: np.ndarray) -> bool:
    return bool(np.allclose(spacing, 1.0, rtol=0, atol=_UNIT_ATOL))


def _affine_source(header) -> str:
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code > 0:
        return f"sform code {sform_code}"
    if qform_code > 0:
        return f"qform code {qform_code}"
    return "no s/qform: pixdim fallback"


def _mm(spacing) -> str:
    return " x ".join(f"{float(s):.4g}" for s in spacing) + " mm"
