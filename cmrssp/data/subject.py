"""The one record every reader produces: a short-axis cine subject in canonical form.

Canonical means: image (x, y, z, t) float32 with the slice axis on axis 2 exactly as stored in the
file (never reoriented, data-formats.md 2.1), labels in the M&Ms convention (0 background, 1 LV
blood pool, 2 LV myocardium, 3 RV blood pool), and an affine resolved from the file's affine and
pixdim by the rule of :mod:`cmrssp.data.geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cmrssp.data.geometry import Geometry, voxel_spacing
from cmrssp.errors import InputError

BACKGROUND, LV, MYO, RV = 0, 1, 2, 3
# The one spelling of the cardiac classes (labels LV, MYO, RV): in every CSV column and JSON key
# (dice_lv, val_dice_myo, hd95_rv); tables and plots show them upper-cased (LV, MYO, RV).
CLASS_NAMES = ("lv", "myo", "rv")
DATASETS = ("mnms", "mnms2", "acdc", "nnunet", "folder")


@dataclass(frozen=True)
class Notice:
    """Something a reader found that the user should hear about once per dataset, not per file.

    Attributes:
        kind: what was found, e.g. "geometry:placeholder-affine" or "cine-missing"; notices of one
            dataset and kind are reported once (the first message) with a count.
        message: one line naming the file, what was found and what was done.
    """

    kind: str
    message: str


@dataclass
class Subject:
    """One subject, as read from disk.

    Attributes:
        dataset: source dataset code, one of ``DATASETS``.
        subject_id: the dataset's own id (M&Ms ``A0S9V9``, M&Ms-2 ``001``, ACDC ``patient001``).
        image: float32 (X, Y, Z, T) cine; T = 1 for a single 3D frame.
        affine: float64 (4, 4) voxel-to-world (mm) of the image, as in the file.
        labels: uint8 (X, Y, Z, L) canonical label volumes, one per labelled frame, or None.
        label_frames: for each of the L label volumes, its time index into ``image``.
        label_phases: for each label volume its phase name ("ED", "ES" or e.g. "frame05").
        ed, es: time indices of end-diastole / end-systole, or None when unknown.
        vendor, pathology: metadata when the dataset provides it.
        source: the files the subject was read from (for error messages and provenance).
        extra: any other dataset-specific metadata (kept in the cache as JSON).
        geometry: how ``affine`` was resolved from the image file's header (None for a subject
            built in memory).
        notices: findings to report once per dataset and kind (:class:`Notice`).
    """

    dataset: str
    subject_id: str
    image: np.ndarray
    affine: np.ndarray
    labels: np.ndarray | None = None
    label_frames: tuple[int, ...] = ()
    label_phases: tuple[str, ...] = ()
    ed: int | None = None
    es: int | None = None
    vendor: str | None = None
    pathology: str | None = None
    source: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    geometry: Geometry | None = None
    notices: tuple[Notice, ...] = ()

    @property
    def key(self) -> str:
        """Unique name of the subject across datasets, e.g. ``mnms-A0S9V9``."""
        return f"{self.dataset}-{self.subject_id}"

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing (mm) from the affine, shape (3,)."""
        return voxel_spacing(self.affine)

    @property
    def n_frames(self) -> int:
        return int(self.image.shape[3])

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[2])

    @property
    def labelled(self) -> bool:
        return self.labels is not None and len(self.label_frames) > 0

    def validate(self) -> "Subject":
        """Check the record's internal consistency; raise InputError naming the source file."""
        where = self.source[0] if self.source else self.key
        if self.image.ndim != 4:
            raise InputError(where, f"expected a 4D cine (x, y, z, t), got shape {self.image.shape}")
        if self.image.dtype != np.float32:
            self.image = self.image.astype(np.float32)
        if not np.all(np.isfinite(self.image)):
            raise InputError(where, "image contains non-finite values (NaN or inf)")
        if np.any(self.spacing <= 0):
            raise InputError(where, f"zero or negative spacing {self.spacing.tolist()}")
        for name, index in (("ED", self.ed), ("ES", self.es)):
            if index is not None and not 0 <= index < self.n_frames:
                raise InputError(where, f"{name} frame {index} outside 0..{self.n_frames - 1}")
        if self.labels is not None:
            if self.labels.ndim != 4 or self.labels.shape[:3] != self.image.shape[:3]:
                raise InputError(
                    where,
                    f"label shape {self.labels.shape[:3]} does not match image shape {self.image.shape[:3]}",
                )
            if len(self.label_frames) != self.labels.shape[3] or len(self.label_phases) != self.labels.shape[3]:
                raise InputError(where, "label_frames / label_phases do not match the number of label volumes")
            if any(not 0 <= t < self.n_frames for t in self.label_frames):
                raise InputError(where, f"label frames {self.label_frames} outside 0..{self.n_frames - 1}")
            if self.labels.dtype != np.uint8:
                self.labels = self.labels.astype(np.uint8)
            if self.labels.size and int(self.labels.max()) > RV:
                raise InputError(where, f"label value {int(self.labels.max())} outside 0-3")
        return self
