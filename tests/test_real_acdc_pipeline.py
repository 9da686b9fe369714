"""Real ACDC patients with only their ED/ES frame files, through every command (issue 11, items 2 and 5).

Seven real patients (six without a 4D cine, patient090 with one) are prepared at the tiny grid,
split, given a label-scarce subset, pretrained on, fine-tuned from that pretraining and
evaluated with ``--export-nifti``; every exported prediction must carry the geometry of the
source file it overlays on (the ED or ES frame file), field by field. The scans stay outside
the repository: the test root holds symlinks to their files.
"""

from __future__ import annotations

import json
import os
import warnings

import nibabel as nib
import numpy as np
import pytest

import run
from shared_data import REAL_ACDC, skip_module_without_real_acdc

skip_module_without_real_acdc()

from cmrssp.data.cache import open_cache  # noqa: E402
from cmrssp.data.source_header import geometry_differences  # noqa: E402
from cmrssp.data.splits import Split  # noqa: E402

PATIENTS = ("patient001", "patient011", "patient021", "patient031", "patient061", "patient081", "patient090")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("acdc-pipeline")
    raw = root / "training"
    for patient in PATIENTS:
        (raw / patient).mkdir(parents=True)
        for source in (REAL_ACDC / patient).iterdir():
            os.symlink(source, raw / patient / source.name)
    cache = root / "cache"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run.main(["prepare", "--dataset", "acdc", "--root", str(raw), "--out", str(cache),
                         "--spacing", "8", "--size", "32", "--workers", "1"]) == 0
    split = root / "split.json"
    assert run.main(["split", "--cache", str(cache), "--out", str(split), "--test", "2", "--valid-fraction", "0.25",
                     "--n-subjects", "2"]) == 0
    common = ["--preset", "tiny", "--data", str(cache), "--split", str(split), "--runs-dir", str(root / "runs"),
              "--no-progress"]
    assert run.main(["pretrain", "--method", "pcl", "--iterations", "2", *common]) == 0
    assert run.main(["finetune", "--init", "pcl", "--epochs", "1", "--out", str(root / "runs" / "ft"), *common]) == 0
    assert run.main(["evaluate", "--run", str(root / "runs" / "ft"), "--export-nifti"]) == 0
    return root, [str(w.message) for w in caught]


def test_each_finding_is_reported_once_for_the_dataset(pipeline):
    _, messages = pipeline
    geometry = [m for m in messages if "pixdim" in m and "placeholder" in m]
    missing = [m for m in messages if "no patient" in m and "_4d" in m]
    assert len(geometry) == 1 and "patient001_frame01.nii.gz" in geometry[0] and "1.562 x 1.562 x 10 mm" in geometry[0]
    assert len(missing) == 1 and "pretraining sees only those frames" in missing[0]


def test_ed_es_only_subjects_are_two_frame_labelled_subjects(pipeline):
    root, _ = pipeline
    cache = open_cache(root / "cache")
    assert len(cache) == len(PATIENTS) and len(cache.subjects(labelled=True)) == len(PATIENTS)
    meta = cache.meta("acdc-patient001")
    assert (meta.n_frames, meta.ed, meta.es, meta.label_phases) == (2, 0, 1, ("ED", "ES"))
    assert meta.extra["info_ed_es"] == [1, 12] and meta.extra["cine"] is False
    assert (meta.extra["height"], meta.extra["weight"]) == (184.0, 95.0)  # Info.cfg
    np.testing.assert_allclose(meta.spacing_native, [1.5625, 1.5625, 10.0])
    assert meta.geometry.chosen == "header" and meta.geometry.finding == "placeholder-affine"
    with_cine = cache.meta("acdc-patient090")
    assert (with_cine.n_frames, with_cine.ed, with_cine.es) == (12, 3, 10)  # Info.cfg ED 4, ES 11
    assert cache.image("acdc-patient001").shape[:2] == (2, meta.n_slices)


def test_split_subset_pretraining_and_finetuning_used_them(pipeline):
    root, _ = pipeline
    split = Split.load(root / "split.json")
    assert (len(split.train), len(split.test)) == (2, 2)
    assert (root / "runs" / "pretrain-pcl" / "weights-transfer.pt").is_file()
    config = json.loads((root / "runs" / "ft" / "config.json").read_text())
    assert config["init"] == "pcl"


def test_exports_carry_the_source_files_geometry(pipeline):
    root, _ = pipeline
    folder = root / "runs" / "ft" / "evaluation-test-last"
    split = Split.load(root / "split.json")
    rows = [line for line in (folder / "volumes.csv").read_text().splitlines()[1:] if line]
    assert len(rows) == 2 * len(split.test)
    for key in split.test:
        patient = key.split("-", 1)[1]
        info = dict(line.split(": ") for line in (REAL_ACDC / patient / "Info.cfg").read_text().splitlines() if ": " in line)
        for phase in ("ED", "ES"):
            exported = nib.load(folder / "nifti" / f"{key}_{phase}.nii.gz")
            for suffix in ("", "_gt"):
                source = nib.load(REAL_ACDC / patient / f"{patient}_frame{int(info[phase]):02d}{suffix}.nii.gz")
                assert geometry_differences(exported.header, source.header) == [], (key, phase, suffix)
                assert exported.shape == source.shape
                np.testing.assert_array_equal(exported.affine, source.affine)
            assert exported.get_data_dtype() == np.uint8
            assert set(np.unique(np.asarray(exported.dataobj))) <= {0, 1, 2, 3}


def test_predict_on_a_real_cine_keeps_its_header_and_finds_ed_es(pipeline):
    """patient090's real 4D cine as a loose file (ED/ES from the predicted LV curve, or none if
    this 1-epoch model predicts no LV) and as a patient folder (ED/ES from Info.cfg: 4 and 11)."""
    import csv

    root, _ = pipeline
    cine = REAL_ACDC / "patient090" / "patient090_4d.nii.gz"
    out = root / "predicted"
    assert run.main(["predict", "--run", str(root / "runs" / "ft"), "--input", str(cine), "--input",
                     str(root / "training" / "patient001"), "--out", str(out)]) == 0
    written, source = nib.load(out / "patient090_4d_pred.nii.gz"), nib.load(cine)
    assert written.shape == source.shape and geometry_differences(written.header, source.header) == []
    assert written.header["pixdim"][4] == source.header["pixdim"][4]
    with open(out / "volumes.csv") as handle:
        assert sum(row["subject"] == "patient090_4d" for row in csv.DictReader(handle)) == source.shape[3]
    with open(out / "measures.csv") as handle:
        measures = {row["subject"]: row for row in csv.DictReader(handle)}
    assert measures["patient090_4d"]["ed_es_source"] in ("curve", "none")
    folder_row = next(row for name, row in measures.items() if name != "patient090_4d")
    assert (folder_row["ed_es_source"], folder_row["ed_frame"], folder_row["es_frame"]) == ("dataset", "0", "1")
    assert float(folder_row["bsa_m2"]) == pytest.approx((184.0 * 95.0 / 3600) ** 0.5, abs=1e-3)  # Info.cfg
