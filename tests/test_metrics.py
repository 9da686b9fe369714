import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from cmrssp.errors import InputError
from cmrssp.metrics import dice_3d, hd95, largest_component_per_class

ANISOTROPIC = (1.25, 1.25, 10.0)


def brute_dice(pred, target, label):
    p, g = pred == label, target == label
    if p.sum() + g.sum() == 0:
        return 1.0
    return 2.0 * (p & g).sum() / (p.sum() + g.sum())


def brute_surface_points(mask, spacing):
    """Surface on the full, uncropped array: erosion with outside-the-array = background."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    surface = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return np.argwhere(surface) * np.asarray(spacing, dtype=np.float64)


def brute_hd95(pred, target, spacing, label):
    """All surface-point pairs, O(n^2): no distance transform, no cropping."""
    a, b = pred == label, target == label
    if not a.any() and not b.any():
        return math.nan
    if not a.any() or not b.any():
        return math.inf
    distances = cdist(brute_surface_points(a, spacing), brute_surface_points(b, spacing))
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


def random_labels(rng, shape, smooth=1.0):
    """Blobby random label volume in {0..3} (plus a few 4s, which no metric should score)."""
    noise = ndimage.gaussian_filter(rng.normal(size=(4, *shape)), sigma=(0, *([smooth] * len(shape))))
    labels = np.argmax(noise, axis=0).astype(np.uint8)
    labels[rng.random(shape) < 0.02] = 4
    return labels


def box(shape, *slices, label=1, dtype=np.uint8):
    volume = np.zeros(shape, dtype=dtype)
    volume[slices] = label
    return volume


# ---------------------------------------------------------------- dice_3d


def test_dice_hand_computed_overlaps():
    # 1D-like: [0, 6) vs [3, 9): |P∩G| = 3, |P| = |G| = 6 -> 0.5
    pred, target = box((1, 10), slice(None), slice(0, 6)), box((1, 10), slice(None), slice(3, 9))
    assert dice_3d(pred, target, labels=(1,)).tolist() == [0.5]
    # 3D boxes 4x4x2 shifted by one voxel along x: overlap 3x4x2 = 24 -> 48 / 64
    pred = box((8, 8, 4), slice(1, 5), slice(1, 5), slice(1, 3))
    target = np.roll(pred, 1, axis=0)
    result = dice_3d(pred, target)
    assert result.dtype == np.float64 and result.shape == (3,)
    assert result.tolist() == [0.75, 1.0, 1.0]  # classes 2 and 3 are empty in both


def test_dice_per_class_and_unscored_values():
    target = np.zeros((6, 6, 3), dtype=np.uint8)
    target[0:2] = 1  # 36 voxels
    target[2:4] = 2
    target[4:6] = 3
    pred = target.copy()
    pred[0] = 7  # half of class 1 becomes a value that is not scored
    pred[2, :, 0] = 3  # 6 voxels of class 2 become class 3
    # class 1: 2*18/(18+36); class 2: 2*30/(30+36); class 3: 2*36/(42+36)
    np.testing.assert_allclose(dice_3d(pred, target), [36 / 54, 60 / 66, 72 / 78])


def test_dice_empty_conventions():
    empty = np.zeros((4, 4, 2), dtype=np.uint8)
    only_one = box((4, 4, 2), slice(0, 2), slice(0, 2), slice(None), label=2)
    assert dice_3d(empty, empty).tolist() == [1.0, 1.0, 1.0]
    assert np.isnan(dice_3d(empty, empty, empty="nan")).all()
    for pred, target in ((only_one, empty), (empty, only_one)):
        assert dice_3d(pred, target).tolist() == [1.0, 0.0, 1.0]
        result = dice_3d(pred, target, empty="nan")
        assert np.isnan(result[[0, 2]]).all() and result[1] == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_dice_matches_brute_force_and_is_symmetric(seed):
    rng = np.random.default_rng(seed)
    pred, target = random_labels(rng, (9, 8, 5)), random_labels(rng, (9, 8, 5))
    labels = (0, 1, 2, 3, 5)
    expected = [brute_dice(pred, target, label) for label in labels]
    np.testing.assert_allclose(dice_3d(pred, target, labels=labels), expected, rtol=1e-12)
    np.testing.assert_array_equal(dice_3d(pred, target, labels=labels), dice_3d(target, pred, labels=labels))


def test_dice_accepts_any_integer_dtype_bool_and_torch():
    rng = np.random.default_rng(0)
    pred, target = random_labels(rng, (7, 6, 3)), random_labels(rng, (7, 6, 3))
    expected = dice_3d(pred, target)
    for dtype in (np.int16, np.int64, np.uint16, np.uint64):
        np.testing.assert_array_equal(dice_3d(pred.astype(dtype), target.astype(dtype)), expected)
    np.testing.assert_array_equal(dice_3d(torch.from_numpy(pred).long(), torch.from_numpy(target)), expected)
    # negative values and values far above the labels are just "not scored"
    signed = pred.astype(np.int64)
    signed[signed == 4] = -(2**40)
    np.testing.assert_array_equal(dice_3d(signed, target), expected)
    assert dice_3d(pred == 1, target == 1, labels=(1,))[0] == expected[0]


def test_dice_rejects_bad_arguments():
    volume = np.zeros((4, 4, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(4, 4, 2\).*\(4, 4, 3\)"):
        dice_3d(volume, np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        dice_3d(volume, volume, empty="zero")
    with pytest.raises(ValueError, match="float32"):
        dice_3d(volume.astype(np.float32), volume)
    with pytest.raises(ValueError, match="labels"):
        dice_3d(volume, volume, labels=(1.5,))
    with pytest.raises(ValueError, match="labels"):
        dice_3d(volume, volume, labels=())
    with pytest.raises(InputError):  # the project's one bad-input error, too
        dice_3d(volume, volume[..., :1])


# ---------------------------------------------------------------- hd95


def test_hd95_one_slice_shift_is_slice_spacing_and_in_plane_shift_is_pixel_size():
    plate = box((10, 10, 4), slice(2, 8), slice(2, 8), slice(1, 2))
    # every voxel of a one-slice plate is surface; its nearest voxel one slice away is 10 mm off
    assert hd95(plate, np.roll(plate, 1, axis=2), ANISOTROPIC, labels=(1,)).tolist() == [10.0]
    # in-plane: 6 of 36 voxels per side are 1.25 mm away, the rest 0 -> P95 = 1.25
    assert hd95(plate, np.roll(plate, 1, axis=1), ANISOTROPIC, labels=(1,)).tolist() == [1.25]
    assert hd95(plate, plate, ANISOTROPIC, labels=(1,)).tolist() == [0.0]
    # a solid block shifted by one slice: distances are 0 or 10 mm, at least 5% of them 10
    block = box((12, 12, 6), slice(2, 9), slice(3, 10), slice(1, 4))
    assert hd95(block, np.roll(block, 1, axis=2), ANISOTROPIC, labels=(1,)).tolist() == [10.0]


def test_hd95_takes_the_max_of_the_two_directed_percentiles():
    # A = [0, 10), B = [0, 12) on a (1, N) grid (every voxel is surface: axis 0 is all border).
    # A->B: all 0. B->A: ten 0s, then 1 and 2 -> P95 = 1 + 0.45 * (2 - 1) = 1.45 by linear
    # interpolation. (Pooling both directions would give 0.95 instead.)
    a, b = box((1, 14), slice(None), slice(0, 10)), box((1, 14), slice(None), slice(0, 12))
    assert hd95(a, b, (1.0, 1.0), labels=(1,))[0] == pytest.approx(1.45, abs=1e-12)
    assert hd95(a, b, (3.0, 2.0), labels=(1,))[0] == pytest.approx(2.9, abs=1e-12)


def test_hd95_array_border_is_surface():
    # A fills the whole 3x3x3 array: its surface is the 26 border voxels, only the centre is
    # interior. B is the centre voxel. A->B: 6 x 1, 12 x sqrt2, 8 x sqrt3 -> P95 = sqrt3.
    a = np.ones((3, 3, 3), dtype=np.uint8)
    b = box((3, 3, 3), slice(1, 2), slice(1, 2), slice(1, 2))
    assert hd95(a, b, (1, 1, 1), labels=(1,))[0] == pytest.approx(math.sqrt(3))
    # the same shapes inside a larger zero array: nothing changes
    big_a, big_b = np.pad(a, 2), np.pad(b, 2)
    assert hd95(big_a, big_b, (1, 1, 1), labels=(1,))[0] == pytest.approx(math.sqrt(3))


def test_hd95_empty_conventions():
    empty = np.zeros((5, 5, 3), dtype=np.uint8)
    present = box((5, 5, 3), slice(1, 3), slice(1, 3), slice(0, 2), label=3)
    assert np.isnan(hd95(empty, empty, ANISOTROPIC)).all()
    for pred, target in ((present, empty), (empty, present)):
        result = hd95(pred, target, ANISOTROPIC)
        assert np.isnan(result[:2]).all() and result[2] == math.inf


@pytest.mark.parametrize("seed", range(6))
def test_hd95_matches_brute_force_on_random_volumes(seed):
    """Cropping to the union bounding box is exact, including masks touching the array border."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(5, 13, size=3))
    pred, target = random_labels(rng, shape), random_labels(rng, shape, smooth=1.5)
    if seed % 2:  # small, sparse objects away from each other as well
        pred[pred != 1] = 0
        target[target != 1] = 0
    spacing = tuple(rng.uniform(0.5, 10.0, size=3))
    expected = [brute_hd95(pred, target, spacing, label) for label in (1, 2, 3)]
    np.testing.assert_allclose(hd95(pred, target, spacing), expected, rtol=1e-12)
    np.testing.assert_array_equal(hd95(pred, target, spacing), hd95(target, pred, spacing))


@pytest.mark.parametrize("shape", [(11, 9), (6, 5, 4, 3)])
def test_hd95_matches_brute_force_in_other_dimensions(shape):
    rng = np.random.default_rng(len(shape))
    pred, target = random_labels(rng, shape), random_labels(rng, shape)
    spacing = tuple(rng.uniform(0.5, 4.0, size=len(shape)))
    expected = [brute_hd95(pred, target, spacing, label) for label in (1, 2, 3)]
    np.testing.assert_allclose(hd95(pred, target, spacing), expected, rtol=1e-12)


def test_hd95_is_translation_invariant():
    rng = np.random.default_rng(7)
    pred, target = random_labels(rng, (8, 7, 4)), random_labels(rng, (8, 7, 4))
    reference = hd95(pred, target, ANISOTROPIC)
    placed = [np.zeros((20, 18, 9), dtype=np.uint8) for _ in range(2)]
    for volume, source in zip(placed, (pred, target)):
        volume[9:17, 3:10, 5:9] = source
    np.testing.assert_allclose(hd95(*placed, ANISOTROPIC), reference, rtol=1e-12)


def test_hd95_accepts_torch_and_rejects_bad_arguments():
    volume = box((6, 6, 3), slice(1, 4), slice(1, 4), slice(0, 2))
    assert hd95(torch.from_numpy(volume), torch.from_numpy(volume), [1.25, 1.25, 10], labels=(1,)).tolist() == [0.0]
    with pytest.raises(ValueError, match=r"\(6, 6, 3\).*\(6, 6, 2\)"):
        hd95(volume, volume[..., :2], ANISOTROPIC)
    with pytest.raises(ValueError, match="float64"):
        hd95(volume.astype(np.float64), volume, ANISOTROPIC)
    for spacing in ((1.25, 1.25), (1.25, 1.25, 10, 1), 1.25, (1.25, 0.0, 10), (1.25, -1, 10), (1, math.nan, 1), ("a", 1, 1)):
        with pytest.raises(ValueError, match="spacing"):
            hd95(volume, volume, spacing)


# ---------------------------------------------------------------- largest component


def test_largest_component_per_class():
    volume = np.zeros((8, 8, 3), dtype=np.uint8)
    volume[0:2, 0:3, 0] = 1  # 6 voxels: kept
    volume[5:7, 5:7, 2] = 1  # 4 voxels: removed
    volume[0, 7, 1] = 2  # diagonal neighbours are separate components under face connectivity:
    volume[1, 6, 1] = 2  # equal sizes, the first in scan order ([0, 7, 1]) stays
    volume[4, 0:4, 1] = 3  # one component, kept whole
    volume[7, 0, 0] = 5  # not a scored label: left alone
    volume[7, 7, 0] = 5
    cleaned = largest_component_per_class(volume)
    expected = volume.copy()
    expected[5:7, 5:7, 2] = 0
    expected[1, 6, 1] = 0
    assert cleaned.dtype == volume.dtype
    np.testing.assert_array_equal(cleaned, expected)
    np.testing.assert_array_equal(volume[5:7, 5:7, 2], 1)  # the input is not modified
    np.testing.assert_array_equal(largest_component_per_class(cleaned), cleaned)  # idempotent


def test_largest_component_matches_full_array_labelling():
    rng = np.random.default_rng(3)
    volume = random_labels(rng, (10, 9, 6), smooth=0.7)
    cleaned = largest_component_per_class(volume)
    for label in (1, 2, 3):
        components, _ = ndimage.label(volume == label, structure=ndimage.generate_binary_structure(3, 1))
        sizes = np.bincount(components.ravel())[1:]
        kept = cleaned == label
        assert kept.sum() == sizes.max()
        assert len(np.unique(components[kept])) == 1
    assert (cleaned[volume == 4] == 4).all()
    assert ((cleaned == volume) | (cleaned == 0)).all()
