"""Short-axis acquisition geometry of a phantom subject (phantom.md A).

The slice axis follows an anatomically plausible LV long axis: base->apex points roughly toward
the patient's left (-x), anterior (+y) and inferior (-z) in RAS, near ``NOMINAL_LONG_AXIS``
tilted by up to ~20 degrees; the in-plane axes are orthogonal to it with a random in-plane
rotation. ``SaxGrid`` holds one subject's grid (matrix, spacing, slice depths below the ED base
plane, breath-hold shifts, the heart's drift across slices) and maps pixels to world and to the
(right, anterior) frame the heart is drawn in. A vendor then stores the arrays flipped/transposed,
and the affine follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# LV long axis, base->apex, in RAS: toward patient left (-x), anterior (+y), inferior (-z).
NOMINAL_LONG_AXIS = np.array([-0.55, 0.55, -0.63])
MAX_AXIS_TILT_DEG = 20.0
# In-plane position of the LV between adjacent slices, real ACDC labels (benchmarks/phantom_vs_real.py):
# centroid jump median 2.3 mm [IQR 1.5, 3.3], its second difference 3.0 mm [2.3, 4.4]. The second
# difference removes a steady drift (a long axis not quite normal to the planes) and leaves the
# per-slice breath-hold shifts (Gaussian, per-axis sd; recipe C: 0-3 mm) plus contour noise; the
# jump also needs a drift of the heart alone (mm per 10 mm of depth, random direction). Both set
# so that the phantom measures the same two medians.
BREATH_HOLD_SD_MM = 1.15
DRIFT_MM_PER_10MM = (0.0, 4.0)


def _rotate(vector: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation of ``vector`` about unit ``axis``."""
    return (
        vector * np.cos(angle)
        + np.cross(axis, vector) * np.sin(angle)
        + axis * np.dot(axis, vector) * (1 - np.cos(angle))
    )


@dataclass(frozen=True)
class SaxFrame:
    """Orthonormal world (RAS, mm) directions of a short-axis stack.

    ``long_axis`` points base->apex; ``right``/``anterior`` are the patient's right (+x) and
    anterior (+y) projected into the short-axis plane, the in-plane frame the anatomy is drawn
    in; ``axis_i``/``axis_j`` are the native pixel axes (a random in-plane rotation of it).
    """

    long_axis: np.ndarray
    right: np.ndarray
    anterior: np.ndarray
    axis_i: np.ndarray
    axis_j: np.ndarray

    def pixel_to_anatomy(self) -> np.ndarray:
        """2x2 matrix mapping a native pixel offset (mm along i, j) to (right, anterior) mm."""
        return np.array(
            [[self.axis_i @ self.right, self.axis_j @ self.right], [self.axis_i @ self.anterior, self.axis_j @ self.anterior]]
        )


def draw_sax_frame(rng: np.random.Generator) -> SaxFrame:
    """Long axis near ``NOMINAL_LONG_AXIS`` tilted by up to ~20 degrees, random in-plane rotation."""
    nominal = NOMINAL_LONG_AXIS / np.linalg.norm(NOMINAL_LONG_AXIS)
    helper = np.cross(nominal, rng.normal(size=3))
    tilt_axis = helper / np.linalg.norm(helper)
    tilt = np.deg2rad(MAX_AXIS_TILT_DEG) * np.sqrt(rng.random())
    long_axis = _rotate(nominal, tilt_axis, tilt)
    long_axis /= np.linalg.norm(long_axis)
    anterior = np.array([0.0, 1.0, 0.0]) - long_axis[1] * long_axis
    anterior /= np.linalg.norm(anterior)
    right = np.array([1.0, 0.0, 0.0]) - long_axis[0] * long_axis - anterior[0] * anterior
    right /= np.linalg.norm(right)
    angle = rng.uniform(0, 2 * np.pi)
    axis_i = np.cos(angle) * right + np.sin(angle) * anterior
    axis_j = -np.sin(angle) * right + np.cos(angle) * anterior
    if rng.random() < 0.5:  # either handedness of the native in-plane axes
        axis_j = -axis_j
    return SaxFrame(long_axis, right, anterior, axis_i, axis_j)


def native_affine(frame: SaxFrame, origin: np.ndarray, spacing: float, slice_spacing: float) -> np.ndarray:
    """4x4 voxel->world affine of the native (base->apex) stack; ``origin`` is voxel (0, 0, 0)."""
    affine = np.eye(4)
    affine[:3, 0] = frame.axis_i * spacing
    affine[:3, 1] = frame.axis_j * spacing
    affine[:3, 2] = frame.long_axis * slice_spacing
    affine[:3, 3] = origin
    return affine


def flip_axis(arrays: list[np.ndarray], affine: np.ndarray, axis: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Reverse voxel axis ``axis`` of every array and move the affine so world positions stay put."""
    size = arrays[0].shape[axis]
    flipped = affine.copy()
    flipped[:3, 3] = affine[:3, 3] + affine[:3, axis] * (size - 1)
    flipped[:3, axis] = -affine[:3, axis]
    return [np.flip(array, axis=axis) for array in arrays], flipped


def swap_inplane(arrays: list[np.ndarray], affine: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Transpose the two in-plane voxel axes (a "rows/columns" storage convention)."""
    swapped = affine.copy()
    swapped[:, [0, 1]] = affine[:, [1, 0]]
    return [np.swapaxes(array, 0, 1) for array in arrays], swapped


def apply_storage_convention(
    arrays: list[np.ndarray], affine: np.ndarray, vendor
) -> tuple[list[np.ndarray], np.ndarray]:
    """Native (x, y, z[, t]) arrays -> the vendor's stored orientation, affine kept consistent.

    The stored k axis runs base->apex or apex->base as the vendor orders its slices; in-plane
    flips and a transpose are reflected in the affine's columns, so world positions never change.
    """
    arrays, affine = _stored_views(arrays, affine, vendor)
    # Fortran order is how NIfTI stores voxels: nibabel then writes without another copy.
    return [np.asfortranarray(array) for array in arrays], affine


def _stored_views(arrays: list[np.ndarray], affine: np.ndarray, vendor) -> tuple[list[np.ndarray], np.ndarray]:
    """``apply_storage_convention`` as views (flips and a transpose), before the Fortran copy."""
    if not vendor.base_to_apex:
        arrays, affine = flip_axis(arrays, affine, 2)
    if vendor.transpose:
        arrays, affine = swap_inplane(arrays, affine)
    for axis, flip in enumerate(vendor.flips):
        if flip:
            arrays, affine = flip_axis(arrays, affine, axis)
    return arrays, affine


def allocate_stored(native_shape: tuple[int, ...], dtypes, affine: np.ndarray, vendor):
    """Zeroed arrays in the vendor's stored layout, as ``apply_storage_convention`` returns them.

    Returns ``(stored, native, stored_affine)``: the Fortran-ordered stored arrays, a native
    (x, y, z[, t]) view of each (filling it fills the stored array, so no copy is needed at the
    end) and the stored affine.
    """
    proxy = np.broadcast_to(np.zeros((), np.uint8), native_shape)
    (stored_proxy,), stored_affine = _stored_views([proxy], affine, vendor)
    stored = [np.zeros(stored_proxy.shape, dtype, order="F") for dtype in dtypes]
    native = []
    for array in stored:  # undo the convention's views, last first (each is its own inverse)
        view = array
        for axis, flip in enumerate(vendor.flips):
            if flip:
                view = np.flip(view, axis=axis)
        if vendor.transpose:
            view = np.swapaxes(view, 0, 1)
        if not vendor.base_to_apex:
            view = np.flip(view, axis=2)
        native.append(view)
    return stored, native, stored_affine


@dataclass(frozen=True)
class SaxGrid:
    """One subject's native acquisition grid (slices base->apex, axes of ``frame``).

    Attributes:
        frame: the stack's directions.
        matrix: native in-plane size (X, Y); pixel: in-plane spacing (mm).
        depths: (Z,) depth of each slice centre below the ED base plane (mm, toward the apex).
        slice_spacing, thickness: through-plane sampling (mm).
        centre: (2,) native pixel coordinates of the LV long axis.
        shift: (Z, 2) breath-hold mismatch of each slice, (right, anterior) mm, constant over time;
            it moves the whole anatomy (heart and body, images and labels alike).
        drift: (Z, 2) in-plane offset of the heart alone, (right, anterior) mm, linear in depth: the
            long axis is not exactly normal to the planes.
        affine: 4x4 native voxel -> world (RAS mm); world is centred on the LV base centre plus
            ``heart_world``.
        zero_pad: rows zeroed at both ends of axis X (kept clear of the heart).
    """

    frame: SaxFrame
    matrix: tuple[int, int]
    pixel: float
    depths: np.ndarray
    slice_spacing: float
    thickness: float
    centre: np.ndarray
    shift: np.ndarray
    affine: np.ndarray
    zero_pad: int
    drift: np.ndarray

    def sub_slices(self, count: int, profile: str) -> tuple[np.ndarray, np.ndarray]:
        """Through-plane sub-slice offsets (mm) and slice-profile weights (rect or gauss), (count,)."""
        offsets = self.thickness * ((np.arange(count) + 0.5) / count - 0.5)
        weights = np.ones(count) if profile == "rect" else np.exp(-0.5 * (offsets / (0.35 * self.thickness)) ** 2)
        return offsets, weights / weights.sum()

    def world_points(self, offset: float = 0.0) -> list[np.ndarray]:
        """World (x, y, z) mm relative to the LV base centre of every pixel, float32 (Z, X, Y) each.

        ``offset`` moves every slice along the long axis (a sub-slice); the breath-hold shift moves
        the anatomy, so it is subtracted from the pixel positions.
        """
        i_mm = (np.arange(self.matrix[0], dtype=np.float32) - self.centre[0]) * self.pixel
        j_mm = (np.arange(self.matrix[1], dtype=np.float32) - self.centre[1]) * self.pixel
        shift_world = self.shift[:, :1] * self.frame.right + self.shift[:, 1:] * self.frame.anterior  # (Z, 3)
        along = self.depths + offset
        return [
            (self.frame.long_axis[c] * along - shift_world[:, c]).astype(np.float32)[:, None, None]
            + np.float32(self.frame.axis_i[c]) * i_mm[None, :, None]
            + np.float32(self.frame.axis_j[c]) * j_mm[None, None, :]
            for c in range(3)
        ]

    def heart_boxes(self, radius: float):
        """Per-slice pixel boxes of ``radius`` mm around the (shifted) LV axis, inside the image.

        Returns ``(boxes, right, anterior)``: a (rows, columns) slice pair per slice and the
        (right, anterior) mm of every box pixel relative to the LV axis, float32 (Z, H, W).
        """
        nx, ny = self.matrix
        half = int(math.ceil(radius / self.pixel))
        size = (min(2 * half + 1, nx - 2 * self.zero_pad), min(2 * half + 1, ny))
        to_anatomy = self.frame.pixel_to_anatomy()
        offset = self.shift + self.drift  # the heart moves with the breath-hold and drifts
        centre = self.centre[None, :] + (offset @ np.linalg.inv(to_anatomy).T) / self.pixel
        starts = np.stack(
            [
                np.clip(np.rint(centre[:, 0]) - half, self.zero_pad, nx - self.zero_pad - size[0]),
                np.clip(np.rint(centre[:, 1]) - half, 0, ny - size[1]),
            ],
            axis=1,
        ).astype(int)
        di = (starts[:, 0, None] + np.arange(size[0])[None, :] - self.centre[0]) * self.pixel  # (Z, H)
        dj = (starts[:, 1, None] + np.arange(size[1])[None, :] - self.centre[1]) * self.pixel  # (Z, W)
        right, anterior = (
            (to_anatomy[row, 0] * di[:, :, None] + to_anatomy[row, 1] * dj[:, None, :] - offset[:, row, None, None])
            .astype(np.float32)
            for row in (0, 1)
        )
        boxes = [(slice(a, a + size[0]), slice(b, b + size[1])) for a, b in starts]
        return boxes, right, anterior


def slice_depths(rng: np.random.Generator, config, apex_depth: float,
                 coverage: tuple[float, float] | None = None) -> tuple[np.ndarray, float]:
    """Slice depths below the ED base plane, spacing.

    Without ``coverage`` (M&Ms-like stacks, phantom.md A) there is >= 1 empty slice above the base
    and below the apex: the stack covers 2-10 mm above the base to 1-6 mm below the epicardial
    apex. ``coverage = (first, last)`` (mm below the ED base) places the first slice centre there
    and ends near ``last`` (ACDC-like stacks, labelled from the first slice to the last). When
    the range needs more than the allowed slices the spacing widens rather than lose the base or
    the apex; with too few, ACDC-like stacks keep up to two fewer than the minimum and add the
    rest at the apical end.
    """
    spacing = rng.uniform(*config.slice_spacing_mm)
    low, high = config.n_slices
    if coverage is not None:
        first, last = coverage
        count = max(int(round((last - first) / spacing)) + 1, 2)
        if count > high:
            count, spacing = high, (last - first) / (high - 1)
        # ACDC stacks are as long as the heart (6-18 slices): fewer than the preset's minimum,
        # by at most two, rather than empty slices past the apex.
        return first + spacing * np.arange(max(count, low - 2, 2)), spacing
    above, below = rng.uniform(2, 10), rng.uniform(1, 6)
    span = above + apex_depth + below
    count = math.ceil(span / spacing) + 1
    if count > high:
        count, spacing = high, span / (high - 1)
    elif count < low:
        above += int(rng.integers(0, low - count + 1)) * spacing
        count = low
    return -above + spacing * np.arange(count), spacing


def draw_grid(rng: np.random.Generator, config, vendor, apex_depth: float, heart_radius: float,
              coverage: tuple[float, float] | None = None) -> SaxGrid:
    """The subject's grid: vendor spacing and matrix, slices covering the heart, oblique axes.

    ``heart_radius`` (mm) is kept inside the image (and clear of zero-padded rows) when the LV
    axis is placed off the image centre by up to 25 mm; ``coverage`` as in :func:`slice_depths`.
    """
    pixel = float(np.clip(vendor.spacing_mm + rng.uniform(-0.04, 0.04), *config.spacing_mm))
    nx, ny = vendor.matrix
    depths, slice_spacing = slice_depths(rng, config, apex_depth, coverage)
    thickness = min(rng.uniform(*config.slice_thickness_mm), slice_spacing)
    frame = draw_sax_frame(rng)
    room = np.maximum(np.array([(nx / 2 - vendor.zero_pad) * pixel, ny / 2 * pixel]) - heart_radius, 0)
    centre = (np.array([nx, ny]) - 1) / 2 + np.clip(rng.uniform(-25, 25, size=2), -room, room) / pixel
    shift = rng.normal(0.0, BREATH_HOLD_SD_MM, size=(len(depths), 2))
    direction = rng.uniform(0, 2 * np.pi)
    drift_rate = rng.uniform(*DRIFT_MM_PER_10MM) / 10.0
    drift = ((depths - depths.mean()) * drift_rate)[:, None] * np.array([np.cos(direction), np.sin(direction)])[None, :]
    heart_world = rng.uniform(-30, 30, size=3)  # where the LV base centre sits relative to the scanner
    origin = heart_world + frame.long_axis * depths[0] - (frame.axis_i * centre[0] + frame.axis_j * centre[1]) * pixel
    affine = native_affine(frame, origin, pixel, slice_spacing)
    return SaxGrid(frame, (nx, ny), pixel, depths, slice_spacing, thickness, centre, shift, affine, vendor.zero_pad,
                   drift)
