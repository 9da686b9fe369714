"""Synthetic cohort (cmrssp/data/phantom*.py): determinism, anatomy, calibration, on-disk layouts.

Uses the tiny preset (56-64 px, 5-8 slices, 5-8 frames; well under 0.2 s a subject) and one
default-preset subject for the checks that need realistic sampling (myocardial mass, contrast).
Expected values come from docs/phantom.md and docs/data-formats.md 1.2-1.4.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cmrssp.data.phantom import LAYOUTS, PHANTOM_PRESETS, PhantomSubject, generate_subject, write_cohort
from cmrssp.data.phantom_geometry import NOMINAL_LONG_AXIS
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


def test_rv_absent_in_the_most_apical_slices(tiny_subjects):
    for subject in tiny_subjects:
        labels = base_to_apex(subject)[..., subject.ed]
        heart = np.flatnonzero(np.isin(labels, (1, 2)).any(axis=(0, 1)))
        rv = np.flatnonzero((labels == 3).any(axis=(0, 1)))
        assert len(rv) >= 2 and rv[0] == heart[0], "the RV starts at the base"
        assert rv[-1] < heart[-1], "no RV in the most apical LV slice"


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
    phenotypes = {subject.qa["phenotype"] for subject in tiny_subjects}
    assert {"NOR", "DCM", "HCM"} <= phenotypes
    for subject in tiny_subjects:
        qa = subject.qa
        lv_ef, rv_ef = qa["lv_ef_pct"], qa["rv_ef_pct"]
        assert abs(lv_ef - qa["target_lv_ef_pct"]) < 2.0, "LV calibrated on the label volumes"
        if qa["phenotype"] == "NOR":
            assert 50 <= lv_ef <= 70 and 45 <= rv_ef <= 65 and 80 <= qa["lv_edv_ml"] <= 200
        elif qa["phenotype"] in ("DCM", "MINF"):
            assert lv_ef < 50 and qa["lv_edv_ml"] > 140
        elif qa["phenotype"] == "HCM":
            assert lv_ef > 70
        elif qa["phenotype"] == "RVD":
            assert rv_ef < 45 and qa["rv_edv_ml"] > qa["lv_edv_ml"]


def test_qa_volumes_match_the_labels(tiny_subjects):
    subject = tiny_subjects[0]
    voxel_ml = abs(np.linalg.det(subject.affine[:3, :3])) / 1000
    assert subject.qa["lv_edv_ml"] == pytest.approx((subject.labels[..., subject.ed] == 1).sum() * voxel_ml, abs=0.01)
    assert subject.qa["myo_mass_es_g"] == pytest.approx((subject.labels[..., subject.es] == 2).sum() * voxel_ml * 1.05,
                                                        abs=0.01)


def test_myocardial_mass_conserved(default_subject, tiny_subjects):
    qa = default_subject.qa
    assert abs(qa["myo_mass_es_g"] / qa["myo_mass_ed_g"] - 1) < 0.05
    for subject in tiny_subjects:  # 4-5 mm pixels and 14-18 mm slices sample coarsely
        assert abs(subject.qa["myo_mass_es_g"] / subject.qa["myo_mass_ed_g"] - 1) < 0.15


def test_blood_to_myocardium_contrast(default_subject, tiny_subjects):
    assert all(2.2 <= s.qa["blood_myo_ratio"] <= 4.0 for s in tiny_subjects)
    subject = default_subject
    labels, image = subject.labels[..., subject.ed], subject.image[..., subject.ed]
    mid = np.flatnonzero((labels == 1).any(axis=(0, 1)))
    mid = mid[len(mid) // 4: -len(mid) // 4 or None]  # mid-ventricular slices
    blood, muscle = [], []
    for z in mid:
        blood.append(image[..., z][ndimage.binary_erosion(labels[..., z] == 1, iterations=2)])
        muscle.append(image[..., z][ndimage.binary_erosion(labels[..., z] == 2, iterations=1)])
    ratio = np.median(np.concatenate(blood)) / np.median(np.concatenate(muscle))
    assert 2.0 <= ratio <= 4.2, ratio  # the drawn ratio, lowered a little by blur and Rician bias
    assert ratio == pytest.approx(subject.qa["blood_myo_ratio"], rel=0.25)


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
        assert 4.0 <= subject.qa["spacing_mm"] <= 4.8 and 14.0 <= subject.qa["slice_spacing_mm"] <= 18.0 + 1e-6
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
