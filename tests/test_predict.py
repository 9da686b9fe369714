"""``run.py predict`` at tiny scale: new scans -> label NIfTI on their own grid, volumes, measures."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

import run
from cmrssp.data.cache import open_cache
from cmrssp.data.phantom import write_cohort
from cmrssp.data.source_header import geometry_differences
from cmrssp.errors import InputError
from cmrssp.evaluate import load_run_model
from cmrssp.measures import bsa_mosteller
from cmrssp.models import UNet
from cmrssp.predict import MEASURE_COLUMNS, VOLUME_COLUMNS, detect_layout, find_scans, predict_inputs
from cmrssp.prediction import predict_subject, window_slices
from cmrssp.presets import FinetuneConfig
from cmrssp.runs import saved_config

QUIET = dict(log=lambda _: None)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj).astype(np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run, its cache and its raw phantom cohort (M&Ms layout).

    A 1-epoch tiny run predicts background everywhere, which would make every label check
    vacuous; its weights are replaced by a seeded random U-Net whose class logits are standardized
    over one window, so that all four classes appear with boundaries everywhere (the harshest test of
    exact agreement between two prediction paths).
    """
    root = tmp_path_factory.mktemp("predict")
    assert run.main(["finetune", "--preset", "tiny", "--epochs", "1", "--runs-dir", str(root / "runs"),
                     "--data-dir", str(root / "data"), "--no-progress"]) == 0
    run_dir = root / "runs" / "finetune-scratch-nall-s0"
    config = saved_config(FinetuneConfig, run_dir)
    cache = open_cache(config.data.cache)
    torch.manual_seed(0)
    model = UNet(config.unet).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 4:
                parameter.normal_(0.0, math.sqrt(2.0 / parameter[0].numel()))
        logits = model(window_slices(cache, cache.keys[0], 0))[0]
        mean, std = logits.mean(dim=(0, 2, 3)), logits.std(dim=(0, 2, 3))
        head = model.decoder.output_convs[-1]  # head 0 (full resolution): a 1x1 convolution
        head.weight /= std[:, None, None, None]
        head.bias.copy_((head.bias - mean) / std)
    torch.save(model.state_dict(), run_dir / "weights-last.pt")
    raw = root / "data" / "synthetic-mnms-tiny-n8-seed0"
    assert raw.is_dir()
    return SimpleNamespace(root=root, run_dir=run_dir, cache=cache, raw=raw)


@pytest.fixture(scope="module")
def folder_prediction(trained):
    """predict on the whole raw M&Ms-layout cohort folder (layout detected)."""
    out = trained.root / "predicted-folder"
    assert predict_inputs(trained.run_dir, [trained.raw], out, **QUIET) == out
    return out


def test_a_dataset_folder_gives_what_the_evaluation_path_gives(trained, folder_prediction):
    out, cache = folder_prediction, trained.cache
    config = saved_config(FinetuneConfig, trained.run_dir)
    model = load_run_model(trained.run_dir, config, "last", torch.device("cpu"))
    volumes, measures = _rows(out / "volumes.csv"), _rows(out / "measures.csv")
    assert list(volumes[0]) == list(VOLUME_COLUMNS) and list(measures[0]) == list(MEASURE_COLUMNS)
    assert sorted(row["subject"] for row in measures) == sorted(key.removeprefix("mnms-") for key in cache.keys)
    seen = np.zeros(4, dtype=np.int64)
    with_bsa = 0
    for key in cache.keys:
        meta, name = cache.meta(key), key.removeprefix("mnms-")
        source = nib.load(meta.source[0])
        written = nib.load(out / f"{name}_pred.nii.gz")
        labels = np.asarray(written.dataobj)
        # the input's own grid and header
        assert written.shape == source.shape and labels.dtype == np.uint8
        assert geometry_differences(source.header, written.header) == []
        np.testing.assert_array_equal(written.affine, source.affine)
        assert written.header["pixdim"][4] == source.header["pixdim"][4]
        seen += np.bincount(labels.ravel(), minlength=4)[:4]
        assert labels.max() <= 3
        # the key check: the ED and ES volumes equal evaluate's prediction of the cached subject
        for prediction in predict_subject(model, cache, key):
            np.testing.assert_array_equal(labels[..., prediction.frame], prediction.labels)
        # volumes.csv: every frame, voxel counts x voxel volume (closed form)
        rows = [row for row in volumes if row["subject"] == name]
        assert [int(row["frame"]) for row in rows] == list(range(source.shape[3]))
        voxel_ml = float(np.prod(meta.spacing_native)) / 1000.0
        for row in rows:
            counts = np.bincount(labels[..., int(row["frame"])].ravel(), minlength=4)
            assert [float(row[c]) for c in ("lv_ml", "myo_ml", "rv_ml")] == pytest.approx(
                (counts[1:4] * voxel_ml).tolist(), abs=1e-4)
        # ED/ES from the dataset's CSV; EDV is the LV volume of the ED frame
        row = next(row for row in measures if row["subject"] == name)
        assert row["ed_es_source"] == "dataset"
        assert (int(row["ed_frame"]), int(row["es_frame"])) == (meta.ed, meta.es)
        assert float(row["lvedv_ml"]) == pytest.approx(float(rows[meta.ed]["lv_ml"]), abs=1e-4)
        assert float(row["rvesv_ml"]) == pytest.approx(float(rows[meta.es]["rv_ml"]), abs=1e-4)
        if meta.extra.get("height") and meta.extra.get("weight"):  # the M&Ms CSV leaves some blank
            assert float(row["bsa_m2"]) > 0
            with_bsa += 1
        else:
            assert row["bsa_m2"] == ""
    assert with_bsa > 0
    assert np.all(seen > 0), f"every class should be predicted somewhere, got counts {seen}"


def test_loose_files_4d_and_3d(trained, folder_prediction, tmp_path, capsys):
    name = trained.cache.keys[0].removeprefix("mnms-")
    cine_file = Path(trained.cache.meta(trained.cache.keys[0]).source[0])
    loose = tmp_path / "scans"
    loose.mkdir()
    shutil.copy(cine_file, loose / "cine.nii.gz")
    # one frame with an ACDC-like header: placeholder sform (code 2), no qform, true spacing in pixdim
    cine = nib.load(cine_file)
    frame = np.asarray(cine.dataobj)[..., 2].astype(np.int16)
    header = nib.Nifti1Header()
    header.set_data_shape(frame.shape)
    header.set_data_dtype(np.int16)
    header.set_zooms(cine.header.get_zooms()[:3])
    header.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=2)
    header.set_qform(None, code=0)
    one_frame = nib.Nifti1Image(frame, None, header)
    nib.save(one_frame, loose / "frame.nii")

    out = tmp_path / "out"
    assert run.main(["predict", "--run", str(trained.run_dir), "--input", str(loose / "cine.nii.gz"),
                     "--input", str(loose / "frame.nii"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cine_pred.nii.gz" in printed and " s per subject" in printed
    # a cine as a loose file: the same labels as in its dataset folder, ED/ES from the LV curve
    labels = _labels(out / "cine_pred.nii.gz")
    np.testing.assert_array_equal(labels, _labels(folder_prediction / f"{name}_pred.nii.gz"))
    measures = {row["subject"]: row for row in _rows(out / "measures.csv")}
    volumes = _rows(out / "volumes.csv")
    lv = [float(row["lv_ml"]) for row in volumes if row["subject"] == "cine"]
    assert len(lv) == labels.shape[3]
    assert measures["cine"]["ed_es_source"] == "curve"
    ed_es = (int(measures["cine"]["ed_frame"]), int(measures["cine"]["es_frame"]))
    assert ed_es == (int(np.argmax(lv)), int(np.argmin(lv))) and ed_es[0] != ed_es[1]
    assert measures["cine"]["bsa_m2"] == ""  # no height or weight known for a loose file
    # one 3D frame: a 3D label file with the file's header exactly, one volume row, no ED/ES
    written = nib.load(out / "frame_pred.nii.gz")
    stored = nib.load(loose / "frame.nii")
    assert written.shape == frame.shape
    assert geometry_differences(stored.header, written.header) == []
    assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 0
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1, 2, 3}
    assert [row["frame"] for row in volumes if row["subject"] == "frame"] == ["0"]
    assert measures["frame"]["ed_es_source"] == "none" and measures["frame"]["lvedv_ml"] == ""


def test_acdc_layout_detected_with_source_label_values(trained, tmp_path):
    cohort = tmp_path / "acdc"
    write_cohort(cohort, 1, seed=3, layout="acdc", preset="tiny", progress=False)
    assert detect_layout(cohort) == "acdc"
    canonical = predict_inputs(trained.run_dir, [cohort], tmp_path / "canonical", **QUIET)
    source = predict_inputs(trained.run_dir, [cohort], tmp_path / "source", label_convention="source", **QUIET)
    labels = _labels(canonical / "patient001_pred.nii.gz")
    acdc_values = np.array([0, 3, 2, 1], dtype=np.uint8)  # ACDC: 1 RV, 2 MYO, 3 LV
    np.testing.assert_array_equal(_labels(source / "patient001_pred.nii.gz"), acdc_values[labels])
    # the tables always measure canonical classes
    assert (canonical / "measures.csv").read_bytes() == (source / "measures.csv").read_bytes()
    info = dict(line.split(": ") for line in (cohort / "training" / "patient001" / "Info.cfg").read_text().splitlines())
    row = _rows(canonical / "measures.csv")[0]
    assert row["ed_es_source"] == "dataset"
    assert (int(row["ed_frame"]), int(row["es_frame"])) == (int(info["ED"]) - 1, int(info["ES"]) - 1)
    assert float(row["bsa_m2"]) == pytest.approx(bsa_mosteller(float(info["Height"]), float(info["Weight"])), abs=1e-4)


def test_an_unreadable_input_fails_naming_it_and_writes_nothing_of_it(trained, tmp_path, capsys):
    bad = tmp_path / "x.nii.gz"
    bad.write_text("not an image\n")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="x.nii.gz"):
        predict_inputs(trained.run_dir, [bad], out, **QUIET)
    assert not out.exists() or not any(out.iterdir())
    assert run.main(["predict", "--run", str(trained.run_dir), "--input", str(bad), "--out", str(out)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    # after a good scan, the bad one leaves the good one's files and tables, and nothing of its own
    good = Path(trained.cache.meta(trained.cache.keys[0]).source[0])
    with pytest.raises(InputError, match="x.nii.gz"):
        predict_inputs(trained.run_dir, [good, bad], out, **QUIET)
    stem = good.name.removesuffix(".nii.gz")
    assert sorted(path.name for path in out.iterdir()) == sorted([f"{stem}_pred.nii.gz", "measures.csv", "volumes.csv"])
    assert [row["subject"] for row in _rows(out / "measures.csv")] == [stem]


def test_bad_runs_and_inputs_are_named(trained, tmp_path):
    gone = tmp_path / "run"
    gone.mkdir()
    config = json.loads((trained.run_dir / "config.json").read_text())
    config["data"]["cache"] = str(tmp_path / "deleted-cache")
    (gone / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="deleted-cache.*gone"):
        predict_inputs(gone, [trained.raw], tmp_path / "out", **QUIET)
    with pytest.raises(InputError, match="input not found"):
        predict_inputs(trained.run_dir, [tmp_path / "missing.nii.gz"], tmp_path / "out", **QUIET)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a NIfTI file"):
        find_scans([tmp_path / "notes.txt"])
    shutil.copy(Path(trained.cache.meta(trained.cache.keys[0]).source[0]), tmp_path / "a.nii.gz")
    (tmp_path / "again").mkdir()
    shutil.copy(tmp_path / "a.nii.gz", tmp_path / "again" / "a.nii.gz")
    with pytest.raises(InputError, match="output name 'a'"):
        find_scans([tmp_path / "a.nii.gz", tmp_path / "again" / "a.nii.gz"])
    with pytest.raises(InputError, match="checkpoint"):
        predict_inputs(trained.run_dir, [tmp_path / "a.nii.gz"], tmp_path / "out", checkpoint="first", **QUIET)


def test_layout_detection_reads_the_metadata_file_each_layout_requires(tmp_path):
    markers = {"nnunet": "dataset.json", "acdc": "training/patient001/Info.cfg", "mnms2": "dataset_information.csv",
               "mnms": "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv", "folder": "scans/a.nii.gz"}
    for layout, marker in markers.items():
        path = tmp_path / layout / marker
        path.parent.mkdir(parents=True)
        path.write_text("")
        assert detect_layout(tmp_path / layout) == layout
    # M&Ms' dataset/ folder, whose information CSV lies beside it (both M&Ms readers accept that)
    (tmp_path / "mnms" / "dataset").mkdir()
    assert detect_layout(tmp_path / "mnms" / "dataset") == "mnms"
