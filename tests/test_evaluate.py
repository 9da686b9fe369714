"""``run.py evaluate`` at tiny scale: scores in original space, NIfTI export, pending-only runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

import run
from cmrssp.data.cache import open_cache
from cmrssp.data.splits import Split
from cmrssp.errors import InputError
from cmrssp.evaluate import EvaluateOptions, evaluate_run, source_label_lookup
from cmrssp.metrics import dice_3d
from cmrssp.results import VOLUME_COLUMNS, read_volumes_csv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A runs folder with one finished tiny from-scratch run (and its data folder)."""
    root = tmp_path_factory.mktemp("evaluate")
    args = ["finetune", "--preset", "tiny", "--epochs", "2", "--runs-dir", str(root / "runs"),
            "--data-dir", str(root / "data"), "--no-progress"]
    assert run.main(args) == 0
    return root


def test_evaluation_scores_every_test_volume_in_the_original_grid(trained, tmp_path):
    run_dir = trained / "runs" / "finetune-scratch-nall-s0"
    folder = evaluate_run(run_dir, EvaluateOptions(export_nifti=True), log=lambda _: None)
    assert folder == run_dir / "evaluation-test-last"
    rows = read_volumes_csv(folder / "volumes.csv")
    split = Split.load(run_dir / "split.json")
    assert sorted({row["key"] for row in rows}) == sorted(split.test)
    assert sorted(row["phase"] for row in rows) == ["ED", "ES"] * len(split.test) or \
        sorted(row["phase"] for row in rows) == sorted(["ED", "ES"] * len(split.test))
    assert list(rows[0]) == list(VOLUME_COLUMNS)
    config = json.loads((run_dir / "config.json").read_text())
    cache = open_cache(config["data"]["cache"])
    for row in rows:
        meta = cache.meta(row["key"])
        exported = nib.load(folder / "nifti" / f"{row['key']}_{row['phase']}.nii.gz")
        # the viewer overlay: same affine and shape as the subject's original file
        np.testing.assert_allclose(exported.affine, np.asarray(meta.affine), atol=1e-5)
        assert exported.shape == tuple(meta.native_shape[:3])
        predicted = np.asarray(exported.dataobj).astype(np.uint8)
        volume = list(meta.label_phases).index(row["phase"])
        truth = cache.labels_native(row["key"])[..., volume]
        dice = dice_3d(predicted, truth)
        assert [row["dice_lv"], row["dice_myo"], row["dice_rv"]] == pytest.approx(dice.tolist())
        assert row["dice_mean"] == pytest.approx(dice.mean())
        assert row["hd95_mean"] >= 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["n_volumes"] == len(rows) and {"all", "ED", "ES"} <= set(summary["groups"])
    recorded = json.loads((folder / "evaluation.json").read_text())
    assert recorded["weights"] == "weights-last.pt" and recorded["volumes"] == len(rows)


def test_a_perfect_prediction_scores_one(trained):
    # the ground truth mapped through the evaluation path scores Dice 1 and HD95 0
    from cmrssp.evaluate import score_volume
    from cmrssp.prediction import VolumePrediction

    config = json.loads((trained / "runs" / "finetune-scratch-nall-s0" / "config.json").read_text())
    cache = open_cache(config["data"]["cache"])
    key = cache.subjects(labelled=True)[0]
    meta = cache.meta(key)
    truth = cache.labels_native(key)[..., 0]
    row = score_volume(VolumePrediction(key, "ED", 0, truth.copy(), truth, tuple(meta.spacing_native)), meta)
    assert row["dice_mean"] == 1.0 and row["hd95_mean"] == 0.0


def test_source_label_convention_lookup():
    acdc = source_label_lookup(SimpleNamespace(dataset="acdc", key="acdc-1", extra={}), None)
    assert acdc.tolist() == [0, 3, 2, 1]  # ACDC: 1 RV, 2 MYO, 3 LV
    assert source_label_lookup(SimpleNamespace(dataset="mnms", key="mnms-A", extra={}), None).tolist() == [0, 1, 2, 3]
    nnunet = SimpleNamespace(dataset="nnunet", key="nnunet-7", extra={"label_map": {"0": 0, "10": 3, "20": 2, "30": 1}})
    assert source_label_lookup(nnunet, None).tolist() == [0, 30, 20, 10]
    with pytest.raises(InputError, match="label values"):
        source_label_lookup(SimpleNamespace(dataset="nnunet", key="nnunet-7", extra={}), None)


def test_evaluate_without_arguments_does_only_pending_runs(trained, capsys):
    runs = trained / "runs"
    args = ["evaluate", "--runs-dir", str(runs), "--checkpoint", "best"]
    assert run.main(args) == 0
    csv_path = runs / "finetune-scratch-nall-s0" / "evaluation-test-best" / "volumes.csv"
    first = csv_path.stat().st_mtime_ns
    assert "finetune-scratch-nall-s0" in capsys.readouterr().out
    assert run.main(args) == 0  # nothing pending: nothing rewritten, the table printed again
    assert csv_path.stat().st_mtime_ns == first
    assert "finetune-scratch-nall-s0" in capsys.readouterr().out


def test_evaluate_errors_name_the_problem(trained, tmp_path, capsys):
    assert run.main(["evaluate", "--runs-dir", str(tmp_path / "nothing")]) == 2
    assert "runs folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run.main(["evaluate", "--runs-dir", str(tmp_path / "empty")]) == 2
    assert "no finished fine-tuning run" in capsys.readouterr().err
    run_dir = trained / "runs" / "finetune-scratch-nall-s0"
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "split.json", "complete.json"):
        (broken / name).write_bytes((run_dir / name).read_bytes())
    assert run.main(["evaluate", "--run", str(broken)]) == 2
    assert "weights-last.pt" in capsys.readouterr().err and not (broken / "evaluation-test-last").exists()
    (broken / "weights-last.pt").write_bytes(b"not a weight file")
    assert run.main(["evaluate", "--run", str(broken)]) == 2
    assert "weights-last.pt" in capsys.readouterr().err and not (broken / "evaluation-test-last").exists()


def test_evaluation_reports_clinical_measures_against_the_ground_truth(trained):
    import csv

    from cmrssp.agreement import read_measures_csv, split_by_source
    from cmrssp.measures import MEASURES

    run_dir = trained / "runs" / "finetune-scratch-nall-s0"
    folder = evaluate_run(run_dir, EvaluateOptions(), log=lambda _: None)
    predicted, reference = split_by_source(read_measures_csv(folder / "measures.csv"))
    split = Split.load(run_dir / "split.json")
    assert sorted(row["key"] for row in reference) == sorted(split.test) == sorted(row["key"] for row in predicted)
    # the reference measures are the phantom's own: its QA file counts the same voxels at the same ED/ES
    qa_file = next(trained.glob("data/**/phantom_qa.csv"))
    qa = {f"mnms-{row['subject_id']}": row for row in csv.DictReader(qa_file.open())}
    for row in reference:
        truth = qa[row["key"]]
        assert row["lvef_pct"] == pytest.approx(float(truth["lv_ef_pct"]), abs=0.006)
        assert row["rvef_pct"] == pytest.approx(float(truth["rv_ef_pct"]), abs=0.006)
        assert row["lvmass_g"] == pytest.approx(float(truth["myo_mass_ed_g"]), abs=0.006)
    with open(folder / "agreement.csv") as handle:
        agreement = {row["measure"]: row for row in csv.DictReader(handle)}
    assert list(agreement) == list(MEASURES)
    for measure in ("lvedv_ml", "lvef_pct"):  # an EF is NaN where the tiny model predicts no LV: dropped, counted
        differences = np.array([p[measure] - r[measure] for p, r in zip(predicted, reference)])
        kept = differences[np.isfinite(differences)]
        assert int(agreement[measure]["n"]) == kept.size and int(agreement[measure]["n_dropped"]) == differences.size - kept.size
        if kept.size:
            assert float(agreement[measure]["bias"]) == pytest.approx(kept.mean())
            assert float(agreement[measure]["mae"]) == pytest.approx(np.abs(kept).mean())
    assert int(agreement["lvedv_ml"]["n"]) == len(reference)  # a volume always exists
    assert "lvef_pct" in json.loads((folder / "summary.json").read_text())["agreement"]
