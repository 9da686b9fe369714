"""Tests of the study's 15 split files shipped as package data (cmrssp.data.splits, protocol 3.1, 3.2).

The structural tests hold on a user's clone (they read only the package data); the comparisons
with the study's YAML files and the regeneration of the JSON need ../shared and skip without it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cmrssp.data.splits import (
    PUBLISHED_SPLIT_FILES,
    PUBLISHED_SPLIT_NAMES,
    Split,
    label_scarce_subset,
    make_split,
    published_split,
    published_subset,
    read_upstream_split,
    subset,
)
from cmrssp.errors import InputError
from shared_data import UPSTREAM_SPLITS, needs_upstream

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGED = REPOSITORY / "cmrssp" / "data" / "published_splits.json"
KEY = re.compile(r"^(mnms-[A-Z0-9]{6}|mnms2-\d{3})$")

# Protocol 3.2: train subjects (mm1, mm2) of each subset file, per size and seed.
SUBSET_COUNTS = {
    10: [(6, 4), (4, 6), (8, 2)],
    15: [(10, 5), (9, 6), (12, 3)],
    25: [(16, 9), (15, 10), (21, 4)],
    50: [(37, 13), (33, 17), (41, 9)],
}


def _by_dataset(keys: list[str]) -> tuple[int, int]:
    return sum(key.startswith("mnms-") for key in keys), sum(key.startswith("mnms2-") for key in keys)


# ----------------------------------------------------------------------------------------------
# Structure (package data only)


def test_names():
    expected = {"paper", "paper-vendor-A_B", "paper-vendor-C_D"} | {
        f"paper-nr{n}-seed{seed}" for n in (10, 15, 25, 50) for seed in (0, 1, 2)
    }
    assert len(PUBLISHED_SPLIT_NAMES) == 15 and set(PUBLISHED_SPLIT_NAMES) == expected


def test_paper_split_sizes_and_keys():
    paper = published_split("paper")
    assert (len(paper.train), len(paper.valid), len(paper.test)) == (296, 74, 140)
    assert [_by_dataset(getattr(paper, part)) for part in ("train", "valid", "test")] == [(225, 71), (60, 14), (60, 80)]
    assert sorted(k for k in paper.test if k.startswith("mnms2-")) == [f"mnms2-{i}" for i in range(281, 361)]
    for name in PUBLISHED_SPLIT_NAMES:
        split = published_split(name)
        assert all(KEY.match(key) for key in split.keys), name
        assert len(set(split.keys)) == len(split.keys), name  # disjoint parts, no repeats
        assert split.provenance == {"source": name, "published": name, "format": "published"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subsets_sizes_counts_nesting(seed):
    paper = published_split("paper")
    previous: set[str] = set()
    for n in (10, 15, 25, 50):
        split = published_split(f"paper-nr{n}-seed{seed}")
        assert len(split.train) == n and _by_dataset(split.train) == SUBSET_COUNTS[n][seed]
        assert split.valid == paper.valid and split.test == paper.test
        assert previous < set(split.train) <= set(paper.train)
        previous = set(split.train)


def test_vendor_splits():
    paper = published_split("paper")
    for name, sizes in (("paper-vendor-A_B", (204, 52)), ("paper-vendor-C_D", (92, 22))):
        split = published_split(name)
        assert (len(split.train), len(split.valid)) == sizes and split.test == paper.test


# ----------------------------------------------------------------------------------------------
# Names where a split file path is accepted


def test_read_by_name_and_available_keys(tmp_path, monkeypatch):
    by_name = read_upstream_split("paper-nr10-seed0")
    assert by_name == published_split("paper-nr10-seed0")
    assert read_upstream_split(Path("paper-nr10-seed0")).train == by_name.train  # a Path of a name is the name too

    mnms_only = [key for key in published_split("paper").keys if key.startswith("mnms-")]
    # 4 train + 14 valid + 80 test M&Ms-2 subjects (protocol 3.1, 3.2)
    with pytest.raises(InputError, match=r"^published split paper-nr10-seed0: 98 subject\(s\) of the split "
                                         r"\(mnms2: 98 of 98 missing\) are not available: mnms2-104, "):
        read_upstream_split("paper-nr10-seed0", available_keys=mnms_only)

    # A local file named like a split is read with a slash; without one, the name wins.
    monkeypatch.chdir(tmp_path)
    make_split([f"mnms-X{i:05d}" for i in range(10)], test=2).save(tmp_path / "paper")
    assert len(read_upstream_split("./paper").train) == 6
    assert len(read_upstream_split("paper").train) == 296


def test_unknown_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"^paper-nr11-seed0: neither a published split nor an existing file; the published splits are: paper, "
                                         r"paper-nr10-seed0, .*paper-vendor-C_D$"):
        read_upstream_split("paper-nr11-seed0")
    with pytest.raises(InputError, match="unknown published split"):
        published_split("paper-vendor-A")
    with pytest.raises(InputError, match="split file not found"):  # not a name: an ordinary missing file
        read_upstream_split("splits.yaml")


# ----------------------------------------------------------------------------------------------
# The label-scarce subset


def test_label_scarce_subset_uses_published_file():
    paper = published_split("paper")
    chosen = label_scarce_subset(paper, 10, 0)
    assert chosen.train == published_split("paper-nr10-seed0").train
    assert chosen.valid == paper.valid and chosen.test == paper.test
    assert chosen.provenance["published"] == "paper-nr10-seed0" and chosen.provenance["subset_of"] == "paper"
    assert published_subset(paper, 50, 2).train == published_split("paper-nr50-seed2").train

    # No published file (n = 3, seed 3, "all"): the drawn subset.
    for n, seed in ((3, 0), (10, 3), ("all", 0)):
        assert published_subset(paper, n, seed) is None
        assert label_scarce_subset(paper, n, seed).train == subset(paper, n, seed).train

    # Not the paper split: a vendor split, a drawn split, or a paper split with a changed train list.
    changed = Split(paper.train[1:], paper.valid, paper.test, dict(paper.provenance))
    for other in (published_split("paper-vendor-A_B"), make_split(paper.keys, test=140), changed):
        assert published_subset(other, 10, 0) is None
        assert label_scarce_subset(other, 10, 0).train == subset(other, 10, 0).train


def test_study_file_counts_as_paper(tmp_path):
    """The study's own default-cine-split.yaml (here a copy written from the facts) is the paper split."""
    paper = published_split("paper")
    lines = []
    for part in ("test", "train", "valid"):
        lines.append(f"{part}:")
        for upstream, prefix in (("mm1", "mnms-"), ("mm2", "mnms2-")):
            lines.append(f"  {upstream}:")
            lines += [f"  - {key[len(prefix):]}" for key in getattr(paper, part) if key.startswith(prefix)]
    (tmp_path / "default-cine-split.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "other.yaml").write_text("\n".join(lines) + "\n")
    from_file = read_upstream_split(tmp_path / "default-cine-split.yaml")
    assert label_scarce_subset(from_file, 15, 1).train == published_split("paper-nr15-seed1").train
    assert published_subset(read_upstream_split(tmp_path / "other.yaml"), 15, 1) is None


# ----------------------------------------------------------------------------------------------
# Against the study's files (../shared)


@needs_upstream
def test_packaged_splits_equal_the_study_files():
    for name, file_name in PUBLISHED_SPLIT_FILES.items():
        from_file = read_upstream_split(UPSTREAM_SPLITS / file_name)
        packaged = published_split(name)
        assert (packaged.train, packaged.valid, packaged.test) == (from_file.train, from_file.valid, from_file.test), name
        assert published_subset(from_file, 25, 2) is None or name == "paper"
    assert label_scarce_subset(read_upstream_split(UPSTREAM_SPLITS / "default-cine-split.yaml"), 25, 2).train == (
        read_upstream_split(UPSTREAM_SPLITS / "default-cine-split-nr25-seed2.yaml").train
    )


@needs_upstream
def test_generator_reproduces_the_package_data(tmp_path):
    out = tmp_path / "published_splits.json"
    script = REPOSITORY / "benchmarks" / "make_published_splits.py"
    done = subprocess.run([sys.executable, str(script), str(UPSTREAM_SPLITS), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == PACKAGED.read_bytes()


@needs_upstream
def test_generator_refuses_a_subset_with_other_valid(tmp_path):
    """Only train is stored for a subset file, so one whose valid differs is refused."""
    for file_name in PUBLISHED_SPLIT_FILES.values():
        (tmp_path / file_name).write_text((UPSTREAM_SPLITS / file_name).read_text())
    broken = tmp_path / "default-cine-split-nr10-seed0.yaml"
    split = read_upstream_split(broken)
    text = broken.read_text().replace(f'"{split.valid[0][len("mnms-"):]}"', '"Z9Z9Z9"')
    assert text != broken.read_text()
    broken.write_text(text)
    script = REPOSITORY / "benchmarks" / "make_published_splits.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path), "--out", str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "valid subjects differ" in done.stderr and not (tmp_path / "out.json").exists()
