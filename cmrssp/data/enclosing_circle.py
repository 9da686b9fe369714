"""Smallest enclosing circle of a 2D point set (the study's heart centre, protocol 3.4).

qcardia-data stores as ``gt_center`` the centre of the smallest circle that encloses every
foreground pixel of the ground truth projected onto the image plane. This module computes that
circle exactly with Welzl's randomized incremental algorithm (Welzl 1991, "Smallest enclosing
disks (balls and ellipsoids)"), in its iterative form, after reducing the points to the vertices
of their convex hull (the circle only ever touches hull vertices, and a hull has a few hundred
vertices where a heart mask has thousands of pixels). The shuffle uses a fixed seed, so the
result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull, QhullError

# Relative tolerance for "point lies in the circle": points on the boundary must count as
# inside despite floating-point rounding, or the incremental algorithm would loop on them.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Circle:
    """A circle with centre ``(x, y)`` and radius ``radius`` in the units of the input points."""

    x: float
    y: float
    radius: float

    def contains(self, point: np.ndarray) -> bool:
        limit = self.radius * (1.0 + _TOLERANCE) + _TOLERANCE
        return float(np.hypot(point[0] - self.x, point[1] - self.y)) <= limit


def smallest_enclosing_circle(points: np.ndarray, seed: int = 0) -> Circle:
    """The smallest circle enclosing all ``points`` (float array (P, 2), P >= 1)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"expected a non-empty (P, 2) point array, got shape {points.shape}")
    candidates = _hull_vertices(points)
    order = np.random.default_rng(seed).permutation(len(candidates))
    shuffled = candidates[order]
    circle: Circle | None = None
    for i, point in enumerate(shuffled):
        if circle is None or not circle.contains(point):
            circle = _circle_with_one_boundary_point(shuffled[: i + 1], point)
    assert circle is not None
    return circle


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    """The convex-hull vertices of ``points``; the unique points when the hull is degenerate."""
    unique = np.unique(points, axis=0)
    if len(unique) <= 3:
        return unique
    try:
        return unique[ConvexHull(unique).vertices]
    except QhullError:
        # All points collinear: the circle is spanned by the two extremes of the line.
        direction = unique[-1] - unique[0]
        projection = unique @ direction
        return unique[[int(np.argmin(projection)), int(np.argmax(projection))]]


def _circle_with_one_boundary_point(points: np.ndarray, p: np.ndarray) -> Circle:
    """Smallest circle enclosing ``points`` with ``p`` on its boundary."""
    circle = Circle(float(p[0]), float(p[1]), 0.0)
    for i, q in enumerate(points):
        if not circle.contains(q):
            if circle.radius == 0.0:
                circle = _diameter_circle(p, q)
            else:
                circle = _circle_with_two_boundary_points(points[: i + 1], p, q)
    return circle


def _circle_with_two_boundary_points(points: np.ndarray, p: np.ndarray, q: np.ndarray) -> Circle:
    """Smallest circle enclosing ``points`` with ``p`` and ``q`` on its boundary.

    Its centre lies on the perpendicular bisector of pq. Each point outside the diameter circle
    of pq forces the centre further to its own side; the answer is the circumcircle that reaches
    furthest on the left or on the right side, whichever is the one enclosing every point.
    """
    diameter = _diameter_circle(p, q)
    left: Circle | None = None
    right: Circle | None = None
    for r in points:
        if diameter.contains(r):
            continue
        side = _cross(p, q, r)
        circle = _circumcircle(p, q, r)
        if circle is None:
            continue
        reach = _cross(p, q, np.array([circle.x, circle.y]))
        if side > 0 and (left is None or reach > _cross(p, q, np.array([left.x, left.y]))):
            left = circle
        elif side < 0 and (right is None or reach < _cross(p, q, np.array([right.x, right.y]))):
            right = circle
    if left is None and right is None:
        return diameter
    if left is None:
        return right  # type: ignore[return-value]
    if right is None:
        return left
    return left if left.radius <= right.radius else right


def _diameter_circle(a: np.ndarray, b: np.ndarray) -> Circle:
    cx, cy = (a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0
    radius = max(float(np.hypot(a[0] - cx, a[1] - cy)), float(np.hypot(b[0] - cx, b[1] - cy)))
    return Circle(float(cx), float(cy), radius)


def _circumcircle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> Circle | None:
    """Circle through three points, or None when they are collinear."""
    # Translate to the bounding-box centre for numerical accuracy.
    ox = (min(a[0], b[0], c[0]) + max(a[0], b[0], c[0])) / 2.0
    oy = (min(a[1], b[1], c[1]) + max(a[1], b[1], c[1])) / 2.0
    ax, ay = a[0] - ox, a[1] - oy
    bx, by = b[0] - ox, b[1] - oy
    cx, cy = c[0] - ox, c[1] - oy
    d = 2.0 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    if d == 0.0:
        return None
    a2, b2, c2 = ax * ax + ay * ay, bx * bx + by * by, cx * cx + cy * cy
    x = ox + (a2 * (by - cy) + b2 * (cy - ay) + c2 * (ay - by)) / d
    y = oy + (a2 * (cx - bx) + b2 * (ax - cx) + c2 * (bx - ax)) / d
    radius = max(float(np.hypot(x - p[0], y - p[1])) for p in (a, b, c))
    return Circle(float(x), float(y), radius)


def _cross(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """z of (b - a) × (c - a): positive when c lies left of the directed line a -> b."""
    return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
