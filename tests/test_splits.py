"""Tests of cmrssp.data.splits: the study's split files, new splits, nested subsets."""

from __future__ import annotations


import pytest

from cmrssp.data.splits import Split, make_split, read_upstream_split, subset
from cmrssp.errors import InputError
from shared_data import UPSTREAM_SPLITS, needs_upstream

UPSTREAM = UPSTREAM_SPLITS


def _disjoint(split: Split) -> bool:
    parts = [set(split.train), set(split.valid), set(split.test)]
    sizes = [len(split.train), len(split.valid), len(split.test)]
    return [len(p) for p in parts] == sizes and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


# ----------------------------------------------------------------------------------------------
# The study's files


@needs_upstream
def test_upstream_full_split():
    split = read_upstream_split(UPSTREAM / "default-cine-split.yaml")
    assert (len(split.train), len(split.valid), len(split.test)) == (296, 74, 140)
    assert _disjoint(split)
    mm1 = [key for key in split.train if key.startswith("mnms-")]
    mm2 = [key for key in split.train if key.startswith("mnms2-")]
    assert (len(mm1), len(mm2)) == (225, 71)
    test_mm2 = sorted(key for key in split.test if key.startswith("mnms2-"))
    assert test_mm2 == [f"mnms2-{i:03d}" for i in range(281, 361)]
    assert "mnms-A1D9Z7" in split.test


@needs_upstream
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upstream_subsets_nested_and_disjoint(seed):
    full = read_upstream_split(UPSTREAM / "default-cine-split.yaml")
    previous = set()
    for n in (10, 15, 25, 50):
        split = read_upstream_split(UPSTREAM / f"default-cine-split-nr{n}-seed{seed}.yaml")
        assert _disjoint(split)
        assert (len(split.train), len(split.valid), len(split.test)) == (n, 74, 140)
        assert split.valid == full.valid and split.test == full.test
        assert previous < set(split.train) <= set(full.train)
        previous = set(split.train)


@needs_upstream
def test_upstream_vendor_splits_and_seed0_counts():
    for name, sizes in (("Vendor-A_B", (204, 52)), ("Vendor-C_D", (92, 22))):
        split = read_upstream_split(UPSTREAM / f"default-cine-split-{name}.yaml")
        assert (len(split.train), len(split.valid), len(split.test)) == (*sizes, 140) and _disjoint(split)
    nr10 = read_upstream_split(UPSTREAM / "default-cine-split-nr10-seed0.yaml")
    assert sum(key.startswith("mnms-") for key in nr10.train) == 6  # protocol 3.2: 6 mm1 / 4 mm2


@needs_upstream
def test_upstream_unknown_ids(tmp_path):
    path = UPSTREAM / "default-cine-split-nr10-seed0.yaml"
    split = read_upstream_split(path)
    available = set(split.keys)
    assert read_upstream_split(path, available_keys=available).train == split.train
    missing = sorted(split.test)[0]
    with pytest.raises(InputError, match=f"nr10-seed0.yaml: 1 subject.* available: {missing}$"):
        read_upstream_split(path, available_keys=available - {missing})


# ----------------------------------------------------------------------------------------------
# The YAML subset parser


def _write(tmp_path, text, name="split.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_subset_forms(tmp_path):
    text = (
        "# comment\n"
        "train:\n"
        "  mm1:\n"
        "    - A1B2C3\n"
        "    - 'D4E5F6'\n"
        "  \"mm2\":\n"
        "  - \"7\"\n"
        "\n"
        "valid:\n"
        "  mm1: []\n"
        "test:\n"
        "  mm2:\n"
        "  - 281\n"
    )
    split = read_upstream_split(_write(tmp_path, text))
    assert split.train == ["mnms-A1B2C3", "mnms-D4E5F6", "mnms2-007"]
    assert split.valid == [] and split.test == ["mnms2-281"]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("train:\n  mm1:\n  - a\nvalid:\n  mm1: x\ntest:\n", 5, "expected a list"),
        ("train:\n  mm1:\n  - a\n\tvalid:\n", 4, "tab"),
        ("train:\n  mm1:\n  - [a, b]\n", 3, "scalar"),
        ("train: [a]\n", 1, "nested mapping"),
        ("- a\n", 1, "outside"),
        ("train:\n  mm1:\n  - a\n    mm2:\n", 4, "indentation"),
        ("train:\n  mm1:\n  - a\ntrain:\n", 4, "repeated"),
        ("train:\n  mm1:\n  - \"a\\\"b\"\n", 3, "escapes"),
        ("train:\n  mm1:\n  - a\n just text\n", 4, "not a split-file line"),
    ],
)
def test_yaml_errors_name_the_line(tmp_path, text, line, problem):
    with pytest.raises(InputError, match=f"split.yaml: line {line}: .*{problem}"):
        read_upstream_split(_write(tmp_path, text))


def test_yaml_content_errors(tmp_path):
    with pytest.raises(InputError, match="missing section \"test\""):
        read_upstream_split(_write(tmp_path, "train:\n  mm1:\n  - a\nvalid:\n  mm1: []\n"))
    with pytest.raises(InputError, match="unknown dataset \"mm3\""):
        read_upstream_split(_write(tmp_path, "train:\n  mm3:\n  - a\nvalid:\n  mm1: []\ntest:\n  mm1: []\n"))
    with pytest.raises(InputError, match="appears in train and in test"):
        read_upstream_split(_write(tmp_path, "train:\n  mm1:\n  - a\nvalid:\n  mm1: []\ntest:\n  mm1:\n  - a\n"))
    with pytest.raises(InputError, match="not a number"):
        read_upstream_split(_write(tmp_path, "train:\n  mm2:\n  - x1\nvalid:\n  mm1: []\ntest:\n  mm1: []\n"))
    with pytest.raises(InputError, match="not found"):
        read_upstream_split(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------------------
# JSON files, new splits, subsets


KEYS = [f"mnms-{i:03d}" for i in range(40)]


def test_json_round_trip(tmp_path):
    split = make_split(KEYS, test=8, seed=3)
    split.save(tmp_path / "split.json")
    again = Split.load(tmp_path / "split.json")
    assert (again.train, again.valid, again.test) == (split.train, split.valid, split.test)
    assert again.provenance["seed"] == 3 and again.provenance["source"].endswith("split.json")
    assert read_upstream_split(tmp_path / "split.json", available_keys=KEYS).test == split.test
    (tmp_path / "bad.json").write_text('{"format": "cmrssp-split", "train": [], "valid": "x", "test": []}')
    with pytest.raises(InputError, match="bad.json: \"valid\" must be a list"):
        Split.load(tmp_path / "bad.json")


def test_make_split_counts_determinism_and_disjointness():
    split = make_split(reversed(KEYS), test=8, valid_fraction=0.25, seed=1)
    assert (len(split.train), len(split.valid), len(split.test)) == (24, 8, 8)
    assert _disjoint(split) and sorted(split.keys) == KEYS
    assert split.train == sorted(split.train)
    again = make_split(KEYS, test=8, valid_fraction=0.25, seed=1)
    assert (again.train, again.valid, again.test) == (split.train, split.valid, split.test)
    other = make_split(KEYS, test=8, valid_fraction=0.25, seed=2)
    assert other.test != split.test
    fraction = make_split(KEYS, test=0.25, seed=0)
    assert len(fraction.test) == 10 and len(fraction.valid) == 6
    with pytest.raises(InputError):
        make_split(KEYS, test=41)
    with pytest.raises(InputError, match="duplicate"):
        make_split(KEYS + KEYS[:1], test=4)


def test_make_split_stratified():
    vendors = {key: "ABCD"[i % 4] for i, key in enumerate(KEYS)}
    split = make_split(KEYS, test=8, valid_fraction=0.25, seed=0, stratify=vendors)
    assert _disjoint(split)
    for part, per_vendor in (("test", 2), ("valid", 2), ("train", 6)):
        counts = {vendor: sum(vendors[key] == vendor for key in getattr(split, part)) for vendor in "ABCD"}
        assert counts == dict.fromkeys("ABCD", per_vendor), part
    with pytest.raises(InputError, match="stratification group"):
        make_split(KEYS, test=8, stratify={KEYS[0]: "A"})


def test_subset_nested_deterministic():
    split = make_split(KEYS, test=5, valid_fraction=0.2, seed=0)
    assert len(split.train) == 28
    for seed in (0, 1):
        previous = set()
        for n in (10, 15, 25, "all"):
            part = subset(split, n, seed)
            assert part.valid == split.valid and part.test == split.test and _disjoint(part)
            assert len(part.train) == (28 if n == "all" else n)
            assert previous < set(part.train) <= set(split.train)
            assert part.train == subset(split, n, seed).train
            previous = set(part.train)
    assert subset(split, 10, 0).train != subset(split, 10, 1).train
    assert subset(split, 10, 0).provenance["subset"] == 10
    with pytest.raises(InputError, match="pool of 28"):
        subset(split, 29, 0)
    with pytest.raises(InputError, match="positive integer"):
        subset(split, 0, 0)


def test_split_rejects_overlap():
    with pytest.raises(InputError, match="appears in train and in valid"):
        Split(["a", "b"], ["b"], [])
    with pytest.raises(InputError, match="appears twice in test"):
        Split([], [], ["c", "c"])
