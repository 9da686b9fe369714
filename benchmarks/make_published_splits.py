"""Regenerate cmrssp/data/published_splits.json from a folder of the study's split files.

The study ([SSP] q-cardIA/ssp-cmr-cine-segmentation, ``data/subject_splits/`` at commit a99e404;
protocol 3.1, 3.2) publishes 15 YAML split files. This reads each one with
``cmrssp.data.splits.read_upstream_split`` (mm1 -> ``mnms-<id>``, mm2 -> ``mnms2-<NNN>``) and
writes the subject keys into one JSON table, in our own compact form:

    {"format": "cmrssp-published-splits", "source": ..., "note": ...,
     "splits": {"paper": {"file": ..., "train": [...], "valid": [...], "test": [...]},
                "paper-nr10-seed0": {"file": ..., "train": [...]}, ...}}

The ``paper-nr*`` entries hold only ``train``: each such file keeps the full split's valid and
test subjects (protocol 3.2). That is checked here, and the script refuses (exit 1) otherwise,
since the package would then fill in the wrong valid and test lists.

    python benchmarks/make_published_splits.py ../shared/data/upstream-splits
    python benchmarks/make_published_splits.py FOLDER --out /tmp/published_splits.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmrssp.atomic import write_text  # noqa: E402
from cmrssp.data.splits import (  # noqa: E402
    PAPER,
    PARTS,
    PUBLISHED_FORMAT,
    PUBLISHED_RESOURCE,
    PUBLISHED_SPLIT_FILES,
    Split,
    read_upstream_split,
)
from cmrssp.errors import InputError  # noqa: E402

SOURCE = "q-cardIA/ssp-cmr-cine-segmentation, data/subject_splits/ at commit a99e404 (protocol 3.1, 3.2)"
NOTE = "paper-nr* entries store only train; their valid and test are those of paper"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "cmrssp" / "data" / PUBLISHED_RESOURCE


def published_table(folder: Path) -> dict[str, dict[str, object]]:
    """Name -> {"file", and the parts stored}; InputError if a subset file breaks the storage rule."""
    splits: dict[str, Split] = {
        name: read_upstream_split(folder / file_name) for name, file_name in PUBLISHED_SPLIT_FILES.items()
    }
    paper = splits[PAPER]
    table: dict[str, dict[str, object]] = {}
    for name, split in splits.items():
        entry: dict[str, object] = {"file": PUBLISHED_SPLIT_FILES[name]}
        if name.startswith(f"{PAPER}-nr"):
            for part in ("valid", "test"):
                if getattr(split, part) != getattr(paper, part):
                    raise InputError(folder / PUBLISHED_SPLIT_FILES[name], f"its {part} subjects differ from those of "
                                     f"{PUBLISHED_SPLIT_FILES[PAPER]}; only train can be stored for a subset file")
            if not set(split.train) <= set(paper.train):
                raise InputError(folder / PUBLISHED_SPLIT_FILES[name], f"train is not within {PUBLISHED_SPLIT_FILES[PAPER]}'s train")
            entry["train"] = split.train
        else:
            entry.update({part: getattr(split, part) for part in PARTS})
        table[name] = entry
    return table


def render(table: dict[str, dict[str, object]]) -> str:
    """The JSON text: one line per list, so a changed subject shows as a one-line diff."""
    lines = ["{", f'  "format": {json.dumps(PUBLISHED_FORMAT)},', f'  "source": {json.dumps(SOURCE)},',
             f'  "note": {json.dumps(NOTE)},', '  "splits": {']
    for index, (name, entry) in enumerate(table.items()):
        fields = ",\n".join(f"      {json.dumps(key)}: {json.dumps(value)}" for key, value in entry.items())
        closing = "    }," if index < len(table) - 1 else "    }"
        lines += [f"    {json.dumps(name)}: {{", fields, closing]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder holding the study's 15 default-cine-split*.yaml files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output JSON (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        table = published_table(args.folder)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    write_text(args.out, render(table))
    print(f"wrote {len(table)} splits to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
