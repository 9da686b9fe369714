"""Dataset readers (cmrssp/data/sources*.py) on tiny fixtures that mirror the real layouts.

Layouts, CSV headers and Info.cfg follow docs/data-formats.md section 1; cines are 12x10x3x5 with
an oblique affine and a few labelled voxels at ED and ES.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cmrssp.data.nifti import write_nifti
from cmrssp.data.sources import DATASETS, SubjectRef, discover, load_subject
from cmrssp.errors import InputError

SHAPE = (12, 10, 3)
N_FRAMES = 5
SPACING = (1.4, 1.3, 8.0)


def oblique_affine(spacing=SPACING, origin=(-40.0, 25.0, 7.5)) -> np.ndarray:
    """A rotated (non-axis-aligned) voxel-to-world matrix with the given column norms."""
    a, b = np.deg2rad(30.0), np.deg2rad(-20.0)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rot_z @ rot_x @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


AFFINE = oblique_affine()


def cine(seed: int = 0) -> np.ndarray:
    """Integer-valued float32 cine (x, y, z, t): every frame distinct, exact under dtype casts."""
    return np.random.default_rng(seed).integers(10, 500, size=SHAPE + (N_FRAMES,)).astype(np.float32)


def heart(phase: str) -> np.ndarray:
    """Canonical labels (1 LV, 2 MYO, 3 RV) of one frame: the cavities shrink from ED to ES and
    the top slice (above the base) is empty."""
    labels = np.zeros(SHAPE, np.uint8)
    cavity = 4 if phase == "ED" else 2
    labels[2:8, 2:8, :2] = 2
    labels[3 : 3 + cavity, 3 : 3 + cavity, :2] = 1
    labels[8:11, 2 : (7 if phase == "ED" else 4), :2] = 3
    return labels


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE, dtype=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Cast first: a float array written as int16 would get an scl_slope (data-formats.md 2.2).
    data = data.astype(dtype or data.dtype)
    write_nifti(path, data, affine, dtype=data.dtype)
    return path


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def quiet_load(ref: SubjectRef):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_subject(ref)


# --------------------------------------------------------------------------------------------- M&Ms

MNMS_HEADER = ",External code,VendorName,Vendor,Centre,ED,ES,Age,Pathology,Sex,Height,Weight"
MNMS_OLD_HEADER = ",External code,VendorName,Vendor,Centre,ED,ES"


def mnms_gt(frames: dict[int, str]) -> np.ndarray:
    gt = np.zeros(SHAPE + (N_FRAMES,), np.uint8)
    for t, phase in frames.items():
        gt[..., t] = heart(phase)
    return gt


def make_mnms(tmp_path: Path, flat: bool = False, old_csv: bool = False) -> Path:
    """Challenge layout (OpenDataset/Training/...) or flattened ``MnM/dataset/<CODE>/``.

    A0S9V9: labelled at ED=0, ES=2 (CSV agrees). B1C2D3: Training/Unlabeled, all-zero GT.
    C4D5E6: CSV says ED=0/ES=0 but the GT labels ED=3, ES=1.
    """
    subjects = {
        "A0S9V9": ("Training/Labeled", {0: "ED", 2: "ES"}, "0,A0S9V9,Siemens,A,1,0,2,58,HCM,M,175,80"),
        "B1C2D3": ("Training/Unlabeled", {}, "1,B1C2D3,GE,C,4,1,3,61,NOR,F,,"),
        "C4D5E6": ("Validation", {3: "ED", 1: "ES"}, "2,C4D5E6,Philips,B,2,0,0,44,DCM,M,180,90"),
    }
    if flat:
        base = tmp_path / "MnM"
        root = base / "dataset"
        csv_folder = base
    else:
        root = base = tmp_path / "OpenDataset"
        csv_folder = root
    for index, (code, (split, frames, _)) in enumerate(subjects.items()):
        folder = root / code if flat else root / split / code
        save(folder / f"{code}_sa.nii.gz", cine(index), dtype=np.int16)
        save(folder / f"{code}_sa_gt.nii.gz", mnms_gt(frames), dtype=np.uint8)
    header = MNMS_OLD_HEADER if old_csv else MNMS_HEADER
    rows = [",".join(row.split(",")[: len(header.split(","))]) for _, _, row in subjects.values()]
    if old_csv:
        name = "201014_M&Ms_Dataset_Information_-_opendataset.csv"
    else:
        name = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
    csv_folder.mkdir(parents=True, exist_ok=True)
    (csv_folder / name).write_text("\n".join([header, *rows]) + "\n")
    return root


def test_mnms_challenge_layout_reads_labelled_subject(tmp_path):
    root = make_mnms(tmp_path)
    refs = discover("mnms", root)
    assert [ref.subject_id for ref in refs] == ["A0S9V9", "B1C2D3", "C4D5E6"]
    subject = load_subject(refs[0])
    assert subject.key == refs[0].key == "mnms-A0S9V9"
    assert subject.image.dtype == np.float32 and subject.image.shape == SHAPE + (N_FRAMES,)
    np.testing.assert_array_equal(subject.image, cine(0))
    np.testing.assert_allclose(subject.affine, AFFINE, atol=1e-6)
    np.testing.assert_allclose(subject.spacing, SPACING, atol=1e-5)
    assert subject.labels.dtype == np.uint8 and subject.labels.shape == SHAPE + (2,)
    assert (subject.ed, subject.es, subject.label_frames, subject.label_phases) == (0, 2, (0, 2), ("ED", "ES"))
    np.testing.assert_array_equal(subject.labels[..., 0], heart("ED"))
    np.testing.assert_array_equal(subject.labels[..., 1], heart("ES"))
    assert (subject.vendor, subject.pathology) == ("A", "HCM")
    assert subject.extra["centre"] == 1 and subject.extra["vendor_name"] == "Siemens"
    assert subject.extra["release_folder"] == "Training/Labeled"
    assert subject.source[0].endswith("A0S9V9_sa.nii.gz") and subject.source[1].endswith("A0S9V9_sa_gt.nii.gz")
    assert subject.source[2].endswith(".csv")


def test_mnms_empty_gt_is_unlabelled_with_csv_phases(tmp_path):
    refs = discover("mnms", make_mnms(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CSV agrees with itself here: no warning expected
        subject = load_subject(refs[1])
    assert subject.labels is None and not subject.labelled
    assert (subject.ed, subject.es, subject.vendor, subject.pathology) == (1, 3, "C", "NOR")
    assert "height" not in subject.extra  # empty CSV cell


def test_mnms_recomputes_ed_es_from_gt_with_warning(tmp_path):
    refs = discover("mnms", make_mnms(tmp_path))
    with pytest.warns(UserWarning, match=r"C4D5E6: CSV says ED=0, ES=0 .* ED=3, ES=1"):
        subject = load_subject(refs[2])
    assert (subject.ed, subject.es, subject.label_frames, subject.label_phases) == (3, 1, (3, 1), ("ED", "ES"))
    np.testing.assert_array_equal(subject.labels[..., 0], heart("ED"))
    assert subject.extra["csv_ed_es"] == [0, 0]


def test_mnms_flat_layout_csv_in_parent_and_old_csv(tmp_path):
    root = make_mnms(tmp_path, flat=True, old_csv=True)
    refs = discover("mnms", root)
    assert [ref.subject_id for ref in refs] == ["A0S9V9", "B1C2D3", "C4D5E6"]
    subject = load_subject(refs[0])
    assert subject.pathology is None and subject.vendor == "A"
    assert subject.labels.shape == SHAPE + (2,)


def test_mnms_subject_missing_from_csv_uses_gt(tmp_path):
    root = make_mnms(tmp_path)
    save(root / "Testing" / "Z9Z9Z9" / "Z9Z9Z9_sa.nii.gz", cine(7))
    save(root / "Testing" / "Z9Z9Z9" / "Z9Z9Z9_sa_gt.nii", mnms_gt({4: "ED", 2: "ES"}))
    ref = discover("mnms", root)[-1]
    with pytest.warns(UserWarning, match=r"Z9Z9Z9 is not in .*ED=4, ES=2"):
        subject = load_subject(ref)
    assert (subject.ed, subject.es, subject.vendor) == (4, 2, None)


def test_mnms_gt_with_one_labelled_frame_keeps_csv_phases(tmp_path):
    root = make_mnms(tmp_path)
    save(root / "Training/Labeled/A0S9V9/A0S9V9_sa_gt.nii.gz", mnms_gt({2: "ES"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        subject = load_subject(discover("mnms", root)[0])
    assert (subject.ed, subject.es, subject.label_frames, subject.label_phases) == (0, 2, (2,), ("ES",))
    np.testing.assert_array_equal(subject.labels[..., 0], heart("ES"))


def test_same_subject_twice_is_an_error(tmp_path):
    root = make_mnms(tmp_path)
    save(root / "Testing" / "A0S9V9" / "A0S9V9_sa.nii", cine(0))
    with pytest.raises(InputError, match="'A0S9V9' found twice"):
        discover("mnms", root)


def test_mnms_csv_missing_or_missing_column(tmp_path):
    root = make_mnms(tmp_path)
    csv = next(root.glob("*.csv"))
    text = csv.read_text()
    csv.write_text(text.replace(",ED,", ",EDX,"))
    with pytest.raises(InputError, match=r"211230_M&Ms.*csv: missing column 'ED'"):
        discover("mnms", root)
    csv.unlink()
    with pytest.raises(InputError, match="no M&Ms information CSV") as caught:
        discover("mnms", root)
    assert caught.value.path == str(root)


def test_mnms_label_shape_and_value_errors(tmp_path):
    root = make_mnms(tmp_path)
    gt_path = root / "Training/Labeled/A0S9V9/A0S9V9_sa_gt.nii.gz"
    save(gt_path, np.zeros((12, 9, 3, N_FRAMES), np.uint8))
    ref = discover("mnms", root)[0]
    with pytest.raises(InputError, match="label shape .* does not match image shape") as caught:
        load_subject(ref)
    assert caught.value.path == str(gt_path)
    bad = mnms_gt({0: "ED", 2: "ES"})
    bad[0, 0, 0, 0] = 5
    save(gt_path, bad)
    with pytest.raises(InputError, match=r"label values \[5\] outside") as caught:
        load_subject(ref)
    assert caught.value.path == str(gt_path)


# ------------------------------------------------------------------------------------------ M&Ms-2

MNMS2_HEADER = "SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD"
MNMS2_ED, MNMS2_ES = 3, 1


def make_mnms2(tmp_path: Path) -> Path:
    """``MnM2/dataset_information.csv`` (padded with empty rows) + ``MnM2/dataset/<NNN>/``;
    001 stored as .nii.gz, 002 as .nii; long-axis files present (ignored)."""
    base = tmp_path / "MnM2"
    for number, suffix in ((1, ".nii.gz"), (2, ".nii")):
        folder = base / "dataset" / f"{number:03d}"
        image = cine(10 + number)
        save(folder / f"{number:03d}_SA_CINE{suffix}", image, dtype=np.int16)
        for phase, t in (("ED", MNMS2_ED), ("ES", MNMS2_ES)):
            save(folder / f"{number:03d}_SA_{phase}{suffix}", image[..., t].astype(np.float64))
            save(folder / f"{number:03d}_SA_{phase}_gt{suffix}", heart(phase))
        save(folder / f"{number:03d}_LA_CINE{suffix}", np.ones((12, 10, 1, N_FRAMES), np.float32))
        save(folder / f"{number:03d}_LA_ED_gt{suffix}", np.ones((12, 10, 1), np.uint8))
    rows = ["1,NOR,SIEMENS,Avanto,1.5", "2,HCM,Philips Medical Systems,Achieva,3"]
    (base / "dataset_information.csv").write_text("\n".join([MNMS2_HEADER, *rows] + [",,,,"] * 50) + "\n")
    return base / "dataset"


def test_mnms2_reads_nii_and_niigz_with_exact_frame_matching(tmp_path):
    root = make_mnms2(tmp_path)
    refs = discover("mnms2", root)
    assert [ref.subject_id for ref in refs] == ["001", "002"]
    assert not any("_LA_" in path for ref in refs for _, path in ref.files)
    for ref, (vendor, letter, disease, field) in zip(
        refs, [("SIEMENS", "A", "NOR", 1.5), ("Philips Medical Systems", "B", "HCM", 3)]
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # exact matches: no warning
            subject = load_subject(ref)
        assert (subject.ed, subject.es) == (MNMS2_ED, MNMS2_ES)
        assert subject.label_frames == (MNMS2_ED, MNMS2_ES) and subject.label_phases == ("ED", "ES")
        np.testing.assert_array_equal(subject.labels[..., 0], heart("ED"))
        np.testing.assert_array_equal(subject.labels[..., 1], heart("ES"))
        assert (subject.vendor, subject.extra["vendor_letter"], subject.pathology) == (vendor, letter, disease)
        assert subject.extra["field"] == field and subject.extra["scanner"]
        np.testing.assert_allclose(subject.spacing, SPACING, atol=1e-5)
    assert refs[1].path("image").name == "002_SA_CINE.nii"


def test_mnms2_inexact_frame_warns_and_poor_frame_fails(tmp_path):
    root = make_mnms2(tmp_path)
    ed_path = root / "001" / "001_SA_ED.nii.gz"
    image = cine(11)
    noisy = image[..., MNMS2_ED] * (1 + 0.001 * np.random.default_rng(5).standard_normal(SHAPE))
    save(ed_path, noisy.astype(np.float32))
    ref = discover("mnms2", root)[0]
    with pytest.warns(UserWarning, match="no exact copy .* closest frame 3"):
        subject = load_subject(ref)
    assert subject.ed == MNMS2_ED
    save(ed_path, np.random.default_rng(6).integers(10, 500, size=SHAPE).astype(np.float32))
    with pytest.raises(InputError, match="matches no frame") as caught:
        load_subject(ref)
    assert caught.value.path == str(ed_path)


def test_mnms2_csv_errors(tmp_path):
    root = make_mnms2(tmp_path)
    csv = root.parent / "dataset_information.csv"
    csv.write_text(csv.read_text().replace("DISEASE", "DIAGNOSIS"))
    with pytest.raises(InputError, match="dataset_information.csv: missing column 'DISEASE'"):
        discover("mnms2", root)
    csv.unlink()
    with pytest.raises(InputError, match="no dataset_information.csv"):
        discover("mnms2", root)


# -------------------------------------------------------------------------------------------- ACDC

ACDC_FROM_CANONICAL = np.array([0, 3, 2, 1], np.uint8)  # the remap is its own inverse


def make_acdc(tmp_path: Path) -> Path:
    """``database/training/patient001`` (labelled, ED: 1, ES: 4) and ``database/testing/patient002``
    (no _gt files)."""
    root = tmp_path / "database"
    for number, split in ((1, "training"), (2, "testing")):
        patient = f"patient{number:03d}"
        folder = root / split / patient
        image = cine(20 + number)
        save(folder / f"{patient}_4d.nii.gz", image, dtype=np.int16)
        for phase, frame in (("ED", 1), ("ES", 4)):
            save(folder / f"{patient}_frame{frame:02d}.nii.gz", image[..., frame - 1], dtype=np.int16)
            if number == 1:
                save(folder / f"{patient}_frame{frame:02d}_gt.nii.gz", ACDC_FROM_CANONICAL[heart(phase)])
        (folder / "Info.cfg").write_text(
            f"ED: 1\nES: 4\nGroup: DCM\nHeight: 184.0\nNbFrame: {N_FRAMES}\nWeight: 95.0\n"
        )
    return root


def test_acdc_remaps_labels_and_uses_one_based_phases(tmp_path):
    root = make_acdc(tmp_path)
    refs = discover("acdc", root)
    assert [ref.subject_id for ref in refs] == ["patient001", "patient002"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        subject = load_subject(refs[0])
    assert (subject.ed, subject.es, subject.label_frames, subject.label_phases) == (0, 3, (0, 3), ("ED", "ES"))
    np.testing.assert_array_equal(subject.labels[..., 0], heart("ED"))  # ACDC 3 (LV) -> 1, 1 (RV) -> 3
    np.testing.assert_array_equal(subject.labels[..., 1], heart("ES"))
    assert subject.pathology == "DCM" and subject.extra["height"] == 184.0 and subject.extra["nb_frame"] == N_FRAMES
    assert subject.extra["release_folder"] == "training"
    unlabelled = load_subject(refs[1])
    assert unlabelled.labels is None and (unlabelled.ed, unlabelled.es) == (0, 3)


def test_acdc_nbframe_mismatch_warns_and_info_errors(tmp_path):
    root = make_acdc(tmp_path)
    config = root / "training" / "patient001" / "Info.cfg"
    config.write_text(config.read_text().replace(f"NbFrame: {N_FRAMES}", "NbFrame: 30"))
    with pytest.warns(UserWarning, match="NbFrame=30"):
        load_subject(discover("acdc", root)[0])
    config.write_text("ED: 1\nES: 4\nGroup: DCM\nHeight: 184.0\nWeight: 95.0\n")
    with pytest.raises(InputError, match="missing key 'NbFrame'") as caught:
        discover("acdc", root)
    assert caught.value.path == str(config)
    config.unlink()
    with pytest.raises(InputError, match="Info.cfg not found") as caught:
        discover("acdc", root)
    assert caught.value.path == str(config)


def test_acdc_frame_file_disagreeing_with_info_warns(tmp_path):
    root = make_acdc(tmp_path)
    folder = root / "training" / "patient001"
    save(folder / "patient001_frame04.nii.gz", cine(21)[..., 1], dtype=np.int16)  # wrong frame
    with pytest.warns(UserWarning, match="frame04.nii.gz: differs .* ES frame"):
        load_subject(discover("acdc", root)[0])


def test_acdc_patient_without_its_cine_is_read_from_its_ed_es_frames(tmp_path):
    root = make_acdc(tmp_path)
    folder = root / "training" / "patient001"
    (folder / "patient001_4d.nii.gz").unlink()
    ref = discover("acdc", root)[0]
    subject = load_subject(ref)
    image = cine(21)
    assert subject.image.shape == (*SHAPE, 2) and (subject.ed, subject.es) == (0, 1)
    np.testing.assert_array_equal(subject.image[..., 0], image[..., 0].astype(np.int16))  # ED: frame01
    np.testing.assert_array_equal(subject.image[..., 1], image[..., 3].astype(np.int16))  # ES: frame04
    assert subject.label_frames == (0, 1) and subject.label_phases == ("ED", "ES")
    np.testing.assert_array_equal(subject.labels[..., 0], heart("ED"))
    np.testing.assert_array_equal(subject.labels[..., 1], heart("ES"))
    assert subject.extra["cine"] is False and subject.extra["info_ed_es"] == [1, 4]
    assert [n.kind for n in subject.notices] == ["cine-missing"] and "pretraining sees only" in subject.notices[0].message
    np.testing.assert_allclose(subject.spacing, SPACING, atol=1e-5)
    # a frame file of another grid than its partner, and a folder with neither cine nor frames
    save(folder / "patient001_frame04.nii.gz", np.zeros((SHAPE[0] + 1, *SHAPE[1:]), np.int16))
    with pytest.raises(InputError, match="frame shape") as caught:
        load_subject(discover("acdc", root)[0])
    assert caught.value.path == str(folder / "patient001_frame04.nii.gz")
    for path in folder.glob("patient001_frame*"):
        path.unlink()
    with pytest.raises(InputError, match="no patient001_4d.nii\\[.gz\\] cine and none of its ED/ES frame files") as caught:
        discover("acdc", root)
    assert caught.value.path == str(folder)


def test_mnms2_subject_without_its_cine_is_read_from_its_ed_es_frames(tmp_path):
    root = make_mnms2(tmp_path)
    (root / "001" / "001_SA_CINE.nii.gz").unlink()
    refs = discover("mnms2", root)
    assert [ref.subject_id for ref in refs] == ["001", "002"] and refs[0].path("image") is None
    subject = load_subject(refs[0])
    image = cine(11)
    assert subject.image.shape == (*SHAPE, 2) and (subject.ed, subject.es) == (0, 1)
    np.testing.assert_allclose(subject.image[..., 0], image[..., MNMS2_ED])
    np.testing.assert_allclose(subject.image[..., 1], image[..., MNMS2_ES])
    np.testing.assert_array_equal(subject.labels[..., 1], heart("ES"))
    assert subject.label_frames == (0, 1) and subject.extra["cine"] is False and subject.vendor == "SIEMENS"
    assert [n.kind for n in subject.notices] == ["cine-missing"]
    assert load_subject(refs[1]).extra["cine"] is True and load_subject(refs[1]).notices == ()


# ----------------------------------------------------------------------------------------- nnU-Net


def make_nnunet(tmp_path: Path, labels: dict, convention: dict[int, int]) -> Path:
    """``Dataset027_ACDC``-style raw folder. ``convention`` maps canonical -> dataset values.

    patient001 has frames 01 and 12, where frame 12 has the larger LV (so it is ED even though it
    comes second); single is a plain one-frame case."""
    root = tmp_path / "Dataset027_ACDC"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    description = {"channel_names": {"0": "cineMRI"}, "labels": labels, "numTraining": 3, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(description))
    to_dataset = np.array([convention[c] for c in range(4)], np.uint8)
    image = cine(30)
    for case, t, phase in (("patient001_frame01", 0, "ES"), ("patient001_frame12", 1, "ED"), ("single", 2, "ED")):
        save(root / "imagesTr" / f"{case}_0000.nii.gz", image[..., t])
        save(root / "labelsTr" / f"{case}.nii.gz", to_dataset[heart(phase)])
    return root


ACDC_V2 = {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}
ACDC_CONVENTION = {0: 0, 1: 3, 2: 2, 3: 1}


def test_nnunet_v2_groups_frames_and_maps_names(tmp_path):
    root = make_nnunet(tmp_path, ACDC_V2, ACDC_CONVENTION)
    refs = discover("nnunet", root)
    assert [ref.subject_id for ref in refs] == ["patient001", "single"]
    subject = load_subject(refs[0])
    image = cine(30)
    assert subject.image.shape == SHAPE + (2,)
    np.testing.assert_array_equal(subject.image, image[..., :2])
    # frame12 (index 1) has the larger LV cavity -> ED
    assert (subject.ed, subject.es, subject.label_frames, subject.label_phases) == (1, 0, (1, 0), ("ED", "ES"))
    np.testing.assert_array_equal(subject.labels[..., 0], heart("ED"))
    np.testing.assert_array_equal(subject.labels[..., 1], heart("ES"))
    assert subject.extra["frame_numbers"] == [1, 12]
    single = load_subject(refs[1])
    assert single.image.shape == SHAPE + (1,) and single.label_phases == ("frame00",)
    assert single.ed is None and single.es is None


def test_nnunet_v1_int_to_name_labels(tmp_path):
    labels = {"0": "background", "1": "LVBP", "2": "LVM", "3": "right ventricle"}
    root = make_nnunet(tmp_path, labels, {0: 0, 1: 1, 2: 2, 3: 3})
    subject = load_subject(discover("nnunet", root)[0])
    np.testing.assert_array_equal(subject.labels[..., 0], heart("ED"))


def test_nnunet_bad_inputs(tmp_path):
    root = make_nnunet(tmp_path, ACDC_V2, ACDC_CONVENTION)
    dataset_json = root / "dataset.json"
    good = dataset_json.read_text()
    dataset_json.write_text(json.dumps({"labels": {"background": 0, "scar": 1}}))
    with pytest.raises(InputError, match="unknown label name 'scar'") as caught:
        discover("nnunet", root)
    assert caught.value.path == str(dataset_json)
    dataset_json.write_text(good)

    label_path = root / "labelsTr" / "single.nii.gz"
    bad = heart("ED")
    bad[0, 0, 0] = 4
    save(label_path, bad)
    with pytest.raises(InputError, match=r"label values \[4\] outside") as caught:
        load_subject(discover("nnunet", root)[1])
    assert caught.value.path == str(label_path)

    frame12 = root / "imagesTr" / "patient001_frame12_0000.nii.gz"
    save(frame12, cine(30)[..., 1], affine=oblique_affine(origin=(0.0, 0.0, 0.0)))
    with pytest.raises(InputError, match="affine differs") as caught:
        load_subject(discover("nnunet", root)[0])
    assert caught.value.path == str(frame12)
    save(frame12, np.ones((12, 9, 3), np.float32))
    with pytest.raises(InputError, match="frame shape"):
        load_subject(discover("nnunet", root)[0])

    second_channel = root / "imagesTr" / "single_0001.nii.gz"
    save(second_channel, cine(30)[..., 2])
    with pytest.raises(InputError, match="multi-channel") as caught:
        discover("nnunet", root)
    assert caught.value.path == str(second_channel)


# ------------------------------------------------------------------------------------------ folder


def test_folder_reads_4d_files_and_rejects_3d(tmp_path):
    root = tmp_path / "cines"
    save(root / "site1" / "scan01.nii.gz", cine(40))
    save(root / "scan02.nii", cine(41)[..., :4])
    (root / "._scan03.nii.gz").write_bytes(b"macOS resource fork")  # hidden: ignored
    refs = discover("folder", root)
    assert [ref.subject_id for ref in refs] == ["scan02", "site1_scan01"]
    subject = load_subject(refs[1])
    np.testing.assert_array_equal(subject.image, cine(40))
    assert subject.labels is None and subject.ed is None and subject.es is None
    assert load_subject(refs[0]).n_frames == 4
    flat = save(root / "scan04.nii.gz", cine(42)[..., 0])
    with pytest.raises(InputError, match="expected a 4D cine") as caught:
        load_subject(next(ref for ref in discover("folder", root) if ref.subject_id == "scan04"))
    assert caught.value.path == str(flat)


# -------------------------------------------------------------------------------------- all / bad input


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_root_and_empty_folder(tmp_path, dataset):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match="not found") as caught:
        discover(dataset, missing)
    assert caught.value.path == str(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError) as caught:
        discover(dataset, empty)
    if dataset == "nnunet":
        assert caught.value.path == str(empty / "dataset.json")
        (empty / "dataset.json").write_text(json.dumps({"labels": ACDC_V2}))
        (empty / "imagesTr").mkdir()
        with pytest.raises(InputError, match="no nnunet subjects found"):
            discover(dataset, empty)
    else:
        assert caught.value.path == str(empty) and "no " + dataset + " subjects found" in str(caught.value)


def test_unknown_dataset(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'kaggle'"):
        discover("kaggle", tmp_path)
    with pytest.raises(InputError, match="unknown dataset 'kaggle'"):
        load_subject(SubjectRef("kaggle", "x", (("image", str(tmp_path / "x.nii.gz")),)))


def test_truncated_gzip_names_the_file(tmp_path):
    root = tmp_path / "cines"
    path = save(root / "scan.nii.gz", cine(50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as caught:
        load_subject(discover("folder", root)[0])
    assert caught.value.path == str(path)
    path.write_bytes(gzip.compress(b"not a nifti header at all"))
    with pytest.raises(InputError) as caught:
        load_subject(discover("folder", root)[0])
    assert caught.value.path == str(path)


def test_non_finite_voxels(tmp_path):
    root = tmp_path / "cines"
    image = cine(51)
    image[1, 2, 0, 3] = np.nan
    path = save(root / "scan.nii.gz", image)
    with pytest.raises(InputError, match="non-finite") as caught:
        load_subject(discover("folder", root)[0])
    assert caught.value.path == str(path)


def write_with_header(path: Path, data: np.ndarray, srows: np.ndarray, pixdim=None) -> Path:
    """A NIfTI whose sform is ``srows`` (qform off) and whose pixdim may disagree with it."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header["srow_x"], header["srow_y"], header["srow_z"] = srows[0], srows[1], srows[2]
    header["sform_code"], header["qform_code"] = 1, 0
    if pixdim is not None:
        header["pixdim"][1 : 1 + len(pixdim)] = pixdim
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, None, header=header), str(path))
    return path


def test_zero_spacing_rejected_and_a_conflicting_pixdim_resolved_by_the_rule(tmp_path):
    root = tmp_path / "cines"
    zero = AFFINE.copy()
    zero[:3, 2] = 0.0
    path = write_with_header(root / "flat.nii.gz", cine(52), zero[:3])
    with pytest.raises(InputError, match="zero or negative") as caught:
        load_subject(discover("folder", root)[0])
    assert caught.value.path == str(path)
    path.unlink()
    path = write_with_header(root / "corrupt_pixdim.nii.gz", cine(52), AFFINE[:3], pixdim=(9.0, 9.0, 0.5, 0.0))
    assert nib.load(str(path)).header.get_zooms()[:3] == (9.0, 9.0, 0.5)
    # auto: both records look real, so pixdim wins (as in ITK), with the affine's direction and origin
    subject = load_subject(discover("folder", root)[0])
    np.testing.assert_allclose(subject.spacing, (9.0, 9.0, 0.5), atol=1e-5)
    np.testing.assert_allclose(subject.affine[:3, :3] / subject.spacing, AFFINE[:3, :3] / SPACING, atol=1e-6)
    np.testing.assert_allclose(subject.affine[:3, 3], AFFINE[:3, 3], atol=1e-5)
    assert [notice.kind for notice in subject.notices] == ["geometry:conflict"]
    assert str(path) in subject.notices[0].message
    # --geometry affine: the affine as stored
    subject = load_subject(discover("folder", root)[0], geometry="affine")
    np.testing.assert_allclose(subject.spacing, SPACING, atol=1e-5)
    np.testing.assert_allclose(subject.affine, AFFINE, atol=1e-5)
    assert subject.geometry.chosen == "affine" and subject.geometry.finding == "forced-affine"


def test_refs_are_picklable_hashable_and_raw_files_unchanged(tmp_path):
    roots = {
        "mnms": make_mnms(tmp_path / "a"),
        "mnms2": make_mnms2(tmp_path / "b"),
        "acdc": make_acdc(tmp_path / "c"),
        "nnunet": make_nnunet(tmp_path / "d", ACDC_V2, ACDC_CONVENTION),
    }
    save(tmp_path / "e" / "scan.nii", cine(60))
    roots["folder"] = tmp_path / "e"
    before = tree_hashes(tmp_path)
    for dataset, root in roots.items():
        refs = discover(dataset, root)
        for ref in refs:
            clone = pickle.loads(pickle.dumps(ref))
            assert clone == ref and hash(clone) == hash(ref)
            subject = quiet_load(clone)
            # never reoriented: the slice axis stays axis 2, the largest spacing
            assert subject.image.shape[:3] == SHAPE and int(np.argmax(subject.spacing)) == 2
            assert subject.key == ref.key and subject.dataset == dataset
            json.dumps(subject.extra)  # kept in the cache as JSON
            subject.image += 1.0  # writing the in-memory copy must not reach the file
    assert tree_hashes(tmp_path) == before


def test_find_files_follows_symlinked_folders_once(tmp_path):
    from cmrssp.data.sources import find_files

    elsewhere = tmp_path / "elsewhere" / "patient001"
    elsewhere.mkdir(parents=True)
    (elsewhere / "Info.cfg").write_text("ED: 1\n")
    (elsewhere / ".hidden.cfg").write_text("")
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "patient001").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(root, target_is_directory=True)  # a link back up: visited once
    found = find_files(root, r".*\.cfg")
    assert found == [root / "patient001" / "Info.cfg"]
