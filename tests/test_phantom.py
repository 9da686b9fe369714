"""Synthetic cohort (cmrssp/data/phantom*.py): determinism, anatomy, calibration, on-disk layouts.

Uses the tiny preset (56-64 px, 5-8 slices, 5-8 frames; well under 0.2 s a subject), one
default-preset subject for the checks that need realistic sampling (myocardial mass, contrast),
and a small noise-free heart rendered directly (``render_heart``) for the invariants of the
features calibrated against real ACDC (trabeculae and papillary muscles inside the LV label,
wall profile, label margins, compaction at ES). Expected values come from docs/phantom.md,
docs/data-formats.md 1.2-1.4 and the ACDC measurements of benchmarks/phantom_vs_real.py (the
calibration constants of phantom_heart.py / phantom.py). The speed-ups (pixel lists, plane-wise
noise, arrays filled in the stored layout) are checked to change no value, bit for bit, against
the plain computations.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.fft
from scipy import ndimage

import dataclasses

from cmrssp.data import phantom, phantom_acquisition
from cmrssp.data.phantom import BLOOD_MYO_LIMITS, LAYOUTS, PHANTOM_PRESETS, PhantomSubject, generate_subject, write_cohort
from cmrssp.data.phantom_geometry import NOMINAL_LONG_AXIS
from cmrssp.data.phantom_heart import (
    PHENOTYPE_RANGES,
    HeartScene,
    draw_heart,
    draw_texture,
    heart_motion,
    render_heart,
)
from cmrssp.errors import InputError

TINY = PHANTOM_PRESETS["tiny"]
SEED = 0
N_COHORT = 8
QA_COLUMNS = [
    "subject_id", "vendor", "pathology", "n_slices", "n_frames", "spacing_mm", "slice_spacing_mm", "ed", "es",
    "lv_edv_ml", "lv_esv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_ef_pct", "myo_mass_ed_g", "myo_mass_es_g",
    "lv_slices_ed", "rv_slices_ed",
]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """One tiny cohort per layout (mnms with 2 worker processes)."""
    root = tmp_path_factory.mktemp("phantom")
    return {
        layout: (root / layout, write_cohort(root / layout, N_COHORT, seed=SEED, layout=layout, preset="tiny",
                                             workers=2 if layout == "mnms" else 1, progress=False))
        for layout in LAYOUTS
    }


@pytest.fixture(scope="module")
def tiny_subjects() -> list[PhantomSubject]:
    return [generate_subject(SEED, i, TINY, "mnms") for i in range(24)]


@pytest.fixture(scope="module")
def default_subject() -> PhantomSubject:
    return generate_subject(SEED, 1, PHANTOM_PRESETS["default"], "mnms")


def base_to_apex(subject: PhantomSubject) -> np.ndarray:
    """Labels (X, Y, Z, T) with slices ordered base -> apex, whatever the vendor's order."""
    return subject.labels if subject.qa["slice_order"] == "base_to_apex" else subject.labels[:, :, ::-1]


def read(path: Path) -> nib.Nifti1Image:
    assert path.is_file(), path
    return nib.load(str(path))


# --- determinism -------------------------------------------------------------------------------


def test_same_seed_same_subject_and_different_seed_or_index_differs():
    first, again = generate_subject(7, 3, TINY), generate_subject(7, 3, TINY)
    assert np.array_equal(first.image, again.image) and np.array_equal(first.labels, again.labels)
    assert np.array_equal(first.affine, again.affine) and first.qa == again.qa
    for other in (generate_subject(8, 3, TINY), generate_subject(7, 4, TINY)):
        assert other.image.shape != first.image.shape or not np.array_equal(other.image, first.image)


def test_subject_identical_alone_and_in_a_parallel_cohort(cohorts):
    root, rows = cohorts["mnms"]
    for index in (0, N_COHORT - 1):
        alone = generate_subject(SEED, index, TINY, "mnms")
        assert rows[index]["subject_id"] == alone.subject_id
        stored = read(root / "dataset" / alone.subject_id / f"{alone.subject_id}_sa.nii.gz")
        assert np.array_equal(np.asanyarray(stored.dataobj).astype(np.float32), alone.image)
        assert np.allclose(stored.affine, alone.affine)
        qa_labels = read(root / "phantom_qa" / f"{alone.subject_id}_labels.nii.gz")
        assert np.array_equal(np.asanyarray(qa_labels.dataobj), alone.labels)


def test_tiny_preset_is_fast():
    start = time.perf_counter()
    for index in range(5):
        generate_subject(1, index, TINY)
    assert (time.perf_counter() - start) / 5 < 0.5  # about 0.03 s each on a 2-core VM


# --- anatomy and labels ------------------------------------------------------------------------


def test_subject_record_shapes_and_types(tiny_subjects):
    for subject in tiny_subjects:
        x, y, z, t = subject.image.shape
        assert subject.image.dtype == np.float32 and subject.labels.dtype == np.uint8
        assert subject.labels.shape == subject.image.shape
        assert 48 <= min(x, y) and max(x, y) <= 64 and 5 <= z <= 8 and 5 <= t <= 8
        assert set(np.unique(subject.labels)) <= {0, 1, 2, 3}
        assert 0 <= subject.ed < t and 0 <= subject.es < t and subject.ed != subject.es
        # Labels are kept at every frame, not only at ED and ES.
        assert all((subject.labels[..., frame] == 1).any() for frame in range(t))


def test_empty_slices_above_base_and_below_apex_at_ed(tiny_subjects):
    for subject in tiny_subjects:
        labels = base_to_apex(subject)[..., subject.ed]
        labelled = np.flatnonzero(labels.any(axis=(0, 1)))
        assert labelled[0] > 0, "the most basal slice (above the base) must be empty"
        assert labelled[-1] < labels.shape[2] - 1, "the most apical slice (below the apex) must be empty"
        assert np.array_equal(labelled, np.arange(labelled[0], labelled[-1] + 1))


def test_rv_from_the_base_toward_the_apex(tiny_subjects):
    """The RV starts at (or a slice below) the LV base and never outlasts the LV. It reaches far
    toward the apex (ACDC: RV in the most apical labelled slice in 49 %), but not into the apical
    cap slice that M&Ms-like stacks include."""
    absent_at_apex = 0
    for subject in tiny_subjects:
        labels = base_to_apex(subject)[..., subject.ed]
        heart = np.flatnonzero(np.isin(labels, (1, 2)).any(axis=(0, 1)))
        rv = np.flatnonzero((labels == 3).any(axis=(0, 1)))
        assert len(rv) >= 2 and heart[0] <= rv[0] <= heart[0] + 1, "the RV starts at the base"
        assert rv[-1] <= heart[-1]
        absent_at_apex += rv[-1] < heart[-1]
    assert absent_at_apex >= 0.8 * len(tiny_subjects), "no RV in the apical cap slice"


def test_myocardium_surrounds_the_lv_blood_pool(default_subject, tiny_subjects):
    for subject, minimum in [(default_subject, 0.97)] + [(s, 0.9) for s in tiny_subjects]:
        for frame in (subject.ed, subject.es):
            labels = subject.labels[..., frame]
            lv = labels == 1
            neighbours = [np.roll(labels, shift, axis) for axis in (0, 1) for shift in (1, -1)]
            good = sum(np.count_nonzero(lv & np.isin(n, (1, 2))) for n in neighbours)
            assert good / (4 * np.count_nonzero(lv)) >= minimum
            # The myocardium is centred on the LV cavity, away from the RV.
            centre = lambda label: np.array(np.nonzero(labels == label)).mean(axis=1)  # noqa: E731
            spacing = np.linalg.norm(subject.affine[:3, :2], axis=0)
            assert np.linalg.norm((centre(2) - centre(1))[:2] * spacing) < 8.0


def test_ed_has_the_largest_and_es_the_smallest_lv(tiny_subjects):
    for subject in tiny_subjects:
        lv = (subject.labels == 1).sum(axis=(0, 1, 2))
        assert lv[subject.ed] >= 0.99 * lv.max() and lv[subject.es] <= 1.01 * lv.min()


def test_ejection_fractions_by_phenotype(tiny_subjects):
    """Volumes and EFs follow the ACDC groups' 10th-90th percentiles (PHENOTYPE_RANGES), measured
    on the labels: the LV and RV are calibrated on their label volumes (one coarse voxel apart)."""
    phenotypes = {subject.qa["phenotype"] for subject in tiny_subjects}
    assert {"NOR", "DCM", "HCM"} <= phenotypes
    for subject in tiny_subjects:
        qa = subject.qa
        ranges = PHENOTYPE_RANGES[qa["phenotype"]]
        lv_ef, rv_ef = qa["lv_ef_pct"], qa["rv_ef_pct"]
        assert abs(lv_ef - qa["target_lv_ef_pct"]) < 2.0, "LV calibrated on the label volumes"
        assert abs(rv_ef - qa["target_rv_ef_pct"]) < 3.0, "RV calibrated on its own volume curve"
        low, high = ranges["lv_ef"]
        assert 100 * low - 2 <= lv_ef <= 100 * high + 2
        low, high = ranges["lv_edv"]
        assert 0.97 * low <= qa["lv_edv_ml"] <= 1.03 * high
        low, high = ranges["rv_lv"]
        assert 0.95 * low <= qa["rv_edv_ml"] / qa["lv_edv_ml"] <= 1.05 * high
        if qa["phenotype"] == "NOR":
            assert 50 <= lv_ef <= 70
        elif qa["phenotype"] in ("DCM", "MINF"):
            assert lv_ef < 45
        elif qa["phenotype"] == "RVD":
            assert rv_ef < 47 and qa["rv_edv_ml"] > qa["lv_edv_ml"]


def test_qa_volumes_match_the_labels(tiny_subjects):
    subject = tiny_subjects[0]
    voxel_ml = abs(np.linalg.det(subject.affine[:3, :3])) / 1000
    assert subject.qa["lv_edv_ml"] == pytest.approx((subject.labels[..., subject.ed] == 1).sum() * voxel_ml, abs=0.01)
    assert subject.qa["myo_mass_es_g"] == pytest.approx((subject.labels[..., subject.es] == 2).sum() * voxel_ml * 1.05,
                                                        abs=0.01)


def test_myocardial_mass_conserved(normal_heart, default_subject, tiny_subjects):
    """The drawn wall is incompressible: on a dense stack over the whole heart, without the ES
    compaction band and the label margin (label conventions), the labelled mass is conserved.
    With them (and coarse sampling) the labels gain a little at ES, as ACDC's do (ES/ED 1.15)."""
    heart = dataclasses.replace(normal_heart, myo_es_gain=0.0, label_margin=0.0, rv_label_margin=0.0)
    motion = heart_motion(heart, 6)
    depths = np.arange(-8.0, heart.apex_depth + 6.0, 4.0)
    half = int(np.ceil((2.0 * (heart.nominal_radius + heart.wall) + 12.0) / 1.5))
    coords = (np.arange(-half, half + 1) * 1.5).astype(np.float32)
    shape = (len(depths), len(coords), len(coords))
    right = np.ascontiguousarray(np.broadcast_to(coords[None, :, None], shape))
    anterior = np.ascontiguousarray(np.broadcast_to(coords[None, None, :], shape))
    ones = np.ones(shape, np.float32)
    scene = HeartScene(right=right, anterior=anterior, slice_depth=depths, sub_offsets=np.zeros(1),
                       sub_weights=np.ones(1), pixel=1.5, slice_spacing=4.0, background=0.05 * ones,
                       blood_texture=ones, rv_texture=ones, blood=1.0, myocardium=0.35, fat=0.95, shell=0.3)
    _, labels, _ = render_heart(heart, motion, scene, draw_texture(np.random.default_rng(3), heart, depths))
    assert np.count_nonzero(labels[motion.es] == 2) == pytest.approx(np.count_nonzero(labels[0] == 2), rel=0.04)
    qa = default_subject.qa
    assert 0.97 < qa["myo_mass_es_g"] / qa["myo_mass_ed_g"] < 1.15
    for subject in tiny_subjects:  # 4-5 mm pixels and 14-18 mm slices sample coarsely
        assert abs(subject.qa["myo_mass_es_g"] / subject.qa["myo_mass_ed_g"] - 1) < 0.35


def test_blood_to_myocardium_contrast(default_subject, tiny_subjects):
    """Drawn around ACDC's measured 2.53 [2.06, 2.94] (BLOOD_MYO_LIMITS); trabeculae and
    papillary muscles inside the blood pool lower the measured median a little."""
    assert all(BLOOD_MYO_LIMITS[0] <= s.qa["blood_myo_ratio"] <= BLOOD_MYO_LIMITS[1] for s in tiny_subjects)
    subject = default_subject
    labels, image = subject.labels[..., subject.ed], subject.image[..., subject.ed]
    mid = np.flatnonzero((labels == 1).any(axis=(0, 1)))
    mid = mid[len(mid) // 4: -len(mid) // 4 or None]  # mid-ventricular slices
    blood, muscle = [], []
    for z in mid:
        blood.append(image[..., z][ndimage.binary_erosion(labels[..., z] == 1, iterations=2)])
        muscle.append(image[..., z][ndimage.binary_erosion(labels[..., z] == 2, iterations=1)])
    ratio = np.median(np.concatenate(blood)) / np.median(np.concatenate(muscle))
    assert 1.4 <= ratio <= 4.2, ratio  # the drawn ratio, lowered by blur, Rician bias and trabeculae
    assert ratio == pytest.approx(subject.qa["blood_myo_ratio"], rel=0.3)


# --- geometry ----------------------------------------------------------------------------------


def test_affine_slice_axis_follows_the_long_axis(tiny_subjects):
    nominal = NOMINAL_LONG_AXIS / np.linalg.norm(NOMINAL_LONG_AXIS)
    orders = set()
    for subject in tiny_subjects:
        columns = subject.affine[:3, :3]
        k = columns[:, 2] / np.linalg.norm(columns[:, 2])
        sign = 1 if subject.qa["slice_order"] == "base_to_apex" else -1
        orders.add(sign)
        assert sign * k @ nominal > np.cos(np.deg2rad(25)), "k points base->apex (or apex->base) near the nominal axis"
        assert abs(columns[:, 0] @ k) < 1e-6 and abs(columns[:, 1] @ k) < 1e-6 and abs(columns[:, 0] @ columns[:, 1]) < 1e-6
        assert np.linalg.norm(columns[:, 0]) == pytest.approx(subject.qa["spacing_mm"], abs=1e-3)
        # The labels agree: the LV centroid moves toward the apex along the nominal axis.
        labels = subject.labels[..., subject.ed]
        slices = np.flatnonzero((labels == 1).any(axis=(0, 1)))
        ends = [np.append(np.array(np.nonzero(labels[..., z] == 1)).mean(axis=1), z) for z in (slices[0], slices[-1])]
        world = [subject.affine[:3, :3] @ end + subject.affine[:3, 3] for end in ends]
        base, apex = (world[0], world[1]) if sign == 1 else (world[1], world[0])
        assert (apex - base) @ nominal > 0
    assert orders == {1, -1}, "both slice orders occur"


def test_spacing_and_storage_follow_the_vendors(tiny_subjects):
    storages = set()
    for subject in tiny_subjects:
        assert 4.0 <= subject.qa["spacing_mm"] <= 4.8 and 14.0 <= subject.qa["slice_spacing_mm"]
        # The spacing widens beyond the preset's only when the heart needs more than its 8 slices.
        assert subject.qa["slice_spacing_mm"] <= 18.0 + 1e-6 or subject.qa["n_slices"] == 8
        storages.add(subject.storage_dtype)
        if subject.storage_dtype == "int16":
            assert np.array_equal(subject.image, np.rint(subject.image)) and 300 <= subject.image.max() <= 4000
            assert subject.image.min() >= 0
    assert storages == {"int16", "float32"}


def test_one_vendor_pads_its_matrix_with_exact_zeros(tiny_subjects):
    def zero_border(image: np.ndarray, axis: int, rows: int) -> bool:
        ends = np.take(image, list(range(rows)) + list(range(-rows, 0)), axis=axis)
        return bool(np.all(ends == 0))

    padded = {subject.vendor for subject in tiny_subjects if subject.qa["zero_pad_px"] > 0}
    assert len(padded) == 1 and len({subject.vendor for subject in tiny_subjects}) > 1
    for subject in tiny_subjects:
        rows = subject.qa["zero_pad_px"]
        has_border = any(zero_border(subject.image, axis, max(rows, 1)) for axis in (0, 1))
        assert has_border == (rows > 0)


def test_default_preset_is_realistic(default_subject):
    x, y, z, t = default_subject.image.shape
    qa = default_subject.qa
    assert 192 <= min(x, y) and max(x, y) <= 320 and 8 <= z <= 14 and 18 <= t <= 35
    assert 1.15 <= qa["spacing_mm"] <= 1.6 and 8.0 <= qa["slice_spacing_mm"] <= 10.0
    assert 6 <= qa["lv_slices_ed"] < z and qa["rv_slices_ed"] < qa["lv_slices_ed"]


# --- cohort files ------------------------------------------------------------------------------


def test_mnms_layout(cohorts):
    root, rows = cohorts["mnms"]
    with open(root / "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["", "External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Age", "Pathology", "Sex",
                        "Height", "Weight"]
    assert [row[0] for row in table[1:]] == [str(i) for i in range(N_COHORT)]
    codes = [row[1] for row in table[1:]]
    assert len(set(codes)) == N_COHORT and all(re.fullmatch(r"[A-Z]\d[A-Z]\d[A-Z]\d", code) for code in codes)
    names = {"A": "Siemens", "B": "Philips", "C": "GE", "D": "Canon"}
    for row, qa in zip(table[1:], rows):
        assert row[1] == qa["subject_id"] and names[row[3]] == row[2] and int(row[5]) == qa["ed"]
        assert row[8] in ("NOR", "DCM", "HCM", "ARV", "IHD") and row[9] in ("M", "F")
        folder = root / "dataset" / row[1]
        assert sorted(p.name for p in folder.iterdir()) == [f"{row[1]}_sa.nii.gz", f"{row[1]}_sa_gt.nii.gz"]
        image, gt = read(folder / f"{row[1]}_sa.nii.gz"), read(folder / f"{row[1]}_sa_gt.nii.gz")
        assert gt.shape == image.shape and gt.get_data_dtype() == np.uint8 and np.allclose(gt.affine, image.affine)
        labelled = np.flatnonzero(np.asanyarray(gt.dataobj).any(axis=(0, 1, 2)))
        assert sorted(labelled) == sorted([qa["ed"], qa["es"]])
        assert image.get_data_dtype() == (np.int16 if qa["storage"] == "int16" else np.float32)
    assert any(qa["ed"] != 0 for qa in rows), "vendors store ED late, not always at frame 0"


def test_mnms2_layout(cohorts):
    root, rows = cohorts["mnms2"]
    lines = (root / "dataset_information.csv").read_text().splitlines()
    assert lines[0] == "SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD"
    assert lines[1 + N_COHORT:] == [",,,,"] * (len(lines) - 1 - N_COHORT) and len(lines) - 1 - N_COHORT >= 10
    for number, line in enumerate(lines[1: 1 + N_COHORT], start=1):
        code, disease, vendor, _, field = line.split(",")
        assert int(code) == number
        assert disease in ("NOR", "LV", "HCM", "ARR", "FALL", "CIA", "TRI", "RV")
        assert vendor in ("SIEMENS", "Philips Medical Systems", "GE MEDICAL SYSTEMS") and float(field) in (1.5, 3.0)
    for qa in rows:
        sid = qa["subject_id"]
        folder = root / "dataset" / sid
        cine = read(folder / f"{sid}_SA_CINE.nii.gz")
        data = np.asanyarray(cine.dataobj)
        for phase in ("ED", "ES"):
            frame = read(folder / f"{sid}_SA_{phase}.nii.gz")
            assert frame.get_data_dtype() == cine.get_data_dtype() and np.allclose(frame.affine, cine.affine)
            assert np.array_equal(np.asanyarray(frame.dataobj), data[..., qa[phase.lower()]]), "frame copied exactly"
            assert read(folder / f"{sid}_SA_{phase}_gt.nii.gz").shape == cine.shape[:3]
        long_axis = read(folder / f"{sid}_LA_CINE.nii.gz")
        assert long_axis.shape[2] == 1 and long_axis.shape[3] == cine.shape[3]
        assert read(folder / f"{sid}_LA_ED.nii.gz").shape[2] == 1


def test_acdc_layout(cohorts):
    root, rows = cohorts["acdc"]
    for qa in rows:
        sid = qa["subject_id"]
        folder = root / "training" / sid
        info = dict(line.split(": ") for line in (folder / "Info.cfg").read_text().splitlines())
        assert list(info) == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        assert int(info["ED"]) == qa["ed"] + 1 and int(info["ES"]) == qa["es"] + 1 and int(info["NbFrame"]) == qa["n_frames"]
        assert info["Group"] in ("NOR", "MINF", "DCM", "HCM", "RV") and float(info["Height"]) > 0
        cine = np.asanyarray(read(folder / f"{sid}_4d.nii.gz").dataobj)
        canonical = np.asanyarray(read(root / "phantom_qa" / f"{sid}_labels.nii.gz").dataobj)
        for frame in (qa["ed"], qa["es"]):
            image = read(folder / f"{sid}_frame{frame + 1:02d}.nii.gz")
            assert np.array_equal(np.asanyarray(image.dataobj), cine[..., frame])
            acdc = np.asanyarray(read(folder / f"{sid}_frame{frame + 1:02d}_gt.nii.gz").dataobj)
            assert np.array_equal(acdc == 3, canonical[..., frame] == 1), "ACDC: LV is 3"
            assert np.array_equal(acdc == 1, canonical[..., frame] == 3), "ACDC: RV is 1"
            assert np.array_equal(acdc == 2, canonical[..., frame] == 2)


def test_qa_files(cohorts):
    for layout, (root, rows) in cohorts.items():
        with open(root / "phantom_qa.csv", newline="") as handle:
            table = list(csv.DictReader(handle))
        assert list(table[0])[: len(QA_COLUMNS)] == QA_COLUMNS
        assert [row["subject_id"] for row in table] == [row["subject_id"] for row in rows]
        assert float(table[0]["lv_ef_pct"]) == rows[0]["lv_ef_pct"]
        assert len(list((root / "phantom_qa").glob("*_labels.nii.gz"))) == N_COHORT
        labels = read(root / "phantom_qa" / f"{rows[0]['subject_id']}_labels.nii.gz")
        assert labels.get_data_dtype() == np.uint8 and labels.shape[3] == rows[0]["n_frames"]
    pytest.importorskip("matplotlib")
    assert (cohorts["mnms"][0] / "phantom_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_cohort_rejects_bad_requests(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something.txt").write_text("x")
    with pytest.raises(InputError, match="not an empty folder"):
        write_cohort(tmp_path / "full", 1, preset="tiny", progress=False)
    with pytest.raises(InputError, match="layout"):
        write_cohort(tmp_path / "new", 1, layout="kaggle", preset="tiny", progress=False)
    with pytest.raises(InputError, match="preset"):
        write_cohort(tmp_path / "new", 1, preset="huge", progress=False)
    with pytest.raises(InputError):
        generate_subject(0, 0, TINY, layout="nope")
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    rows = write_cohort(empty, 1, preset="tiny", layout="acdc", progress=False)
    assert (empty / "training" / rows[0]["subject_id"] / "Info.cfg").is_file()


# --- realism features calibrated against ACDC (noise-free heart rendered directly) --------------


def render_small(heart, texture=None, n_frames: int = 6, pixel: float = 1.5, seed: int = 1):
    """Render ``heart`` noise-free on 5 slices (base to near the apex), one sub-slice each.

    Returns (signal, labels, depths, texture): float32 / uint8 (T, Z, H, W) in phase order.
    """
    motion = heart_motion(heart, n_frames)
    depths = np.linspace(0.15, 0.85, 5) * heart.length + heart.base_descent
    radius = 2.0 * (heart.nominal_radius + heart.wall) * max(1.0, (heart.rv_edv / heart.lv_edv) ** 0.5) + 12.0
    half = int(np.ceil((radius + heart.shell + heart.outer_fat) / pixel))
    coords = (np.arange(-half, half + 1) * pixel).astype(np.float32)
    shape = (len(depths), len(coords), len(coords))
    right = np.ascontiguousarray(np.broadcast_to(coords[None, :, None], shape))
    anterior = np.ascontiguousarray(np.broadcast_to(coords[None, None, :], shape))
    ones = np.ones(shape, np.float32)
    scene = HeartScene(right=right, anterior=anterior, slice_depth=depths, sub_offsets=np.zeros(1),
                       sub_weights=np.ones(1), pixel=pixel, slice_spacing=10.0, background=0.05 * ones,
                       blood_texture=ones, rv_texture=ones, blood=1.0, myocardium=0.35, fat=0.95, shell=0.3)
    texture = texture if texture is not None else draw_texture(np.random.default_rng(seed), heart, depths)
    signal, labels, _ = render_heart(heart, motion, scene, texture)
    return signal, labels, depths, texture


@pytest.fixture(scope="module")
def normal_heart():
    return draw_heart(np.random.default_rng(11), "NOR", True)


def _no_trabeculae(texture, lv: bool = True, rv: bool = True):
    zeros = np.zeros_like(texture.trabeculae)
    if lv:
        texture = dataclasses.replace(texture, trabeculae=zeros, trabecula_gaps=zeros)
    if rv:
        texture = dataclasses.replace(texture, rv_trabeculae=zeros, rv_trabecula_gaps=zeros)
    return texture


def test_trabeculae_and_papillary_muscles_darken_only_the_lv_label(normal_heart):
    """ACDC rule: papillary muscles and trabeculae belong to the cavity. Removing them changes no
    label, and the image changes only inside the LV label (up to its partial-volume edge pixel)."""
    signal, labels, _, texture = render_small(normal_heart)
    plain_heart = dataclasses.replace(normal_heart, papillary_angles=())
    plain, plain_labels, _, _ = render_small(plain_heart, _no_trabeculae(texture, rv=False))
    assert np.array_equal(labels, plain_labels)
    darker = (plain - signal) > 0.05  # muscle (0.35) painted over blood (1.0)
    lv = labels == 1
    edge = np.zeros_like(lv)
    for axis in (2, 3):
        for shift in (1, -1):
            edge |= np.roll(lv, shift, axis)
    assert darker.any() and not (darker & ~(lv | edge)).any()
    assert np.count_nonzero(darker & lv) >= 0.9 * np.count_nonzero(darker)
    # Mid-ventricular ED slices: a realistic share of dark pixels inside the LV label (ACDC 0.22).
    threshold = 0.5 * (1.0 + 0.35)
    fraction = np.count_nonzero((signal[0, 1:4] < threshold) & lv[0, 1:4]) / np.count_nonzero(lv[0, 1:4])
    assert 0.05 < fraction < 0.5, fraction


def test_rv_blood_darker_than_lv_blood(normal_heart):
    signal, labels, _, texture = render_small(normal_heart)
    plain, plain_labels, _, _ = render_small(normal_heart, _no_trabeculae(texture))
    ed = 0
    ratio = np.median(plain[ed][plain_labels[ed] == 3]) / np.median(plain[ed][plain_labels[ed] == 1])
    assert ratio == pytest.approx(normal_heart.rv_blood, abs=0.05)  # ACDC RV/LV blood 0.81
    # RV trabeculae: more RV label pixels closer to muscle than to RV blood than without them.
    threshold = 0.5 * (0.35 + normal_heart.rv_blood)
    assert np.mean(signal[ed][labels[ed] == 3] < threshold) > np.mean(plain[ed][plain_labels[ed] == 3] < threshold) + 0.02


def _ring_thickness(labels: np.ndarray, pixel: float) -> np.ndarray:
    """Equivalent-ring wall thickness per slice (Z,) of (Z, H, W) labels, nan without a cavity."""
    lv = np.count_nonzero(labels == 1, axis=(1, 2)) * pixel**2
    myo = np.count_nonzero(labels == 2, axis=(1, 2)) * pixel**2
    return np.where(lv > 0, np.sqrt((lv + myo) / np.pi) - np.sqrt(np.maximum(lv, 1e-9) / np.pi), np.nan)


def test_wall_thins_toward_the_apex(normal_heart, default_subject):
    u = np.linspace(0, 1, 11)
    profile = normal_heart.wall_thickness(u)
    assert np.all(np.diff(profile) < 0) and profile[5] == pytest.approx(normal_heart.wall)
    assert profile[-1] == pytest.approx(normal_heart.apical_wall * normal_heart.wall)
    _, labels, _, _ = render_small(normal_heart)
    thickness = _ring_thickness(labels[0], 1.5)
    assert thickness[-1] < thickness[2] < thickness[0]
    # The same on a generated subject: apical third thinner than the middle third at ED.
    ordered = base_to_apex(default_subject)[..., default_subject.ed].transpose(2, 0, 1)
    wall = _ring_thickness(ordered, default_subject.qa["spacing_mm"])
    wall = wall[np.isfinite(wall)]
    third = len(wall) // 3
    assert np.mean(wall[-third:]) < np.mean(wall[third:-third])


def test_wall_thickness_varies_around_the_circumference_at_constant_area(normal_heart):
    """The circumferential modulation is zero-mean: it spreads the local thickness (ACDC CV 0.19
    against 0.07 for a ring) and leaves the myocardial area nearly unchanged."""
    ring = dataclasses.replace(normal_heart, wall_harmonics=((0.0, 0.0),) * 3)
    _, labels, depths, texture = render_small(normal_heart)
    flat = dataclasses.replace(texture, wall_shape=np.zeros_like(texture.wall_shape))
    _, ring_labels, _, _ = render_small(ring, flat)
    mid = slice(1, 4)
    area, ring_area = (np.count_nonzero(x[0, mid] == 2) for x in (labels, ring_labels))
    assert area == pytest.approx(ring_area, rel=0.04)

    def local_cv(frame: np.ndarray) -> float:
        lv, myo = frame == 1, frame == 2
        inner = ndimage.distance_transform_edt(~lv)[myo]
        outer = ndimage.distance_transform_edt(lv | myo)[myo]
        local = inner + outer - 1
        return float(local.std() / local.mean())

    assert np.mean([local_cv(labels[0, z]) for z in range(1, 4)]) > 1.5 * np.mean(
        [local_cv(ring_labels[0, z]) for z in range(1, 4)])


def test_label_margin_puts_the_contours_on_the_muscle_side(normal_heart):
    """ACDC's LV label edge pixels are mostly dark (74 %): with a margin the LV label reaches into
    the drawn muscle, the drawn blood pool shrinking so that the label volume stays calibrated."""
    plain = dataclasses.replace(normal_heart, label_margin=0.0, rv_label_margin=0.0, papillary_angles=())
    wide = dataclasses.replace(plain, label_margin=1.2, rv_label_margin=1.2)
    texture = _no_trabeculae(render_small(plain)[3])
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)  # in-plane erosion only
    dark_edge, volume = [], []
    for heart in (plain, wide):
        signal, labels, _, _ = render_small(heart, texture)
        lv = labels[0] == 1
        edge = lv & ~ndimage.binary_erosion(lv, cross)
        dark_edge.append(np.mean(signal[0][edge] < 0.675))
        volume.append(np.count_nonzero(lv))
    assert volume[1] == pytest.approx(volume[0], rel=0.02)
    assert dark_edge[1] > dark_edge[0] + 0.1


def test_compacted_trabeculae_are_labelled_myocardium_at_es(normal_heart):
    """The compacted band moves the LV label inward at ES only: ED labels are unchanged and the
    ES myocardium label grows (conservation without it: test_myocardial_mass_conserved)."""
    no_band = dataclasses.replace(normal_heart, myo_es_gain=0.0)
    banded = dataclasses.replace(normal_heart, myo_es_gain=0.08)
    motion = heart_motion(normal_heart, 6)
    es = motion.es
    masses = []
    for heart in (no_band, banded):
        _, labels, _, _ = render_small(heart)
        masses.append((np.count_nonzero(labels[0] == 2), np.count_nonzero(labels[es] == 2)))
    assert masses[1][0] == masses[0][0]  # ED unchanged
    assert masses[1][1] > masses[0][1]  # more myocardium labelled at ES


def test_breath_hold_shift_moves_image_and_labels_together(monkeypatch):
    """A slice shifted by 6 mm moves its labels and its image alike (the heart is drawn and
    labelled from the same shifted coordinates); the other slices do not move."""
    config = PHANTOM_PRESETS["tiny"]
    original = phantom.draw_grid
    target = 2
    moved = np.array([6.0, 0.0])  # (right, anterior) mm

    def no_drift(*args, **kwargs):
        grid = original(*args, **kwargs)
        return dataclasses.replace(grid, shift=np.zeros_like(grid.shift), drift=np.zeros_like(grid.drift))

    def shifted(*args, **kwargs):
        grid = no_drift(*args, **kwargs)
        shift = grid.shift.copy()
        shift[target] = moved
        return dataclasses.replace(grid, shift=shift)

    monkeypatch.setattr(phantom, "draw_grid", no_drift)
    still = generate_subject(5, 0, config, "mnms")
    monkeypatch.setattr(phantom, "draw_grid", shifted)
    moving = generate_subject(5, 0, config, "mnms")
    order = (lambda a: a) if still.qa["slice_order"] == "base_to_apex" else (lambda a: a[:, :, ::-1])
    a_labels, b_labels = order(still.labels)[..., still.ed], order(moving.labels)[..., moving.ed]
    spacing = still.qa["spacing_mm"]

    def centroid(mask):
        return np.array(np.nonzero(mask)).mean(axis=1) * spacing

    z = target
    assert a_labels[..., z].any() and b_labels[..., z].any()
    label_move = centroid(b_labels[..., z] > 0) - centroid(a_labels[..., z] > 0)
    assert np.linalg.norm(label_move) == pytest.approx(6.0, abs=2.0)
    # The image: the bright blood near the heart moves by the same in-plane vector.
    a_image, b_image = order(still.image)[..., still.ed], order(moving.image)[..., moving.ed]
    region = ndimage.binary_dilation((a_labels[..., z] > 0) | (b_labels[..., z] > 0), iterations=3)

    def bright_centroid(image):
        values = np.where(region, image[..., z], 0.0)
        weights = np.clip(values - np.percentile(values[region], 60), 0, None)
        grid = np.indices(weights.shape).reshape(2, -1) * spacing
        return (grid * weights.ravel()).sum(axis=1) / weights.sum()

    image_move = bright_centroid(b_image) - bright_centroid(a_image)
    assert np.linalg.norm(image_move - label_move) < 0.5 * np.linalg.norm(label_move)
    for other in range(a_labels.shape[2]):
        if other != z and a_labels[..., other].any():
            assert np.linalg.norm(centroid(b_labels[..., other] > 0) - centroid(a_labels[..., other] > 0)) < 1.0


def test_bandlimited_noise_has_the_requested_sd_and_is_correlated():
    rng = np.random.default_rng(0)
    signal = np.full((2, 96, 80), 50.0, np.float32)
    window = phantom_acquisition.kspace_window((96, 80), 1.25, 2.2, "tukey")
    noisy = phantom_acquisition.add_bandlimited_rician_noise(rng, signal, 2.0, window)
    assert noisy.std() == pytest.approx(2.0, rel=0.05)  # Parseval: the sd is the one asked for
    residual = noisy - noisy.mean()
    lag1 = np.corrcoef(residual[:, 1:].ravel(), residual[:, :-1].ravel())[0, 1]
    assert lag1 > 0.3  # neighbours share the acquired k-space (ACDC background: 0.4)
    white = phantom_acquisition.add_bandlimited_rician_noise(rng, signal, 2.0, None)
    assert white.std() == pytest.approx(2.0, rel=0.05)
    assert abs(np.corrcoef(white[:, 1:].ravel() - 50, white[:, :-1].ravel() - 50)[0, 1]) < 0.05


def test_acdc_stacks_are_labelled_from_the_first_slice_to_the_last():
    """ACDC stacks start just below the ES base and end in the apical cavity; M&Ms-like stacks
    keep empty slices beyond both (test_empty_slices_above_base_and_below_apex_at_ed)."""
    subjects = [generate_subject(SEED, i, TINY, "acdc") for i in range(12)]
    first_labelled = last_labelled = 0
    for subject in subjects:
        labels = base_to_apex(subject)[..., subject.ed]
        labelled = np.flatnonzero(labels.any(axis=(0, 1)))
        first_labelled += labelled[0] == 0
        last_labelled += labelled[-1] == labels.shape[2] - 1
    assert first_labelled == len(subjects) and last_labelled >= 0.75 * len(subjects)


def test_new_qa_columns_are_within_the_calibrated_ranges(tiny_subjects):
    for subject in tiny_subjects:
        qa = subject.qa
        assert phantom.SLICE_GAIN_SD[0] <= qa["slice_gain_sd"] <= phantom.SLICE_GAIN_SD[1]
        assert phantom.SNR_LIMITS[0] <= qa["blood_snr"] <= phantom.SNR_LIMITS[1]
        assert 0.6 <= qa["rv_blood_ratio"] <= 0.9 and qa["trabecula_mm"] > 0 and qa["myo_es_band"] >= 0


# --- the speed-ups change no value (cmrssp/data/phantom_heart_pixels.py, phantom_acquisition.py) --


def _scene_with_vessels(heart, pixel: float = 2.0):
    """A noise-free scene over the whole heart: slices from above the base to below the apex (so
    the great vessels are drawn), three sub-slices, textured blood."""
    depths = np.arange(-12.0, heart.apex_depth + 6.0, 12.0)
    half = int(np.ceil((2.2 * (heart.nominal_radius + heart.wall) + 12.0 + heart.shell + heart.outer_fat) / pixel))
    coords = (np.arange(-half, half + 1) * pixel).astype(np.float32)
    shape = (len(depths), len(coords), len(coords))
    right = np.ascontiguousarray(np.broadcast_to(coords[None, :, None], shape))
    anterior = np.ascontiguousarray(np.broadcast_to(coords[None, None, :], shape))
    texture = (1.0 + 0.05 * np.cos(right / 9.0) * np.sin(anterior / 13.0)).astype(np.float32)
    return HeartScene(right=right, anterior=anterior, slice_depth=depths, sub_offsets=np.array([-3.0, 0.0, 3.0]),
                      sub_weights=np.array([0.25, 0.5, 0.25]), pixel=pixel, slice_spacing=12.0,
                      background=(0.05 + 0.01 * right / right.max()).astype(np.float32), blood_texture=texture,
                      rv_texture=texture[::-1].copy(), blood=1.0, myocardium=0.35, fat=0.95, shell=0.3)


def test_pixel_lists_draw_exactly_what_the_whole_box_gives(monkeypatch):
    """Each frame is drawn on the pixels its shapes can reach (phantom_heart_pixels); drawing
    every box pixel instead, or starting from a list far too short (the frames then grow it),
    gives bit-identical signal, labels and scales."""
    from cmrssp.data import phantom_heart, phantom_heart_paint, phantom_heart_pixels

    heart = draw_heart(np.random.default_rng(5), "RVD", False)
    motion = heart_motion(heart, 5)
    scene = _scene_with_vessels(heart)
    texture = draw_texture(np.random.default_rng(6), heart, scene.slice_depth)
    listed = render_heart(heart, motion, scene, texture)
    assert listed[1].any() and (listed[0] != listed[0][0]).any()

    with monkeypatch.context() as patch:  # a first list of one pixel per slice: every frame grows it
        painted_reach = phantom_heart._painted_reach
        calls = []

        def short_first(*args):
            calls.append(1)
            reaches = painted_reach(*args)
            return tuple(np.zeros_like(part) for part in reaches) if len(calls) == 1 else reaches

        patch.setattr(phantom_heart, "_painted_reach", short_first)
        grown = render_heart(heart, motion, scene, texture)

    original_within = phantom_heart_pixels.BoxPixels.within

    def everything(self, heart_reach, rv_reach):
        return original_within(self, np.full_like(heart_reach, np.inf), np.full_like(rv_reach, np.inf))

    monkeypatch.setattr(phantom_heart_pixels.BoxPixels, "within", everything)
    monkeypatch.setattr(phantom_heart_paint, "painted_pixels",
                        lambda reach, frame, *rest: np.ones(len(frame.metric), bool))
    # Every pixel of a vessel slice near a vessel (distances are finite there only).
    monkeypatch.setattr(phantom_heart, "near_vessels",
                        lambda distances, shape, pixel: np.isfinite(distances[0][0]))
    whole = render_heart(heart, motion, scene, texture)
    for a, b, c in zip(listed, grown, whole):
        assert a.dtype == c.dtype and a.tobytes() == b.tobytes() == c.tobytes()


def _one_shot_noise(rng, signal, sigma, window):
    """add_bandlimited_rician_noise as one draw and one batch of transforms over all planes."""
    shape = signal.shape[-2:]
    full = phantom_acquisition._full_window(window, shape)
    support = np.flatnonzero(full > 0)
    scale = np.float32(sigma / np.sqrt(phantom_acquisition.window_power(window, shape)))
    spectrum = np.zeros(signal.shape[:-2] + (shape[0] * shape[1],), np.complex64)
    noise = rng.standard_normal(spectrum.shape[:-1] + (len(support), 2), dtype=np.float32)
    spectrum[..., support] = (noise[..., 0] + 1j * noise[..., 1]) * (full.ravel()[support] * scale)
    noise_image = scipy.fft.ifft2(spectrum.reshape(signal.shape), axes=(-2, -1), norm="ortho")
    blurred = scipy.fft.rfft2(signal, axes=(-2, -1))
    blurred *= window
    noise_image += scipy.fft.irfft2(blurred, s=shape, axes=(-2, -1)).astype(np.float32, copy=False)
    return np.abs(noise_image).astype(np.float32, copy=False)


@pytest.mark.parametrize("shape", [(2, 3, 40, 36), (1, 33, 27)])
def test_planewise_noise_is_bit_identical_to_one_batch(shape):
    """Noise is drawn and transformed one plane at a time (in cache) with the spectrum filled block
    by block: the same random stream and arithmetic as one draw and one batch of 2D FFTs."""
    signal = (np.random.default_rng(1).random(shape) * 40).astype(np.float32)
    windows = [phantom_acquisition.kspace_window(shape[-2:], 1.3, 2.1, kind) for kind in ("none", "tukey", "hamming")]
    patchy = windows[2] * (np.random.default_rng(2).random(windows[2].shape) > 0.3)  # not separable
    for window in windows + [patchy.astype(np.float32)]:
        expected = _one_shot_noise(np.random.default_rng(3), signal, 1.5, window)
        out = np.empty(shape[::-1], np.float32).T  # any layout
        got = phantom_acquisition.add_bandlimited_rician_noise(np.random.default_rng(3), signal, 1.5, window, out=out)
        assert got is out and got.tobytes() == expected.tobytes()
        blurred = scipy.fft.irfft2(scipy.fft.rfft2(signal, axes=(-2, -1)) * window, s=shape[-2:], axes=(-2, -1))
        assert phantom_acquisition.blur(signal, window).tobytes() == blurred.astype(np.float32).tobytes()


@pytest.mark.parametrize("base_to_apex", [True, False])
@pytest.mark.parametrize("transpose", [True, False])
@pytest.mark.parametrize("flips", [(False, False), (True, False), (False, True), (True, True)])
def test_arrays_filled_in_the_stored_layout_equal_the_converted_ones(base_to_apex, transpose, flips):
    """generate_subject fills the vendor's stored (Fortran) arrays through native views
    (allocate_stored): the same arrays and affine as converting native ones afterwards."""
    from cmrssp.data.phantom_geometry import allocate_stored, apply_storage_convention

    vendor = dataclasses.make_dataclass("Vendor", ["base_to_apex", "transpose", "flips"])
    vendor = vendor(base_to_apex, transpose, flips)
    affine = np.array([[0.0, 1.2, 0.3, 5.0], [1.1, 0.0, 0.2, -3.0], [0.1, 0.2, 8.0, 7.0], [0, 0, 0, 1]])
    native = np.random.default_rng(0).random((5, 4, 3, 2)).astype(np.float32)
    (expected,), expected_affine = apply_storage_convention([native], affine, vendor)
    (stored,), (view,), stored_affine = allocate_stored(native.shape, (np.float32,), affine, vendor)
    view[...] = native
    assert stored.flags.f_contiguous and stored.shape == expected.shape
    assert np.array_equal(stored, expected) and np.array_equal(stored_affine, expected_affine)
