"""Which box pixels a frame of the phantom heart can reach, and the pixel lists it is drawn on.

``render_heart`` computes each frame on a list of box pixels instead of the whole box (most of a
box is surroundings the heart never reaches). This changes no value: every value it computes for
a pixel depends on that pixel alone (area fractions of analytic shapes, phantom.md F.6), and a
pixel that no shape reaches reads exactly what the whole box would give it - its surroundings,
averaged over the sub-slices, and label 0.

Reach is measured in the LV ellipse metric m of ``lv_frame`` (every shape's edge is a ramp on
``radius - m``): a shape covers nothing where m exceeds its largest radius by half a pixel.
``HeartReach`` bounds a frame's radii per slice from the angular tables' maxima (the same angle
indexes every table, so their per-angle sums bound the layers painted on each other): the heart
(LV wall, fat, shell) reaches ``heart`` at any angle and the RV crescent and wall ``rv`` farther
on the RV side, where the free-wall profile is non-zero. A pixel's metric is at least
``sqrt(min(e, 1/e))`` times its distance from the LV axis, so ``BoxPixels`` lists, per slice, the
pixels within the matching distances (a prefix of each side's pixels sorted by distance), plus
those near a great vessel on the slices that can cut one. A computation that needs more pixels
than its list holds raises ``NeedMorePixels``, and the frame is redrawn on a longer list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Slack on every reach (relative, and in pixels): covers float32 round-off many times over.
REACH_SLACK = 1e-3
REACH_SLACK_PX = 0.05


class NeedMorePixels(Exception):
    """A frame reaches beyond its pixel list: ``heart`` and ``rv`` (Z,) are the reaches it needs."""

    def __init__(self, heart: np.ndarray, rv: np.ndarray):
        super().__init__("the frame reaches beyond its pixel list")
        self.heart, self.rv = heart, rv


@dataclass(frozen=True)
class PixelList:
    """The box pixels of a frame, slice after slice, and the reach they cover.

    Attributes:
        flat: (N,) indices into the flattened (Z, H, W) box, in raster order within a slice.
        slice_of: (N,) the slice of each pixel.
        counts: (Z,) pixels listed per slice.
        ranges: Z slices of the (N,) arrays, one per box slice.
        heart, rv: (Z,) the reaches (ellipse metric, mm) every unlisted pixel lies beyond.
    """

    flat: np.ndarray
    slice_of: np.ndarray
    counts: np.ndarray
    ranges: tuple[slice, ...]
    heart: np.ndarray
    rv: np.ndarray

    def gather(self, box: np.ndarray) -> np.ndarray:
        """The listed pixels (N,) of a (Z, H, W) box array."""
        return box.reshape(-1)[self.flat]

    def per_pixel(self, per_slice) -> np.ndarray:
        """A per-slice (Z,) value at every listed pixel (N,)."""
        return np.repeat(np.asarray(per_slice), self.counts)

    def subset(self, positions: np.ndarray) -> PixelList:
        """The listed pixels at sorted ``positions`` (same reaches: only for drawing, not for checks)."""
        slice_of = self.slice_of[positions]
        counts = np.bincount(slice_of, minlength=len(self.counts))
        ends = np.cumsum(counts)
        ranges = tuple(slice(int(end - count), int(end)) for end, count in zip(ends, counts))
        return PixelList(self.flat[positions], slice_of, counts, ranges, self.heart, self.rv)

    def require(self, heart: np.ndarray, rv: np.ndarray | None = None) -> None:
        """Raise ``NeedMorePixels`` unless the list covers these reaches (Z,)."""
        rv = np.zeros_like(heart) if rv is None else rv
        if np.any(heart > self.heart) or np.any(rv > self.rv):
            raise NeedMorePixels(heart, rv)


class BoxPixels:
    """The pixels of a (Z, H, W) box, each slice's two sides (off and on the RV free wall) sorted
    by distance from the LV axis; ``vessel_near`` (Z, H, W) marks pixels always listed."""

    def __init__(self, right: np.ndarray, anterior: np.ndarray, wall_profile: np.ndarray, metric_to_distance: float,
                 vessel_near: np.ndarray):
        n_slices = right.shape[0]
        distance = np.sqrt(right.astype(np.float64) ** 2 + anterior.astype(np.float64) ** 2).reshape(n_slices, -1)
        rv_side = wall_profile.reshape(n_slices, -1) > 0
        self._sides = []  # per slice: ((sorted distances, pixel indices) off the RV side, on it)
        for z in range(n_slices):
            sides = []
            for pixels in (np.flatnonzero(~rv_side[z]), np.flatnonzero(rv_side[z])):
                order = np.argsort(distance[z, pixels], kind="stable")
                sides.append((distance[z, pixels[order]], pixels[order]))
            self._sides.append(sides)
        self._near = [np.flatnonzero(plane) for plane in vessel_near.reshape(n_slices, -1)]
        self._plane = distance.shape[1]
        self._to_distance = metric_to_distance
        self._cached: PixelList | None = None

    def within(self, heart: np.ndarray, rv: np.ndarray) -> PixelList:
        """The pixels a frame of reaches ``heart`` and ``rv`` (Z,) can cover."""
        cached = self._cached
        if cached is not None and np.array_equal(cached.heart, heart) and np.array_equal(cached.rv, rv):
            return cached
        parts = []
        for z, ((off_distance, off_pixels), (on_distance, on_pixels)) in enumerate(self._sides):
            off = off_pixels[: np.searchsorted(off_distance, heart[z] * self._to_distance, side="right")]
            on = on_pixels[: np.searchsorted(on_distance, (heart[z] + rv[z]) * self._to_distance, side="right")]
            near = self._near[z]
            part = np.union1d(np.concatenate([off, on]), near) if len(near) else np.sort(np.concatenate([off, on]))
            parts.append(part + z * self._plane)
        counts = np.array([len(part) for part in parts])
        ends = np.cumsum(counts)
        ranges = tuple(slice(int(end - count), int(end)) for end, count in zip(ends, counts))
        self._cached = PixelList(np.concatenate(parts), np.repeat(np.arange(len(parts)), counts), counts, ranges,
                                 np.array(heart, dtype=float), np.array(rv, dtype=float))
        return self._cached


def _with_slack(reach: np.ndarray, pixel: float) -> np.ndarray:
    return reach * (1 + REACH_SLACK) + REACH_SLACK_PX * pixel


class HeartReach:
    """Per-slice bounds (Z,) in the ellipse metric (mm) of what a frame's shapes can cover.

    Each bound is the largest radius a layer can take at any angle plus half a pixel for the
    edge ramp, with slack; the heart's radii follow ``phantom_heart_fractions.lv_fields``.
    """

    def __init__(self, heart, geometry, texture, pixel: float):
        self.heart, self.geometry, self.pixel = heart, geometry, pixel
        self.endo_shape = np.abs(texture.endo_shape).astype(np.float64)
        self.wall_shape = np.abs(texture.wall_shape).astype(np.float64)
        self.surroundings = sum(np.abs(table).astype(np.float64) for table in (texture.fat, texture.shell,
                                                                                  texture.outer_fat))
        e = heart.ellipticity
        self.metric_to_distance = 1.0 / np.sqrt(min(e, 1.0 / e))

    def epicardium(self, u: np.ndarray, t: int, scale: float, ed: bool = False, surroundings: bool = False):
        """Largest epicardial radius (Z,) at depths u over all angles (plus fat and shell outside it,
        on the slices holding myocardium)."""
        endo, area = self.geometry.lv_radii(u, t, scale, ed)
        wall = np.abs(np.sqrt(endo * endo + area / np.pi) - endo)
        radius = np.sqrt((np.abs(endo)[:, None] * self.endo_shape) ** 2 + np.abs(area)[:, None] / np.pi)
        radius += wall[:, None] * self.wall_shape
        if surroundings:  # painted only where the slice holds myocardium
            radius += self.surroundings * (area > 0)[:, None]
        return radius.max(axis=1)

    def lv(self, u: np.ndarray, t: int, scale: float, ed: bool = False) -> np.ndarray:
        """Reach of the LV cavity and wall fractions."""
        return _with_slack(self.epicardium(u, t, scale, ed) + 0.5 * self.pixel, self.pixel)

    def rv(self, epicardium: np.ndarray, thickness: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """(heart, rv) reaches of the RV pool: crescent ``thickness`` (Z,) around ``epicardium`` (Z,),
        ``margin`` mm beyond."""
        return (_with_slack(epicardium + abs(margin) + 0.5 * self.pixel, self.pixel),
                _with_slack(np.abs(thickness), self.pixel))

    def painted(self, u: np.ndarray, t: int, scale: float, thickness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(heart, rv) reaches of one sub-slice's painting (``phantom_heart_paint``): the LV wall
        with fat, shell and outer fat at any angle; the RV crescent of ``thickness`` and its wall."""
        heart = _with_slack(self.epicardium(u, t, scale, surroundings=True) + 0.5 * self.pixel, self.pixel)
        return heart, _with_slack(np.abs(thickness) + abs(self.heart.rv_wall), self.pixel)


def painted_pixels(reach: HeartReach, frame, u_sub: np.ndarray, scale: float, thickness: list[np.ndarray],
                   wall_profile: np.ndarray) -> np.ndarray:
    """Which pixels of a frame's list (N,) bool its painting can cover, great vessels aside.

    The per-pixel form of ``HeartReach.painted`` over all sub-slices: each pixel's own angular
    lookups (``frame``, ``phantom_heart_fractions.FrameFields``), the largest radii over the
    sub-slices ``u_sub`` (Z, S) and the RV free wall only where ``wall_profile`` (N,) is non-zero.
    """
    heart, pixel, per_pixel = reach.heart, reach.pixel, frame.pixels.per_pixel
    endo, area, wall = np.zeros(len(u_sub)), np.zeros(len(u_sub)), np.zeros(len(u_sub))
    for k in range(u_sub.shape[1]):
        endo_k, area_k = reach.geometry.lv_radii(u_sub[:, k], frame.t, scale)
        endo, area = np.maximum(endo, np.abs(endo_k)), np.maximum(area, np.abs(area_k))
        wall = np.maximum(wall, np.abs(np.sqrt(endo_k * endo_k + area_k / np.pi) - endo_k))
    rv = np.max([np.abs(t) for t in thickness], axis=0) + abs(heart.rv_wall)
    radius = np.sqrt((per_pixel(endo) * np.abs(frame.endo_shape)) ** 2 + per_pixel(area / np.pi))
    radius += per_pixel(wall) * np.abs(frame.wall_shape)
    radius += per_pixel(rv) * wall_profile
    radius += reach.surroundings.ravel()[frame.index] * per_pixel(area > 0)  # fat and shell where myocardium is
    return frame.metric <= _with_slack(radius + 0.5 * pixel, pixel)


def near_vessels(distances: list[tuple[np.ndarray, float]], shape: tuple[int, ...], pixel: float) -> np.ndarray:
    """Pixels a great vessel can cover (``phantom_heart_vessels``: its wall reaches 2 mm beyond its
    radius, plus half a pixel of edge ramp), from each vessel's (``shape``) distance and radius."""
    near = np.zeros(shape, bool)
    for distance, radius in distances:
        near |= distance <= _with_slack(np.float64(radius + 2.0 + 0.5 * pixel), pixel)
    return near
