"""End to end through run.py: phantom -> prepare -> split -> slices, and bad input at the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import run
from cmrssp import cli
from cmrssp.data.cache import open_cache
from cmrssp.data.slices import load_slices
from cmrssp.data.splits import Split

ROOT = Path(__file__).resolve().parents[1]


def test_help_of_every_command_runs():
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "prepare" in result.stdout and "phantom" in result.stdout
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(commands) == {"phantom", "prepare", "split", "info", "pretrain", "finetune", "evaluate", "predict",
                             "study", "results", "probe"}
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            run.main([command, "--help"])
        assert exit_info.value.code == 0


def test_help_and_info_need_no_torch(tmp_path):
    """--help of every command, and reading a cache (`info`), import neither torch nor the cache writer."""
    code = ("import sys, contextlib, io\n"
            "from cmrssp.cli import build_parser\n"
            "parser = build_parser()\n"
            "for command in parser._subparsers._group_actions[0].choices:\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        parser.parse_args([command, '--help'])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_abbreviated_flags_are_refused(capsys):
    """--subset must not silently mean --subset-seed (argparse's abbreviations are off)."""
    with pytest.raises(SystemExit) as exit_info:
        run.main(["split", "--cache", "c", "--out", "s.json", "--subset", "2"])
    assert exit_info.value.code == 2 and "--subset" in capsys.readouterr().err


def test_every_flag_is_defined_once_in_the_command_line_module():
    """One definition per flag: a flag string appears in at most one add_argument call of cmrssp/cli.py."""
    import re

    text = (ROOT / "cmrssp" / "cli.py").read_text()
    flags = re.findall(r'add_argument\(\s*"(--[a-z-]+)"', text)
    repeated = sorted({flag for flag in flags if flags.count(flag) > 1})
    assert not repeated, repeated


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "phantoms"
    assert run.main(["phantom", "--out", str(out), "--subjects", "6", "--cohort-seed", "3", "--scale", "tiny"]) == 0
    return out


@pytest.mark.parametrize("layout", ["mnms", "mnms2", "acdc"])
def test_phantom_layouts_prepare_into_one_consistent_cache(tmp_path, layout):
    raw = tmp_path / layout
    assert run.main(["phantom", "--out", str(raw), "--subjects", "2", "--cohort-seed", "1", "--layout", layout, "--scale", "tiny"]) == 0
    cache_dir = tmp_path / "cache"
    args = ["prepare", "--dataset", layout, "--root", str(raw), "--out", str(cache_dir), "--spacing", "5", "--size", "32"]
    assert run.main(args) == 0
    cache = open_cache(cache_dir)
    assert len(cache.keys) == 2 and all(key.startswith(f"{layout}-") for key in cache.keys)
    qa = {row.split(",")[0] for row in (raw / "phantom_qa.csv").read_text().splitlines()[1:]}
    for key in cache.keys:
        meta = cache.meta(key)
        assert meta.labelled and list(meta.label_phases) == ["ED", "ES"]
        assert meta.subject_id in qa
        labels = cache.labels(key)
        # canonical labels whatever the layout: the LV cavity (1) sits inside the myocardium (2)
        assert set(np.unique(labels)) <= {0, 1, 2, 3} and (labels == 1).sum() > 0 and (labels == 2).sum() > 0


def test_prepare_split_and_slices_end_to_end(tmp_path, tiny_cohort):
    cache_dir = tmp_path / "cache"
    assert run.main(["prepare", "--dataset", "mnms", "--root", str(tiny_cohort), "--out", str(cache_dir),
                     "--spacing", "5", "--size", "32", "--workers", "2"]) == 0
    before = json.loads((cache_dir / "manifest.json").read_text())
    # a second call skips everything and leaves the cache as it was
    assert run.main(["prepare", "--dataset", "mnms", "--root", str(tiny_cohort), "--out", str(cache_dir),
                     "--spacing", "5", "--size", "32"]) == 0
    assert json.loads((cache_dir / "manifest.json").read_text())["subjects"] == before["subjects"]
    split_file = tmp_path / "split.json"
    assert run.main(["split", "--cache", str(cache_dir), "--out", str(split_file), "--test", "2", "--split-seed", "0",
                     "--n-subjects", "2", "--subset-seed", "1"]) == 0
    split = Split.load(split_file)
    assert len(split.test) == 2 and len(split.train) == 2
    assert not set(split.train) & set(split.valid) and not set(split.train) & set(split.test)
    cache = open_cache(cache_dir)
    segmentation = load_slices(cache, split.train, "segmentation")
    pretraining = load_slices(cache, split.train, "pretraining")
    n_slices = sum(cache.meta(k).n_slices for k in split.train)
    n_frames = sum(cache.meta(k).n_slices * cache.meta(k).n_frames for k in split.train)
    assert len(segmentation) == 2 * n_slices and len(pretraining) == n_frames
    assert run.main(["info", "--cache", str(cache_dir)]) == 0


def test_upstream_split_with_unknown_subjects_fails_clearly(tmp_path, tiny_cohort, capsys):
    cache_dir = tmp_path / "cache"
    run.main(["prepare", "--dataset", "mnms", "--root", str(tiny_cohort), "--out", str(cache_dir), "--spacing", "5", "--size", "32"])
    capsys.readouterr()
    # A split file in the study's format (default-cine-split*.yaml) naming subjects this cache lacks.
    upstream = tmp_path / "default-cine-split-nr2-seed0.yaml"
    upstream.write_text('"test":\n  "mm1":\n  - "Z0Z0Z1"\n"train":\n  "mm1":\n  - "Z0Z0Z2"\n  - "Z0Z0Z3"\n'
                        '"valid":\n  "mm1":\n  - "Z0Z0Z4"\n')
    code = run.main(["split", "--cache", str(cache_dir), "--out", str(tmp_path / "s.json"), "--split", str(upstream)])
    error = error_line(capsys)
    assert code == 2
    assert str(upstream) in error and "4 subject(s)" in error and "not available" in error
    assert not (tmp_path / "s.json").exists()
    # the study's published splits by name, with no file at hand: this cache lacks their subjects
    code = run.main(["split", "--cache", str(cache_dir), "--out", str(tmp_path / "s.json"), "--split", "paper-nr10-seed0"])
    error = error_line(capsys)
    assert code == 2 and "published split paper-nr10-seed0" in error and "not available" in error
    assert run.main(["finetune", "--preset", "tiny", "--data", str(cache_dir), "--split", "paper", "--no-progress",
                     "--out", str(tmp_path / "run")]) == 2
    assert "published split paper" in error_line(capsys)
    # a drawn split stratified over a subject field, by the rule finetune draws with
    assert run.main(["split", "--cache", str(cache_dir), "--out", str(tmp_path / "s.json"), "--test", "0.25",
                     "--stratify", "pathology"]) == 0
    assert Split.load(tmp_path / "s.json").provenance["stratified_by"] == "pathology"


def test_command_line_names_match_the_package():
    from cmrssp.presets import PRESET_NAMES
    from cmrssp.protocols import PROTOCOLS

    from cmrssp.config import PREPARE_PRESETS
    from cmrssp.data.phantom import PHANTOM_PRESETS
    from cmrssp.methods import METHODS

    assert cli.PRESET_NAMES == PRESET_NAMES and cli.PROTOCOL_NAMES == tuple(PROTOCOLS)
    assert cli.GRID_NAMES == tuple(PREPARE_PRESETS) and cli.PHANTOM_SCALES == tuple(PHANTOM_PRESETS)
    assert cli.METHOD_NAMES == METHODS


def error_line(capsys) -> str:
    """The one error line (progress bars may share stderr); it must be the last thing printed."""
    lines = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda root: corrupt(sorted(root.rglob("*_sa.nii.gz"))[1]), "corrupt"),
        (lambda root: [p.unlink() for p in root.glob("*.csv")], "CSV"),
        (lambda root: [p.write_text(p.read_text().replace("External code", "Code")) for p in root.glob("*.csv")], "External code"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_partial_cache(tmp_path, tiny_cohort, capsys, damage, expected):
    import shutil

    root = tmp_path / "raw"
    shutil.copytree(tiny_cohort, root)
    damage(root)
    cache_dir = tmp_path / "cache"
    code = run.main(["prepare", "--dataset", "mnms", "--root", str(root), "--out", str(cache_dir), "--spacing", "5", "--size", "32"])
    error = error_line(capsys)
    assert code == 2 and expected in error
    leftovers = [p for p in cache_dir.rglob("*") if p.name.startswith(".tmp")] if cache_dir.exists() else []
    assert leftovers == []
    if cache_dir.exists():  # subjects before the bad one are complete; none is partial
        for folder in (cache_dir / "subjects").iterdir():
            assert (folder / "meta.json").is_file() and (folder / "image.npy").is_file()


def test_missing_root_and_empty_folder(tmp_path, capsys):
    assert run.main(["prepare", "--dataset", "acdc", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run.main(["prepare", "--dataset", "folder", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "c")]) == 2
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "c" / "subjects").exists() or not any((tmp_path / "c" / "subjects").iterdir())


def test_prepare_geometry_flag_is_recorded_and_checked(tmp_path, tiny_cohort, capsys):
    cache_dir = tmp_path / "cache"
    args = ["prepare", "--dataset", "mnms", "--root", str(tiny_cohort), "--out", str(cache_dir), "--spacing", "5",
            "--size", "32", "--geometry", "header"]
    assert run.main(args) == 0
    cache = open_cache(cache_dir)
    assert cache.config.geometry == "header"
    meta = cache.meta(cache.keys[0])
    assert meta.geometry.mode == "header" and meta.geometry.finding is None  # the phantom's records agree
    capsys.readouterr()
    args[-1] = "affine"
    assert run.main(args) == 2  # one cache, one rule
    assert "prepared with" in error_line(capsys)
    with pytest.raises(SystemExit):
        run.main(args[:-1] + ["itk"])


def test_console_script_is_the_same_command_line():
    """pyproject's `cmrssp` script points at cli.console_script, which runs cli.main (as run.py does)."""
    import importlib
    import re

    declared = re.search(r'^cmrssp = "([\w.]+):(\w+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert declared, "pyproject.toml declares no cmrssp console script"
    function = getattr(importlib.import_module(declared.group(1)), declared.group(2))
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = ['cmrssp', 'info', '--cache', 'nowhere']; "
                             f"from {declared.group(1)} import {declared.group(2)}; {declared.group(2)}()"],
                            capture_output=True, text=True, cwd=ROOT)
    assert callable(function) and result.returncode == 2 and "nowhere" in result.stderr
