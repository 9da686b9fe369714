"""Mapping predictions back to the original grid: the exact inverse of the preprocessing resample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cmrssp.config import PrepareConfig
from cmrssp.data.prepare import prepare_subject
from cmrssp.data.subject import Subject
from cmrssp.prediction import logits_to_native, window_to_native_grid


def _disk_subject(shape, spacing, centre, radius_mm, box_border=0):
    """A 2-slice, 2-frame subject with an LV disk (1) in a myocardial ring (2), axis-aligned affine."""
    x0, x1 = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    distance = np.hypot((x0 - centre[0]) * spacing[0], (x1 - centre[1]) * spacing[1])
    plane = np.where(distance < radius_mm, 1, np.where(distance < radius_mm + 6, 2, 0)).astype(np.uint8)
    labels = np.repeat(np.repeat(plane[:, :, None, None], 2, axis=2), 2, axis=3)
    rng = np.random.default_rng(0)
    image = (rng.random(shape + (2, 2)) * 50 + 100 * (labels[..., :1] > 0)).astype(np.float32)
    if box_border:
        image[:box_border] = 0  # a zero border the content box crops away
        labels[:box_border] = 0
    affine = np.diag([spacing[0], spacing[1], 8.0, 1.0])
    return Subject(dataset="mnms", subject_id="P1", image=image, affine=affine, labels=labels,
                   label_frames=(0, 1), label_phases=("ED", "ES"), ed=0, es=1, vendor="A", pathology="NOR",
                   source=("/phantom.nii.gz",), extra={})


def _window_logits(prepared):
    """One-hot logits (Z, 4, S, S) of the stored canvas labels inside the evaluation window."""
    start, stop = prepared.meta.evaluation_window
    window = torch.from_numpy(prepared.labels[0, :, start:stop, start:stop].astype(np.int64))
    return F.one_hot(window, 4).permute(0, 3, 1, 2).float() * 10.0


def test_identity_geometry_maps_every_pixel_to_itself():
    # native spacing = target spacing and native size = S: the window is the image itself
    subject = _disk_subject((16, 16), (2.0, 2.0), centre=(7.0, 8.0), radius_mm=6)
    prepared = prepare_subject(subject, PrepareConfig(spacing=2.0, size=16, canvas=24))
    grid = window_to_native_grid(prepared.meta)
    j = torch.arange(16, dtype=torch.float32)
    expected = (2 * j + 1) / 16 - 1
    assert torch.allclose(grid[0, :, 0, 1], expected) and torch.allclose(grid[0, 0, :, 0], expected)
    native = logits_to_native(_window_logits(prepared), prepared.meta).argmax(dim=1)
    assert torch.equal(native.permute(1, 2, 0).to(torch.uint8), torch.from_numpy(subject.labels[..., 0]))


@pytest.mark.parametrize("spacing,shape,border", [((1.25, 1.25), (48, 40), 0), ((1.1, 1.4), (50, 36), 3)])
def test_round_trip_through_the_network_grid_keeps_structures_in_place(spacing, shape, border):
    # native 1.1-1.4 mm -> 2 mm network grid -> back: the disk comes back where it was (no shift)
    centre = (shape[0] / 2 + 4.3, shape[1] / 2 - 3.1)
    subject = _disk_subject(shape, spacing, centre=centre, radius_mm=9, box_border=border)
    prepared = prepare_subject(subject, PrepareConfig(spacing=2.0, size=32, canvas=48))
    native = logits_to_native(_window_logits(prepared), prepared.meta).argmax(dim=1).permute(1, 2, 0).numpy()
    truth = subject.labels[..., 0]
    assert native.shape == truth.shape
    for label in (1, 2):
        overlap = 2 * ((native == label) & (truth == label)).sum() / ((native == label).sum() + (truth == label).sum())
        assert overlap > 0.85


@pytest.mark.parametrize("spacing,shape,border", [((1.25, 1.25), (48, 40), 0), ((1.1, 1.4), (50, 36), 3)])
def test_inverse_is_exact_for_coordinate_fields(spacing, shape, border):
    # Fill the window with the native coordinate each window pixel was sampled from (the forward
    # map x = scale * k + offset); mapped back, every native pixel inside the window must read
    # its own coordinate: exactly with bilinear interpolation (which reproduces linear fields),
    # and within PyTorch's bicubic kernel's (a = -0.75) small periodic error, with no drift.
    subject = _disk_subject(shape, spacing, centre=(20.0, 18.0), radius_mm=9, box_border=border)
    prepared = prepare_subject(subject, PrepareConfig(spacing=2.0, size=32, canvas=48))
    meta = prepared.meta
    start = meta.evaluation_window[0]
    scale, offset = (np.asarray(getattr(meta.grid, name)) for name in ("scale", "offset"))
    k = np.arange(start, start + 32, dtype=np.float64)
    logits = torch.zeros(1, 4, 32, 32)
    logits[0, 0] = torch.from_numpy(scale[0] * k + offset[0])[:, None].float().expand(32, 32)
    logits[0, 1] = torch.from_numpy(scale[1] * k + offset[1])[None, :].float().expand(32, 32)
    native = logits_to_native(logits, meta, mode="bilinear")[0]
    cubic = logits_to_native(logits, meta)[0]
    x0, x1 = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    # pixels at least 2 window pixels inside the window (away from border-padding effects)
    lo = [offset[i] + scale[i] * (start + 2) for i in (0, 1)]
    hi = [offset[i] + scale[i] * (start + 29) for i in (0, 1)]
    inside = (x0 >= lo[0]) & (x0 <= hi[0]) & (x1 >= lo[1]) & (x1 <= hi[1])
    assert inside.sum() > 100
    assert np.abs(native[0].numpy()[inside] - x0[inside]).max() < 1e-3
    assert np.abs(native[1].numpy()[inside] - x1[inside]).max() < 1e-3
    error = cubic[0].numpy()[inside] - x0[inside]
    assert np.abs(error).max() < 0.1 and abs(error.mean()) < 0.01


def test_outside_the_field_of_view_takes_the_border_logits():
    # a native image wider than the network's field of view: far pixels copy the window edge
    subject = _disk_subject((40, 40), (2.0, 2.0), centre=(20.0, 20.0), radius_mm=6)
    prepared = prepare_subject(subject, PrepareConfig(spacing=2.0, size=16, canvas=24))
    logits = torch.zeros(2, 4, 16, 16)
    logits[:, 3, :, 0] = 5.0  # class 3 along the window's first column only
    native = logits_to_native(logits, prepared.meta).argmax(dim=1)[0]
    offset = (40 - 16) // 2
    assert (native[:, :offset] == 3).all()  # everything left of the window
    assert (native[:, offset + 2 :] == 0).all()


def test_first_max_class_is_argmax_with_ties_to_the_lower_class():
    import torch

    from cmrssp.prediction import first_max_class

    logits = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    logits[0, 2] = logits[0, 1]  # exact ties: argmax takes the first
    logits[1] = 0.0
    labels = first_max_class(logits)
    assert labels.dtype == torch.uint8 and torch.equal(labels.long(), logits.argmax(dim=1))
