"""Tests of cmrssp.data.slices: cache -> slice tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmrssp.config import PrepareConfig
from cmrssp.data.cache import open_cache
from cmrssp.data.prepare import prepare_cache
from cmrssp.data.slices import _copy_into, load_slices
from cmrssp.data.subject import Subject
from cmrssp.errors import InputError

CONFIG = PrepareConfig(spacing=1.25, size=16, canvas=24)


def _same(subject):
    return subject


def _subject(subject_id, shape, ed, es, labelled=True, seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random(shape) * 50 + 1).astype(np.float32)
    labels = None
    if labelled:
        labels = np.zeros(shape[:3] + (2,), dtype=np.uint8)
        labels[6:12, 5:11, : shape[2] - 1, :] = 1
        labels[7:9, 6:9, 0, 1] = 3
    return Subject(
        dataset="mnms",
        subject_id=subject_id,
        image=image,
        affine=np.diag([1.5, 1.4, 9.0, 1.0]),
        labels=labels,
        label_frames=(ed, es) if labelled else (),
        label_phases=("ED", "ES") if labelled else (),
        ed=ed,
        es=es,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache")
    subjects = [
        _subject("A", (20, 18, 3, 4), ed=1, es=3, seed=1),
        _subject("B", (18, 20, 5, 6), ed=0, es=2, seed=2),
        _subject("U", (19, 17, 2, 3), ed=None, es=None, labelled=False, seed=3),
    ]
    prepare_cache(subjects, folder, CONFIG, loader=_same, progress=False)
    return open_cache(folder)


def test_segmentation_slices(cache):
    keys = ["mnms-B", "mnms-A"]
    slices = load_slices(cache, keys, "segmentation")
    assert len(slices) == 2 * 5 + 2 * 3
    assert slices.keys == tuple(keys) and slices.kind == "segmentation"
    assert slices.images.dtype == torch.float16 and slices.images.shape == (16, 24, 24)
    assert slices.labels.dtype == torch.uint8 and slices.labels.shape == (16, 24, 24)
    assert slices.subject.dtype == torch.int64
    assert slices.subject.tolist() == [0] * 10 + [1] * 6
    # Subject B (ED 0, ES 2, T 6): label volume, then slice.
    assert slices.frame[:10].tolist() == [0] * 5 + [2] * 5
    assert slices.frame_from_ed[:10].tolist() == [0] * 5 + [2] * 5
    assert slices.slice_index[:10].tolist() == list(range(5)) * 2
    assert slices.phase.dtype == torch.int8 and slices.phase[:10].tolist() == [0] * 5 + [1] * 5
    # Subject A (ED 1, ES 3, T 4): frame_from_ed = (t - 1) mod 4.
    assert slices.frame[10:].tolist() == [1] * 3 + [3] * 3
    assert slices.frame_from_ed[10:].tolist() == [0] * 3 + [2] * 3

    for number, key in enumerate(keys):
        meta = cache.meta(key)
        rows = (slices.subject == number).numpy()
        image, labels = np.asarray(cache.image(key)), np.asarray(cache.labels(key))
        expected_images = image[list(meta.label_frames)].reshape(-1, 24, 24)
        np.testing.assert_array_equal(slices.images[rows].numpy(), expected_images)
        np.testing.assert_array_equal(slices.labels[rows].numpy(), labels.reshape(-1, 24, 24))
        positions = np.tile(np.asarray(meta.slice_positions, dtype=np.float32), 2)
        np.testing.assert_array_equal(slices.position[rows].numpy(), positions)
        assert slices.position.dtype == torch.float32
        np.testing.assert_allclose(slices.centre[rows].numpy(), np.tile(meta.heart_centre_canvas, (rows.sum(), 1)), rtol=1e-6)
        np.testing.assert_allclose(slices.background[rows].numpy(), meta.background_value, rtol=1e-6)
        np.testing.assert_allclose(slices.max_value[rows].numpy(), meta.standardized_max, rtol=1e-6)


def test_pretraining_slices(cache):
    keys = ["mnms-A", "mnms-U", "mnms-B"]
    slices = load_slices(cache, keys, "pretraining")
    assert len(slices) == 4 * 3 + 3 * 2 + 6 * 5
    assert slices.labels is None
    # Subject A: every frame x every slice, frame-major.
    assert slices.frame[:12].tolist() == [t for t in range(4) for _ in range(3)]
    assert slices.frame_from_ed[:12].tolist() == [(t - 1) % 4 for t in range(4) for _ in range(3)]
    assert slices.phase[:12].tolist() == [-1] * 3 + [0] * 3 + [-1] * 3 + [1] * 3
    # Subject U: ED unknown, so frame_from_ed is the frame; no heart centre.
    rows = (slices.subject == 1).numpy()
    assert slices.frame_from_ed[rows].tolist() == slices.frame[rows].tolist() == [0, 0, 1, 1, 2, 2]
    assert slices.phase[rows].tolist() == [-1] * 6
    assert torch.isnan(slices.centre[rows]).all()
    for number, key in enumerate(keys):
        rows = (slices.subject == number).numpy()
        np.testing.assert_array_equal(slices.images[rows].numpy(), np.asarray(cache.image(key)).reshape(-1, 24, 24))


def test_select_and_to(cache):
    slices = load_slices(cache, ["mnms-A", "mnms-B"], "segmentation")
    picked = slices.select([3, 0, 15])
    assert len(picked) == 3 and picked.keys == slices.keys
    torch.testing.assert_close(picked.images, slices.images[[3, 0, 15]])
    torch.testing.assert_close(picked.labels, slices.labels[[3, 0, 15]])
    assert picked.frame.tolist() == [slices.frame[i].item() for i in (3, 0, 15)]
    masked = slices.select(slices.phase == 1)
    assert len(masked) == 8 and (masked.phase == 1).all()
    moved = slices.to("cpu")
    assert moved.images.device.type == "cpu" and len(moved) == len(slices)
    empty = load_slices(cache, [], "pretraining")
    assert len(empty) == 0 and empty.centre.shape == (0, 2)


def test_staged_copy_for_accelerators():
    # Off the CPU the memory-mapped block is copied through a host array; check that path here.
    destination = torch.zeros((5, 2, 2), dtype=torch.float16)
    source = np.arange(12, dtype=np.float16).reshape(3, 2, 2)
    _copy_into(destination, slice(1, 4), source, on_cpu=False)
    np.testing.assert_array_equal(destination[1:4].numpy(), source)
    assert destination[0].abs().sum() == 0 and destination[4].abs().sum() == 0


def test_errors(cache):
    with pytest.raises(InputError, match="no labels"):
        load_slices(cache, ["mnms-U"], "segmentation")
    with pytest.raises(InputError, match="not in this cache"):
        load_slices(cache, ["mnms-Z"], "pretraining")
    with pytest.raises(ValueError, match="kind"):
        load_slices(cache, ["mnms-A"], "classification")


def test_slices_stay_on_the_gpu_only_when_they_fit(cache, monkeypatch):
    from cmrssp.data.slices import resident_device

    labelled = cache.subjects(labelled=True)
    keys = [labelled]
    assert resident_device(cache, keys, "segmentation", "cpu") == torch.device("cpu")
    slices = load_slices(cache, labelled, "segmentation")
    needed = len(slices) * cache.config.canvas_size**2 * 3
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * needed, 8 * needed))
    assert resident_device(cache, keys, "segmentation", "cuda:0") == torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (needed, 8 * needed))
    assert resident_device(cache, keys, "segmentation", "cuda:0") == torch.device("cpu")  # would fill half
