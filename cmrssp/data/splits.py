"""Subject splits (train / valid / test) and the study's nested label-scarce subsets.

- :func:`read_upstream_split` imports the study's split files (protocol 3.1, 3.2:
  ``default-cine-split[-nr{10,15,25,50}-seed{0,1,2}].yaml``), or our own JSON split files.
- :func:`make_split` draws a new seeded (optionally stratified) split from a list of keys.
- :func:`subset` draws n training subjects, nested within a seed (10 ⊂ 15 ⊂ 25 ⊂ 50 ⊂ all),
  keeping valid and test unchanged, as the study's subset files do.
- The study's 15 published split files ship as package data (``published_splits.json``):
  :func:`published_split` returns one by name (:data:`PUBLISHED_SPLIT_NAMES`: ``paper``,
  ``paper-nr{10,15,25,50}-seed{0,1,2}``, ``paper-vendor-A_B``, ``paper-vendor-C_D``), and every
  function that takes a split file path also takes such a name. :func:`label_scarce_subset`
  uses the published subset files for the paper split (the study's procedure that drew them is
  not known, protocol 3.2, so :func:`subset` cannot reproduce them) and :func:`subset` otherwise.

A subject key is ``<dataset>-<subject_id>`` (``Subject.key``); the study's "mm1" is our dataset
"mnms" and "mm2" is "mnms2" (ids zero-padded to 3 digits).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from cmrssp.atomic import write_json
from cmrssp.errors import InputError, read_text

PARTS = ("train", "valid", "test")
UPSTREAM_DATASETS = {"mm1": "mnms", "mm2": "mnms2"}
SPLIT_FORMAT = "cmrssp-split"


@dataclass
class Split:
    """Disjoint lists of subject keys; ``provenance`` says where they came from."""

    train: list[str]
    valid: list[str]
    test: list[str]
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check(self.provenance.get("source"))

    def check(self, where: str | os.PathLike | None = None) -> "Split":
        """InputError if a key repeats within a part or appears in two parts."""
        seen: dict[str, str] = {}
        for part in PARTS:
            for key in getattr(self, part):
                if key in seen:
                    where_else = "twice in" if seen[key] == part else f"in {seen[key]} and in"
                    raise InputError(where, f"subject {key} appears {where_else} {part}")
                seen[key] = part
        return self

    @property
    def keys(self) -> list[str]:
        """All keys of the split, sorted."""
        return sorted(self.train + self.valid + self.test)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "train": list(self.train),
            "valid": list(self.valid),
            "test": list(self.test),
            "provenance": self.provenance,
        }

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Split":
        """Read a split written by :meth:`save` (or an upstream YAML, see read_upstream_split)."""
        return read_upstream_split(path)

    def __str__(self) -> str:
        return f"Split(train {len(self.train)}, valid {len(self.valid)}, test {len(self.test)})"


# ----------------------------------------------------------------------------------------------
# Reading split files


def read_upstream_split(path: str | os.PathLike, available_keys: Iterable[str] | None = None) -> Split:
    """Read a study split YAML (mm1/mm2 id lists), one of our JSON split files, or a published split by name.

    Args:
        path: the split file, or the name of a published split (:data:`PUBLISHED_SPLIT_NAMES`,
            e.g. ``"paper-nr10-seed0"``). A name always means the package data: a local file
            literally called ``paper`` must be given with a slash (``./paper``). The check is
            on ``str(path)`` as received, and ``str(Path("./paper")) == "paper"``, so a caller
            that converts the argument to a Path first (run.py's ``--split``) loses the ``./``
            and gets the published split: names win. A slash-free string that starts with
            ``paper`` but is neither a name nor an existing file is an InputError listing the names.
        available_keys: if given, every subject of the split must be among them (e.g. the keys
            of the cache); otherwise InputError naming the file (or published split) and the
            first unknown ids.
    """
    name = _published_name(path)
    if name is not None:
        split = published_split(name)
        where: str | Path = f"published split {name}"
    else:
        path = where = Path(path)
        text = read_text(path, "split file")
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            split = _split_from_json(path, text)
        else:
            split = _split_from_upstream_yaml(path, text)

    if available_keys is not None:
        available = set(available_keys)
        unknown = [key for part in PARTS for key in getattr(split, part) if key not in available]
        if unknown:
            more = ", ..." if len(unknown) > 5 else ""
            raise InputError(
                where,
                f"{len(unknown)} subject(s) of the split ({_missing_by_dataset(split, unknown)}) are not available: "
                f"{', '.join(unknown[:5])}{more}",
            )
    return split


def _missing_by_dataset(split: Split, unknown: list[str]) -> str:
    """E.g. "mnms2: 98 of 98 missing", so a user with one dataset sees which one is absent."""
    totals = Counter(key.split("-", 1)[0] for key in split.keys)
    missing = Counter(key.split("-", 1)[0] for key in unknown)
    return ", ".join(f"{name}: {missing[name]} of {totals[name]} missing" for name in sorted(missing))


# The general name used by run.py: either format is accepted.
read_split_file = read_upstream_split


def _split_from_json(path: Path, text: str) -> Split:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
        raise InputError(path, f"not a split file (expected \"format\": \"{SPLIT_FORMAT}\")")
    parts = {}
    for part in PARTS:
        keys = data.get(part)
        if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
            raise InputError(path, f"\"{part}\" must be a list of subject keys")
        parts[part] = keys
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise InputError(path, "\"provenance\" must be an object")
    return Split(**parts, provenance={**provenance, "source": str(path)})


def _split_from_upstream_yaml(path: Path, text: str) -> Split:
    tree = parse_simple_yaml(path, text)
    parts: dict[str, list[str]] = {}
    for part in PARTS:
        if part not in tree:
            raise InputError(path, f"missing section \"{part}\"")
    for part, datasets in tree.items():
        if part not in PARTS:
            raise InputError(path, f"unknown section \"{part}\" (expected {', '.join(PARTS)})")
        keys = []
        for upstream_name, ids in datasets.items():
            if upstream_name not in UPSTREAM_DATASETS:
                raise InputError(path, f"unknown dataset \"{upstream_name}\" in \"{part}\" (expected mm1 or mm2)")
            keys.extend(_upstream_key(path, upstream_name, subject_id) for subject_id in ids)
        parts[part] = keys
    return Split(**parts, provenance={"source": str(path), "format": "upstream-yaml"})


def _upstream_key(path: Path, upstream_name: str, subject_id: str) -> str:
    dataset = UPSTREAM_DATASETS[upstream_name]
    if dataset == "mnms2":
        if not subject_id.isdigit():
            raise InputError(path, f"M&Ms-2 id \"{subject_id}\" is not a number")
        subject_id = subject_id.zfill(3)
    return f"{dataset}-{subject_id}"


_KEY = re.compile(r'^(?P<indent> *)(?P<key>"[^"]*"|\'[^\']*\'|[A-Za-z0-9_.-]+):\s*(?P<rest>.*)$')
_ITEM = re.compile(r"^(?P<indent> *)- +(?P<value>.+?)\s*$")
_BARE = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_simple_yaml(path: Path, text: str) -> dict[str, dict[str, list[str]]]:
    """Parse the YAML subset of the study's split files: a two-level mapping of string lists.

    Accepted: ``section:`` at column 0; ``  name:`` indented under it; ``- value`` list items
    (at the name's indentation or deeper); ``name: []`` for an empty list; quoted or bare
    scalars; blank lines and ``#`` comment lines. Anything else is an InputError with its line.
    """
    tree: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    items: list[str] | None = None
    name_indent = -1
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#") or (number == 1 and line == "---"):
            continue
        if "\t" in raw:
            raise InputError(path, f"line {number}: tab characters are not allowed")

        item = _ITEM.match(line)
        if item:
            if items is None or len(item["indent"]) < name_indent:
                raise InputError(path, f"line {number}: list item outside a dataset list")
            items.append(_scalar(path, number, item["value"]))
            continue

        mapping = _KEY.match(line)
        if not mapping:
            raise InputError(path, f"line {number}: not a split-file line: {raw.strip()!r}")
        key, rest, indent = _scalar(path, number, mapping["key"]), mapping["rest"], len(mapping["indent"])
        if indent == 0:
            if rest:
                raise InputError(path, f"line {number}: a section (\"{key}\") must be followed by a nested mapping")
            if key in tree:
                raise InputError(path, f"line {number}: section \"{key}\" repeated")
            section = tree[key] = {}
            items, name_indent = None, -1
        else:
            if section is None or (name_indent >= 0 and indent != name_indent):
                raise InputError(path, f"line {number}: unexpected indentation")
            if key in section:
                raise InputError(path, f"line {number}: \"{key}\" repeated in its section")
            name_indent = indent
            if rest == "[]":
                section[key] = []
                items = None
            elif rest:
                raise InputError(path, f"line {number}: expected a list after \"{key}:\", found {rest!r}")
            else:
                items = section[key] = []
    return tree


def _scalar(path: Path, number: int, token: str) -> str:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        value = token[1:-1]
        if token[0] in value or (token[0] == '"' and "\\" in value):
            raise InputError(path, f"line {number}: escapes in quoted strings are not supported")
        return value
    if _BARE.match(token):
        return token
    raise InputError(path, f"line {number}: not a plain or quoted scalar: {token!r}")


# ----------------------------------------------------------------------------------------------
# Making splits and subsets


def make_split(
    keys: Iterable[str],
    test: int | float,
    valid_fraction: float = 0.2,
    seed: int = 0,
    stratify: dict[str, str] | None = None,
) -> Split:
    """A seeded train/valid/test split of ``keys``.

    Args:
        keys: subject keys (sorted first, so the input order does not matter).
        test: number of test subjects (int), or a fraction of all keys (float in [0, 1)).
        valid_fraction: fraction of the remaining (development) subjects used for validation.
        seed: seed of the shuffle.
        stratify: optional key -> group (e.g. vendor); every part then holds each group in
            proportion to its size (largest-remainder rounding).
    """
    keys = sorted(keys)
    if len(set(keys)) != len(keys):
        raise InputError(None, "make_split: duplicate subject keys")
    if isinstance(test, float) and not isinstance(test, bool):
        if not 0.0 <= test < 1.0:
            raise InputError(None, f"test fraction must be in [0, 1), got {test}")
        n_test = int(round(test * len(keys)))
    else:
        n_test = int(test)
    if not 0 <= n_test <= len(keys):
        raise InputError(None, f"cannot hold out {n_test} test subjects from {len(keys)}")
    if not 0.0 <= valid_fraction < 1.0:
        raise InputError(None, f"valid fraction must be in [0, 1), got {valid_fraction}")
    n_valid = int(round(valid_fraction * (len(keys) - n_test)))

    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = {"": keys}
    else:
        missing = [key for key in keys if key not in stratify]
        if missing:
            raise InputError(None, f"no stratification group for {len(missing)} subjects, e.g. {missing[:5]}")
        groups = {}
        for key in keys:
            groups.setdefault(str(stratify[key]), []).append(key)
        groups = {name: groups[name] for name in sorted(groups)}

    shuffled = {name: [members[i] for i in rng.permutation(len(members))] for name, members in groups.items()}
    sizes = [len(members) for members in shuffled.values()]
    test_counts = _apportion(n_test, sizes)
    valid_counts = _apportion(n_valid, [size - taken for size, taken in zip(sizes, test_counts)])
    parts: dict[str, list[str]] = {part: [] for part in PARTS}
    for members, n_t, n_v in zip(shuffled.values(), test_counts, valid_counts):
        parts["test"] += members[:n_t]
        parts["valid"] += members[n_t : n_t + n_v]
        parts["train"] += members[n_t + n_v :]
    provenance = {
        "made_by": "make_split",
        "seed": seed,
        "test": test,
        "valid_fraction": valid_fraction,
        "stratified": stratify is not None,
    }
    return Split(**{part: sorted(members) for part, members in parts.items()}, provenance=provenance)


def _apportion(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` over groups in proportion to ``sizes`` (largest remainder, ties by order)."""
    available = sum(sizes)
    if available == 0:
        return [0] * len(sizes)
    quotas = [total * size / available for size in sizes]
    counts = [int(np.floor(quota)) for quota in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def subset(split: Split, n: int | str, seed: int) -> Split:
    """``n`` training subjects drawn with ``seed``; valid and test unchanged.

    Nested within a seed: the subset is the first n of one seeded permutation of the sorted
    training pool, so the 10-subject subset lies inside the 15-subject one, and so on.
    ``n="all"`` keeps the whole pool.
    """
    pool = sorted(split.train)
    provenance = {**split.provenance, "subset": n, "subset_seed": seed}
    if n == "all":
        return Split(list(pool), list(split.valid), list(split.test), provenance)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(None, f"subset size must be a positive integer or \"all\", got {n!r}")
    if n > len(pool):
        raise InputError(split.provenance.get("source"), f"cannot draw {n} training subjects from a pool of {len(pool)}")
    order = np.random.default_rng(seed).permutation(len(pool))
    train = sorted(pool[i] for i in order[: int(n)])
    return Split(train, list(split.valid), list(split.test), provenance)


# ----------------------------------------------------------------------------------------------
# The study's published split files, shipped as package data (protocol 3.1, 3.2)

PAPER = "paper"
PUBLISHED_SUBSET_SIZES = (10, 15, 25, 50)
PUBLISHED_SUBSET_SEEDS = (0, 1, 2)
PUBLISHED_VENDOR_GROUPS = ("A_B", "C_D")
PUBLISHED_FORMAT = "cmrssp-published-splits"
PUBLISHED_RESOURCE = "published_splits.json"


def published_subset_name(n: int, seed: int) -> str:
    """The name of the study's label-scarce subset file of n subjects and seed (protocol 3.2)."""
    return f"{PAPER}-nr{n}-seed{seed}"


# Our name -> the study's file name in [SSP] data/subject_splits/.
PUBLISHED_SPLIT_FILES: dict[str, str] = {
    PAPER: "default-cine-split.yaml",
    **{
        published_subset_name(n, seed): f"default-cine-split-nr{n}-seed{seed}.yaml"
        for n in PUBLISHED_SUBSET_SIZES
        for seed in PUBLISHED_SUBSET_SEEDS
    },
    **{f"{PAPER}-vendor-{group}": f"default-cine-split-Vendor-{group}.yaml" for group in PUBLISHED_VENDOR_GROUPS},
}
PUBLISHED_SPLIT_NAMES: tuple[str, ...] = tuple(PUBLISHED_SPLIT_FILES)


def published_split(name: str) -> Split:
    """One of the study's split files, from the package data.

    The ``paper-nr*`` files keep the paper split's 74 valid and 140 test subjects (protocol 3.2),
    so the package stores only their train lists and this fills in valid and test.
    """
    if name not in PUBLISHED_SPLIT_FILES:
        raise InputError(name, f"unknown published split; the published splits are: {', '.join(PUBLISHED_SPLIT_NAMES)}")
    table = _published_table()
    entry = table[name]
    full = entry if "valid" in entry else table[PAPER]
    provenance = {"source": name, "published": name, "format": "published"}
    return Split(list(entry["train"]), list(full["valid"]), list(full["test"]), provenance)


@functools.lru_cache(maxsize=1)
def _published_table() -> dict[str, dict[str, list[str]]]:
    resource = importlib.resources.files("cmrssp.data") / PUBLISHED_RESOURCE
    where = f"cmrssp package data {PUBLISHED_RESOURCE}"
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(where, f"unreadable ({error}); reinstall cmrssp") from None
    splits = data.get("splits") if isinstance(data, dict) else None
    if not isinstance(splits, dict) or data.get("format") != PUBLISHED_FORMAT or set(splits) != set(PUBLISHED_SPLIT_NAMES):
        raise InputError(where, f"not the {PUBLISHED_FORMAT} table of {len(PUBLISHED_SPLIT_NAMES)} splits; reinstall cmrssp")
    return splits


def _published_name(path: str | os.PathLike) -> str | None:
    """The published split ``path`` names, or None when it is a file path (see read_upstream_split)."""
    text = os.fspath(path)
    if not isinstance(text, str) or "/" in text or os.sep in text:
        return None
    if text in PUBLISHED_SPLIT_FILES:
        return text
    if text.startswith(PAPER) and not os.path.exists(text):
        # Most likely a mistyped name: list the names rather than say "file not found".
        raise InputError(text, f"neither a published split nor an existing file; the published splits are: "
                               f"{', '.join(PUBLISHED_SPLIT_NAMES)}")
    return None


def published_subset(split: Split, n: int | str, seed: int) -> Split | None:
    """The study's own label-scarce subset file for ``split``, ``n`` and ``seed``, if there is one.

    Applies when ``split`` is the paper split: the published ``paper`` split (by provenance), or
    the study's own ``default-cine-split.yaml`` read from a file; in both cases its train, valid
    and test must also equal the published paper split. ``(n, seed)`` must have a published file
    (n in 10, 15, 25, 50; seed in 0, 1, 2). Then the result holds that file's train subjects and
    ``split``'s valid and test, and its provenance names the file. Otherwise None.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or isinstance(seed, bool):
        return None
    if not isinstance(seed, (int, np.integer)) or not _is_paper_split(split):
        return None
    name = published_subset_name(int(n), int(seed))
    if name not in PUBLISHED_SPLIT_FILES:
        return None
    published = published_split(name)
    provenance = {
        **published.provenance,
        "file": PUBLISHED_SPLIT_FILES[name],
        "subset": int(n),
        "subset_seed": int(seed),
        "subset_of": split.provenance.get("source"),
    }
    return Split(published.train, list(split.valid), list(split.test), provenance)


def _is_paper_split(split: Split) -> bool:
    provenance = split.provenance
    by_name = provenance.get("published") == PAPER
    by_file = Path(str(provenance.get("source", ""))).name == PUBLISHED_SPLIT_FILES[PAPER]
    if not (by_name or by_file):
        return False
    paper = published_split(PAPER)
    return all(sorted(getattr(split, part)) == sorted(getattr(paper, part)) for part in PARTS)


def label_scarce_subset(split: Split, n: int | str, seed: int) -> Split:
    """The fine-tuning subset of ``n`` training subjects (or ``"all"``) drawn with ``seed``.

    The study's published file when there is one (:func:`published_subset`), since the study's
    subsets cannot be redrawn (their procedure is not known, protocol 3.2); else :func:`subset`.
    """
    published = published_subset(split, n, seed)
    return published if published is not None else subset(split, n, seed)
