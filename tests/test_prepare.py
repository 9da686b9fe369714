"""Tests of cmrssp.data.prepare (Subject -> cache), cmrssp.data.cache and the enclosing circle."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from cmrssp.config import PrepareConfig, to_dict
from cmrssp.data import prepare as prepare_module
from cmrssp.data.cache import open_cache
from cmrssp.data.enclosing_circle import smallest_enclosing_circle
from cmrssp.data.prepare import (
    FORMAT_VERSION,
    BASE_TO_APEX_RAS,
    base_first_from_affine,
    prepare_cache,
    prepare_subject,
)
from cmrssp.data.subject import Subject
from cmrssp.errors import InputError

CONFIG = PrepareConfig(spacing=1.25, size=16, canvas=24)


def _same(subject):
    """Loader for tests whose refs are Subject records already (module level: picklable)."""
    return subject


def _oblique_affine(spacing, angle=0.4):
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0], [s * 0.8, c * 0.8, -0.6], [s * 0.6, c * 0.6, 0.8]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)[None, :]
    affine[:3, 3] = [-40.0, 12.0, 7.5]
    return affine


def _subject(subject_id="S1", dataset="mnms", labelled=True, seed=0, shape=(20, 18, 3, 4), affine=None):
    rng = np.random.default_rng(seed)
    image = (rng.random(shape) * 100 + 20).astype(np.float32)
    labels = None
    if labelled:
        labels = np.zeros(shape[:3] + (2,), dtype=np.uint8)
        # Area shrinks with the slice index: slice 0 is the base.
        for z, half in enumerate((4, 3, 2)[: shape[2]]):
            labels[9 - half : 9 + half, 8 - half : 8 + half, z, :] = 1
            labels[9 - 1 : 9 + 1, 8 - 1 : 8 + 1, z, 0] = 3
    return Subject(
        dataset=dataset,
        subject_id=subject_id,
        image=image,
        affine=_oblique_affine((1.5, 1.2, 8.0)) if affine is None else affine,
        labels=labels,
        label_frames=(0, min(2, shape[3] - 1)) if labelled else (),
        label_phases=("ED", "ES") if labelled else (),
        ed=0,
        es=min(2, shape[3] - 1),
        vendor="A",
        pathology="NOR",
        source=(f"/data/{subject_id}.nii.gz",),
        extra={"np_value": np.int64(3)},
    )


def _ramp_subject():
    """A linear ramp inside a zero border (rows 0-1 and columns 15-17 are zero at every z, t)."""
    x0, x1, z, t = np.meshgrid(*(np.arange(n) for n in (20, 18, 3, 4)), indexing="ij")
    image = (10.0 + 0.7 * x0 + 1.3 * x1 + 5.0 * z + 2.0 * t).astype(np.float32)
    image[:2] = 0.0
    image[:, 15:] = 0.0
    subject = _subject()
    subject.image = image
    return subject


# ----------------------------------------------------------------------------------------------
# Geometry and intensities


def _cubic_weights(coordinates, length, a=-0.75):
    """(len(coordinates), length) bicubic convolution weights (Keys kernel, torch's a = -0.75);
    taps outside 0..length-1 are dropped, which is zero padding."""
    distance = np.abs(np.asarray(coordinates)[:, None] - np.arange(length)[None, :])
    near = (a + 2) * distance**3 - (a + 3) * distance**2 + 1
    far = a * distance**3 - 5 * a * distance**2 + 8 * a * distance - 4 * a
    return np.where(distance <= 1, near, np.where(distance < 2, far, 0.0))


def test_evaluation_grid_equals_direct_resample_about_image_centre():
    subject = _ramp_subject()
    prepared = prepare_subject(subject, CONFIG)
    meta = prepared.meta
    assert meta.content_box == ((2, 20), (0, 15))

    # Independent reference: scale the cropped image about its centre straight to S x S (torch
    # affine_grid semantics: normalized align_corners=False coordinates times the FOV ratio).
    size, target = CONFIG.size, CONFIG.spacing
    spacing = np.sqrt((subject.affine[:3, :3] ** 2).sum(axis=0))[:2]
    length = np.array([18, 15])  # the content box: rows 2-19, columns 0-14
    v = (2 * np.arange(size) + 1) / size - 1
    coords = []  # cropped index of each output pixel, per axis
    for axis in (0, 1):
        u = v * (size * target) / (length[axis] * spacing[axis])
        coords.append(((u + 1) * length[axis] - 1) / 2)
    cropped = subject.image[2:20, 0:15].astype(np.float64)
    shifted = cropped - cropped.min()
    mean, std = shifted.mean(), shifted.std(ddof=1)
    window = slice(*meta.evaluation_window)

    # 1. Bicubic (exact torch kernel, zero padding outside the crop) everywhere in the window.
    w0, w1 = _cubic_weights(coords[0], 18), _cubic_weights(coords[1], 15)
    for t, z in [(0, 0), (3, 2), (1, 1)]:
        expected = (w0 @ shifted[..., z, t] @ w1.T - mean) / std
        got = prepared.image[t, z, window, window].astype(np.float64)
        np.testing.assert_allclose(got, expected, atol=4e-3)

    # 2. Linear interpolation (scipy) agrees inside the crop up to bicubic's ramp deviation: the
    # a = -0.75 kernel does not reproduce linear functions exactly (up to 0.047 px off).
    grid0, grid1 = np.meshgrid(coords[0], coords[1], indexing="ij")
    inside = (grid0 >= 1) & (grid0 < 18 - 2) & (grid1 >= 1) & (grid1 < 15 - 2)
    assert inside.sum() > 60
    expected = (map_coordinates(shifted[..., 1, 1], [grid0, grid1], order=1) - mean) / std
    got = prepared.image[1, 1, window, window].astype(np.float64)
    slope = (0.7 + 1.3) / std
    np.testing.assert_allclose(got[inside], expected[inside], atol=0.05 * slope + 4e-3)


def test_standardization_statistics_and_background():
    subject = _ramp_subject()
    meta = prepare_subject(subject, CONFIG).meta
    cropped = subject.image[2:20, 0:15]
    shifted = cropped.astype(np.float64) - cropped.min()
    stats = meta.stats
    assert stats.subtracted_minimum == pytest.approx(float(cropped.min()))
    assert stats.min == 0.0
    assert stats.mean == pytest.approx(shifted.mean(), rel=1e-6)
    assert stats.std == pytest.approx(shifted.std(ddof=1), rel=1e-6)
    assert stats.std != pytest.approx(shifted.std(ddof=0), rel=1e-6)
    assert stats.max == pytest.approx(shifted.max())
    assert meta.background_value == pytest.approx(-shifted.mean() / shifted.std(ddof=1))
    assert meta.standardized_max == pytest.approx((shifted.max() - shifted.mean()) / shifted.std(ddof=1))


def test_out_of_field_pixels_hold_background_value():
    prepared = prepare_subject(_subject(), CONFIG)
    # Along axis 1 the image spans 18 x 1.2 = 21.6 mm, the canvas 24 x 1.25 = 30 mm: its edge
    # columns lie outside the field of view.
    scale, offset = np.array(prepared.meta.grid.scale), np.array(prepared.meta.grid.offset)
    x1 = scale[1] * np.arange(CONFIG.canvas_size) + offset[1]
    outside = np.flatnonzero(x1 < -2.5)  # beyond the bicubic footprint of the first column
    assert outside.size > 0
    values = prepared.image[:, :, :, outside].astype(np.float64)
    np.testing.assert_allclose(values, prepared.meta.background_value, atol=2e-3)


def test_known_point_maps_through_grid_and_canvas_affine():
    subject = _subject(shape=(24, 20, 3, 2))
    # A smooth blob centred at a non-integer native position.
    x0, x1 = np.meshgrid(np.arange(24), np.arange(20), indexing="ij")
    centre = np.array([9.3, 11.6])
    blob = 100.0 * np.exp(-((x0 - centre[0]) ** 2 + (x1 - centre[1]) ** 2) / (2 * 2.0**2)) + 1.0
    subject.image = np.repeat(np.repeat(blob[:, :, None, None], 3, axis=2), 2, axis=3).astype(np.float32)
    config = PrepareConfig(spacing=1.0, size=32, canvas=40)
    prepared = prepare_subject(subject, config)
    meta, image = prepared.meta, prepared.image[0, 1].astype(np.float64)

    scale, offset = np.array(meta.grid.scale), np.array(meta.grid.offset)
    # Direct numpy computation of the map: k -> f (k + 0.5 - C/2) + N/2 - 0.5 + b.
    canvas, spacing = config.canvas_size, np.array([1.5, 1.2])
    expected_scale = config.spacing / spacing
    expected_offset = expected_scale * (0.5 - canvas / 2) + np.array([24, 20]) / 2 - 0.5
    np.testing.assert_allclose(scale, expected_scale)
    np.testing.assert_allclose(offset, expected_offset)

    # The blob's peak on the canvas sits where the inverse map sends its native centre.
    predicted = (centre - offset) / scale
    weights = np.clip(image - image.max() / 2, 0, None)
    k0, k1 = np.meshgrid(np.arange(canvas), np.arange(canvas), indexing="ij")
    measured = np.array([(weights * k0).sum(), (weights * k1).sum()]) / weights.sum()
    np.testing.assert_allclose(measured, predicted, atol=0.15)

    # World coordinates are preserved: canvas_affine @ k == affine @ (scale k + offset).
    canvas_affine, affine = np.array(meta.canvas_affine), np.array(meta.affine)
    for k in ([3.0, 17.0, 1.0], [0.0, 0.0, 0.0], [39.0, 5.5, 2.0]):
        native = [scale[0] * k[0] + offset[0], scale[1] * k[1] + offset[1], k[2], 1.0]
        np.testing.assert_allclose(canvas_affine @ [*k, 1.0], affine @ native, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(canvas_affine[:3, :3], axis=0), [1.0, 1.0, 8.0], atol=1e-9)
    assert meta.native_shape == (24, 20, 3, 2)
    np.testing.assert_allclose(meta.spacing_native, [1.5, 1.2, 8.0])


def test_labels_are_nearest_resampled_on_the_same_canvas():
    subject = _ramp_subject()
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=(20, 18, 3, 2)).astype(np.uint8)
    labels[:2] = 0
    labels[:, 15:] = 0
    subject.labels = labels
    prepared = prepare_subject(subject, CONFIG)
    assert prepared.labels.dtype == np.uint8 and prepared.labels.shape == (2, 3, 24, 24)
    assert set(np.unique(prepared.labels).tolist()) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(prepared.labels_native, labels)

    scale, offset = np.array(prepared.meta.grid.scale), np.array(prepared.meta.grid.offset)
    k = np.arange(CONFIG.canvas_size)
    index = [np.rint(scale[i] * k + offset[i]).astype(int) for i in (0, 1)]
    valid = [(index[0] >= 2) & (index[0] < 20), (index[1] >= 0) & (index[1] < 15)]
    expected = np.zeros((2, 3, 24, 24), dtype=np.uint8)
    for volume, z in itertools.product(range(2), range(3)):
        native = labels[..., z, volume]
        plane = native[np.clip(index[0], 0, 19)[:, None], np.clip(index[1], 0, 17)[None, :]]
        expected[volume, z] = np.where(valid[0][:, None] & valid[1][None, :], plane, 0)
    np.testing.assert_array_equal(prepared.labels, expected)


def test_content_box_crop_moves_the_centre():
    plain = _subject(shape=(16, 14, 3, 2))
    padded = _subject(shape=(16, 14, 3, 2))
    padded.image = np.pad(plain.image, ((3, 0), (0, 5), (0, 0), (0, 0)))
    padded.labels = np.pad(plain.labels, ((3, 0), (0, 5), (0, 0), (0, 0)))
    a, b = prepare_subject(plain, CONFIG), prepare_subject(padded, CONFIG)
    assert b.meta.content_box == ((3, 19), (0, 14))
    # The crop defines the image: same canvas content, native offsets shifted by the crop start.
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(np.subtract(b.meta.grid.offset, a.meta.grid.offset), [3.0, 0.0])
    np.testing.assert_allclose(
        np.subtract(b.meta.heart_centre_native, a.meta.heart_centre_native), [3.0, 0.0]
    )
    np.testing.assert_allclose(b.meta.heart_centre_canvas, a.meta.heart_centre_canvas)
    assert vars(a.meta.stats) == pytest.approx(vars(b.meta.stats))
    # Without the crop the padded image's centre would lie 2.5 px further along axis 1.
    assert b.meta.native_shape[1] - 14 == 5


def test_heart_centre_and_radius():
    subject = _subject()
    meta = prepare_subject(subject, CONFIG).meta
    # Foreground union: the 8 x 8 square at rows 5..12, columns 4..11 (slice 0).
    np.testing.assert_allclose(meta.heart_centre_native, [8.5, 7.5], atol=1e-9)
    radius_px = np.hypot(3.5, 3.5)
    assert meta.heart_radius_mm == pytest.approx(radius_px * (1.5 + 1.2) / 2)
    scale, offset = np.array(meta.grid.scale), np.array(meta.grid.offset)
    np.testing.assert_allclose(meta.heart_centre_canvas, (np.array([8.5, 7.5]) - offset) / scale)

    unlabelled = prepare_subject(_subject(labelled=False), CONFIG)
    assert unlabelled.labels is None and unlabelled.labels_native is None
    assert unlabelled.meta.heart_centre_native is None and unlabelled.meta.heart_centre_canvas is None
    assert unlabelled.meta.heart_radius_mm is None


# ----------------------------------------------------------------------------------------------
# Smallest enclosing circle


def _brute_force_circle(points):
    def circles():
        for a, b in itertools.combinations(points, 2):
            centre = (a + b) / 2
            yield centre, np.hypot(*(a - centre))
        for a, b, c in itertools.combinations(points, 3):
            matrix = 2 * np.array([b - a, c - a])
            if abs(np.linalg.det(matrix)) < 1e-12:
                continue
            centre = np.linalg.solve(matrix, [b @ b - a @ a, c @ c - a @ a])
            yield centre, np.hypot(*(a - centre))

    best = None
    for centre, radius in circles():
        if np.all(np.hypot(*(points - centre).T) <= radius * (1 + 1e-9) + 1e-9):
            if best is None or radius < best[1]:
                best = (centre, radius)
    return best


def test_enclosing_circle_matches_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(60):
        points = rng.normal(size=(int(rng.integers(2, 10)), 2)) * rng.uniform(0.5, 50)
        if trial % 3 == 0:
            points = np.round(points)
        points = np.unique(points, axis=0)
        if len(points) < 2:
            continue
        circle = smallest_enclosing_circle(points)
        centre, radius = _brute_force_circle(points)
        assert circle.radius == pytest.approx(radius, rel=1e-7, abs=1e-9)
        np.testing.assert_allclose([circle.x, circle.y], centre, atol=1e-6 * max(1.0, radius))


def test_enclosing_circle_hand_cases():
    single = smallest_enclosing_circle(np.array([[2.0, 3.0]]))
    assert (single.x, single.y, single.radius) == (2.0, 3.0, 0.0)
    pair = smallest_enclosing_circle(np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 0.0]]))
    assert (pair.x, pair.y, pair.radius) == pytest.approx((2.0, 0.0, 2.0))
    line = smallest_enclosing_circle(np.array([[i, 2 * i] for i in range(7)], dtype=float))
    assert (line.x, line.y, line.radius) == pytest.approx((3.0, 6.0, np.hypot(3, 6)))
    square = smallest_enclosing_circle(np.array([[0, 0], [2, 0], [0, 2], [2, 2], [1, 1]], dtype=float))
    assert (square.x, square.y, square.radius) == pytest.approx((1.0, 1.0, np.sqrt(2)))
    # Obtuse triangle: the circle is the diameter circle of the longest side, not the circumcircle.
    obtuse = smallest_enclosing_circle(np.array([[0, 0], [10, 0], [5, 1]], dtype=float))
    assert (obtuse.x, obtuse.y, obtuse.radius) == pytest.approx((5.0, 0.0, 5.0))
    equilateral = np.array([[0, 0], [2, 0], [1, np.sqrt(3)]])
    circle = smallest_enclosing_circle(equilateral)
    assert (circle.x, circle.y, circle.radius) == pytest.approx((1.0, 1 / np.sqrt(3), 2 / np.sqrt(3)))
    # A filled disc of pixels.
    x, y = np.meshgrid(np.arange(-10, 11), np.arange(-10, 11))
    disc = np.argwhere(x**2 + y**2 <= 49).astype(float)
    circle = smallest_enclosing_circle(disc)
    assert (circle.x, circle.y, circle.radius) == pytest.approx((10.0, 10.0, 7.0))
    # Deterministic.
    assert smallest_enclosing_circle(disc) == circle


# ----------------------------------------------------------------------------------------------
# Slice order


def test_base_first_from_labels():
    subject = _subject()
    meta = prepare_subject(subject, CONFIG).meta
    assert meta.base_first is True and meta.base_first_source == "labels"
    assert meta.slice_positions == pytest.approx([0, 1 / 3, 2 / 3])

    flipped = _subject()
    flipped.image = flipped.image[:, :, ::-1].copy()
    flipped.labels = flipped.labels[:, :, ::-1].copy()
    meta = prepare_subject(flipped, CONFIG).meta
    assert meta.base_first is False and meta.base_first_source == "labels"
    assert meta.slice_positions == pytest.approx([2 / 3, 1 / 3, 0])


def test_base_first_falls_back_to_the_affine():
    def affine_with_slice_axis(direction):
        direction = np.asarray(direction, dtype=float)
        first = np.cross(direction, [0.0, 0.0, 1.0])
        first /= np.linalg.norm(first)
        second = np.cross(direction, first)
        affine = np.eye(4)
        affine[:3, :3] = np.stack([first * 1.5, second * 1.5, direction * 8.0], axis=1)
        return affine

    towards_apex = prepare_subject(_subject(labelled=False, affine=affine_with_slice_axis(BASE_TO_APEX_RAS)), CONFIG)
    assert towards_apex.meta.base_first is True and towards_apex.meta.base_first_source == "affine"
    assert towards_apex.meta.slice_positions == pytest.approx([0, 1 / 3, 2 / 3])
    towards_base = prepare_subject(_subject(labelled=False, affine=affine_with_slice_axis(-BASE_TO_APEX_RAS)), CONFIG)
    assert towards_base.meta.base_first is False
    assert towards_base.meta.slice_positions == pytest.approx([2 / 3, 1 / 3, 0])
    # Identity: slices go towards the head (superior), i.e. from the apex to the base.
    assert base_first_from_affine(np.diag([1.0, 1.0, 8.0, 1.0])) is False

    # Labels with a symmetric area profile are ambiguous: the affine decides.
    symmetric = _subject(affine=affine_with_slice_axis(BASE_TO_APEX_RAS))
    symmetric.labels[:] = 0
    symmetric.labels[6:12, 5:11, :, :] = 1
    meta = prepare_subject(symmetric, CONFIG).meta
    assert meta.base_first_source == "affine" and meta.base_first is True


def test_meta_fields():
    meta = prepare_subject(_subject(), CONFIG).meta
    assert meta.key == "mnms-S1" and meta.dataset == "mnms" and meta.subject_id == "S1"
    assert meta.vendor == "A" and meta.pathology == "NOR"
    assert (meta.ed, meta.es) == (0, 2)
    assert meta.label_frames == (0, 2) and meta.label_phases == ("ED", "ES")
    assert meta.labelled is True and meta.n_frames == 4 and meta.n_slices == 3
    assert meta.extra == {"np_value": 3}
    assert meta.canvas == 24 and meta.size == 16 and meta.spacing == 1.25
    assert meta.evaluation_window == (4, 20)
    json.dumps(meta.to_dict())  # plain JSON types only


def test_constant_image_is_rejected():
    subject = _subject()
    subject.image[:] = 5.0
    with pytest.raises(InputError, match="constant"):
        prepare_subject(subject, CONFIG)


# ----------------------------------------------------------------------------------------------
# The driver and the cache


def _folder_files(cache_dir):
    return sorted(p.relative_to(cache_dir).as_posix() for p in cache_dir.rglob("*"))


def test_prepare_cache_manifest_and_reading(tmp_path):
    subjects = [_subject("S1"), _subject("S2", seed=1), _subject("T1", labelled=False, seed=2)]
    summary = prepare_cache(subjects, tmp_path / "cache", CONFIG, loader=_same, progress=False)
    assert summary.prepared == ["mnms-S1", "mnms-S2", "mnms-T1"] and summary.skipped == []
    assert set(summary.seconds) == set(summary.prepared)

    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["format"] == "cmrssp-cache" and manifest["version"] == FORMAT_VERSION
    assert manifest["config"] == to_dict(CONFIG) and "toolkit_version" in manifest
    entries = {entry["key"]: entry for entry in manifest["subjects"]}
    assert list(entries) == ["mnms-S1", "mnms-S2", "mnms-T1"]
    assert entries["mnms-S1"]["labelled"] is True and entries["mnms-T1"]["labelled"] is False
    assert entries["mnms-S1"]["label_phases"] == ["ED", "ES"]
    assert (entries["mnms-S1"]["n_slices"], entries["mnms-S1"]["n_frames"]) == (3, 4)
    assert entries["mnms-S1"]["vendor"] == "A" and entries["mnms-S1"]["pathology"] == "NOR"
    folder = tmp_path / "cache" / "subjects" / "mnms-S1"
    assert entries["mnms-S1"]["bytes"] == sum(f.stat().st_size for f in folder.iterdir())
    assert sorted(f.name for f in folder.iterdir()) == ["image.npy", "labels.npy", "labels_native.npy", "meta.json"]
    assert sorted(f.name for f in (tmp_path / "cache" / "subjects" / "mnms-T1").iterdir()) == ["image.npy", "meta.json"]

    cache = open_cache(tmp_path / "cache")
    assert cache.config == CONFIG and cache.keys == ["mnms-S1", "mnms-S2", "mnms-T1"]
    assert cache.subjects(labelled=True) == ["mnms-S1", "mnms-S2"]
    assert cache.subjects(dataset="mnms2") == []
    expected = prepare_subject(_subject("S2", seed=1), CONFIG)
    image = cache.image("mnms-S2")
    assert isinstance(image, np.memmap) and image.dtype == np.float16 and image.shape == (4, 3, 24, 24)
    np.testing.assert_array_equal(image, expected.image)
    np.testing.assert_array_equal(cache.labels("mnms-S2"), expected.labels)
    np.testing.assert_array_equal(cache.labels_native("mnms-S2"), expected.labels_native)
    assert cache.labels("mnms-T1") is None and cache.labels_native("mnms-T1") is None
    assert cache.meta("mnms-S2").grid == expected.meta.grid
    with pytest.raises(InputError, match="not in this cache"):
        cache.image("mnms-XX")

    # A second dataset joins the same cache; done subjects are skipped.
    more = [_subject("001", dataset="mnms2", seed=4), _subject("S1")]
    summary = prepare_cache(more, tmp_path / "cache", CONFIG, loader=_same, progress=False)
    assert summary.prepared == ["mnms2-001"] and summary.skipped == ["mnms-S1"]
    cache = open_cache(tmp_path / "cache")
    assert cache.keys == ["mnms-S1", "mnms-S2", "mnms-T1", "mnms2-001"]
    assert cache.subjects(dataset="mnms2") == ["mnms2-001"]
    description = cache.describe()
    assert "4 subjects" in description and "mnms: 3 subjects (2 labelled)" in description
    assert "mnms2: 1 subjects (1 labelled)" in description


def test_open_cache_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_cache(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="manifest.json"):
        open_cache(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text("{broken")
    with pytest.raises(InputError, match="not valid JSON"):
        open_cache(tmp_path / "empty")


def test_config_mismatch_and_duplicate_keys(tmp_path):
    prepare_cache([_subject("S1")], tmp_path, CONFIG, loader=_same, progress=False)
    other = PrepareConfig(spacing=1.5, size=16, canvas=24)
    with pytest.raises(InputError, match="manifest.json"):
        prepare_cache([_subject("S2")], tmp_path, other, loader=_same, progress=False)
    assert not (tmp_path / "subjects" / "mnms-S2").exists()
    with pytest.raises(InputError, match="duplicate"):
        prepare_cache([_subject("S3"), _subject("S3")], tmp_path, CONFIG, loader=_same, progress=False)


def test_failure_leaves_no_partial_subject_and_resumes(tmp_path, monkeypatch):
    def failing_loader(subject):
        if subject.subject_id == "S2":
            raise InputError(f"/data/{subject.subject_id}.nii.gz", "truncated image data")
        return subject

    subjects = [_subject("S1"), _subject("S2", seed=1), _subject("S3", seed=2)]
    with pytest.raises(InputError, match="S2.nii.gz: truncated"):
        prepare_cache(subjects, tmp_path, CONFIG, loader=failing_loader, progress=False)
    assert [p.name for p in (tmp_path / "subjects").iterdir()] == ["mnms-S1"]
    assert [entry["key"] for entry in json.loads((tmp_path / "manifest.json").read_text())["subjects"]] == ["mnms-S1"]

    # A crash while the subject's files are being written: nothing of it remains.
    real_save = prepare_module.save_npy

    def crashing_save(path, array):
        if path.name == "labels.npy":
            raise RuntimeError("simulated crash")
        real_save(path, array)

    monkeypatch.setattr(prepare_module, "save_npy", crashing_save)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare_cache(subjects, tmp_path, CONFIG, loader=_same, progress=False)
    assert _folder_files(tmp_path) == [
        "manifest.json", "subjects", "subjects/mnms-S1",
        *(f"subjects/mnms-S1/{n}" for n in ("image.npy", "labels.npy", "labels_native.npy", "meta.json")),
    ]
    monkeypatch.setattr(prepare_module, "save_npy", real_save)

    # A temporary folder left by a killed process is cleaned up; the next run resumes.
    (tmp_path / "subjects" / ".tmp-mnms-S2-abc").mkdir()
    summary = prepare_cache(subjects, tmp_path, CONFIG, loader=_same, progress=False)
    assert summary.skipped == ["mnms-S1"] and summary.prepared == ["mnms-S2", "mnms-S3"]
    assert sorted(p.name for p in (tmp_path / "subjects").iterdir()) == ["mnms-S1", "mnms-S2", "mnms-S3"]


def test_loader_returning_another_subject_is_an_error(tmp_path):
    with pytest.raises(InputError, match="returned subject"):
        prepare_cache([_subject("S1")], tmp_path, CONFIG, loader=lambda s: _subject("S9"), progress=False)


def test_two_workers_write_identical_files(tmp_path):
    subjects = [_subject(f"S{i}", seed=i, labelled=i != 2) for i in range(4)]
    prepare_cache(subjects, tmp_path / "one", CONFIG, loader=_same, workers=1, progress=False)
    summary = prepare_cache(subjects, tmp_path / "two", CONFIG, loader=_same, workers=2, progress=False)
    assert sorted(summary.prepared) == sorted(s.key for s in subjects)
    files = _folder_files(tmp_path / "one")
    assert files == _folder_files(tmp_path / "two")
    for name in files:
        a, b = tmp_path / "one" / name, tmp_path / "two" / name
        if a.is_dir():
            continue
        if name.endswith("meta.json"):
            meta_a, meta_b = json.loads(a.read_text()), json.loads(b.read_text())
            meta_a.pop("prepare_seconds"), meta_b.pop("prepare_seconds")
            assert meta_a == meta_b
        elif name == "manifest.json":  # entry sizes differ by the digits of prepare_seconds
            manifest_a, manifest_b = json.loads(a.read_text()), json.loads(b.read_text())
            for entry in manifest_a["subjects"] + manifest_b["subjects"]:
                assert entry.pop("bytes") > 0
            assert manifest_a == manifest_b
        else:
            assert a.read_bytes() == b.read_bytes(), name

    # An InputError inside a worker reaches the caller as an InputError.
    bad = _subject("B1")
    bad.image[:] = 1.0
    with pytest.raises(InputError, match="constant"):
        prepare_cache([bad, _subject("B2")], tmp_path / "bad", CONFIG, loader=_same, workers=2, progress=False)
    assert not list((tmp_path / "bad" / "subjects").glob(".tmp-*"))
    assert not (tmp_path / "bad" / "subjects" / "mnms-B1").exists()
    manifest = json.loads((tmp_path / "bad" / "manifest.json").read_text())
    on_disk = sorted(p.name for p in (tmp_path / "bad" / "subjects").iterdir())
    assert [entry["key"] for entry in manifest["subjects"]] == on_disk


def test_reader_findings_are_reported_once_per_dataset_and_kind(tmp_path):
    import dataclasses
    import warnings

    from cmrssp.data.subject import Notice

    def noted(subject_id, dataset, message):
        return dataclasses.replace(_subject(subject_id, dataset=dataset), notices=(Notice("geometry:conflict", message),))

    subjects = [noted("S1", "mnms", "first file"), noted("S2", "mnms", "second file"), noted("S3", "acdc", "third file")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = prepare_cache(subjects, tmp_path / "cache", CONFIG, loader=_same, progress=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and "first file" in messages[0] and "third file" in messages[1]
    assert not any("second file" in m for m in messages)
    described = summary.describe()
    assert "mnms: 2 subjects with geometry:conflict (first mnms-S1" in described
    assert "acdc: 1 subject with geometry:conflict" in described
    # the cache records what geometry each subject used (here: built in memory from its affine)
    meta = open_cache(tmp_path / "cache").meta("mnms-S1")
    assert meta.geometry.chosen == "affine" and meta.notices == ("geometry:conflict",)
    assert meta.source_header is None


def test_a_cache_refuses_another_geometry_rule(tmp_path):
    import dataclasses

    prepare_cache([_subject("S1")], tmp_path / "cache", CONFIG, loader=_same, progress=False)
    with pytest.raises(InputError, match="prepared with"):
        prepare_cache([_subject("S2")], tmp_path / "cache", dataclasses.replace(CONFIG, geometry="header"),
                      loader=_same, progress=False)
    with pytest.raises(InputError, match="unknown geometry rule"):
        PrepareConfig(geometry="itk").validate()

