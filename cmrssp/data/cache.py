"""Reading a prepared cache (the layout is described in :mod:`cmrssp.data.prepare`).

Arrays are memory-mapped (``np.load(mmap_mode="r")``): opening a cache reads only the manifest,
and a subject's pixels are paged in when first touched. The format comes from
:mod:`cmrssp.data.subject_meta`, so reading a cache never imports torch.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cmrssp.config import PrepareConfig, from_dict
from cmrssp.data.subject_meta import MANIFEST, META, SUBJECTS, SubjectMeta, read_manifest
from cmrssp.errors import InputError


class Cache:
    """A prepared cache folder: its config, subject keys, per-subject meta and arrays."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise InputError(self.path, "cache folder not found; run `prepare` first")
        self.manifest = read_manifest(manifest_path)
        self.config: PrepareConfig = from_dict(PrepareConfig, self.manifest["config"], manifest_path)
        try:
            self._entries = {str(entry["key"]): entry for entry in self.manifest["subjects"]}
        except (KeyError, TypeError):
            raise InputError(manifest_path, "a subject entry lacks its key") from None
        self.keys: list[str] = sorted(self._entries)
        self._meta: dict[str, SubjectMeta] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, {len(self)} subjects, {self.config})"

    def describe(self) -> str:
        """A few lines for ``run.py info``: geometry, subjects per dataset, labels, size on disk."""
        config = self.config
        lines = [
            f"{self.path}: {len(self)} subjects, {config.spacing:g} mm, input {config.size} px "
            f"on a {config.canvas_size} px canvas (toolkit {self.manifest.get('toolkit_version')})"
        ]
        for dataset in sorted({entry["dataset"] for entry in self._entries.values()}):
            keys = self.subjects(dataset=dataset)
            entries = [self._entries[key] for key in keys]
            vendors = sorted({str(entry["vendor"]) for entry in entries if entry["vendor"] is not None})
            lines.append(
                f"  {dataset}: {len(keys)} subjects ({sum(bool(e['labelled']) for e in entries)} labelled), "
                f"{sum(e['n_slices'] for e in entries)} slices, {sum(e['n_frames'] * e['n_slices'] for e in entries)} "
                f"frame-slices" + (f", vendors {', '.join(vendors)}" if vendors else "")
            )
        findings = Counter(
            (entry["dataset"], entry.get("geometry_finding")) for entry in self._entries.values()
            if entry.get("geometry_finding")
        )
        for (dataset, finding), count in sorted(findings.items()):
            lines.append(f"  {dataset}: {count} subjects whose affine and pixdim disagree ({finding}; "
                         f"resolved by --geometry {config.geometry})")
        total = sum(int(entry["bytes"]) for entry in self._entries.values())
        lines.append(f"  {total / 2**30:.2f} GiB on disk")
        return "\n".join(lines)

    def entry(self, key: str) -> dict[str, Any]:
        """The manifest entry of ``key`` (dataset, vendor, pathology, counts, bytes)."""
        self._folder(key)
        return self._entries[key]

    def subjects(self, dataset: str | None = None, labelled: bool | None = None) -> list[str]:
        """Sorted keys, optionally only of one dataset and/or only (un)labelled subjects."""
        return [
            key
            for key in self.keys
            if (dataset is None or self._entries[key]["dataset"] == dataset)
            and (labelled is None or bool(self._entries[key]["labelled"]) == labelled)
        ]

    def meta(self, key: str) -> SubjectMeta:
        """The subject's checked ``meta.json`` (read once, then cached)."""
        if key not in self._meta:
            self._meta[key] = SubjectMeta.read(self._folder(key) / META)
        return self._meta[key]

    def image(self, key: str) -> np.ndarray:
        """float16 (T, Z, C, C) standardized canvas image, memory-mapped."""
        return self._array(key, "image.npy")

    def labels(self, key: str) -> np.ndarray | None:
        """uint8 (L, Z, C, C) canvas labels, memory-mapped; None for an unlabelled subject."""
        return self._array(key, "labels.npy") if self.entry(key)["labelled"] else None

    def labels_native(self, key: str) -> np.ndarray | None:
        """uint8 (X, Y, Z, L) labels on the original grid, memory-mapped; None if unlabelled."""
        return self._array(key, "labels_native.npy") if self.entry(key)["labelled"] else None

    def array_path(self, key: str, name: str) -> Path:
        return self._folder(key) / name

    def _folder(self, key: str) -> Path:
        if key not in self._entries:
            raise InputError(self.path / MANIFEST, f"subject {key} is not in this cache")
        return self.path / SUBJECTS / key

    def _array(self, key: str, name: str) -> np.ndarray:
        path = self._folder(key) / name
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise InputError(path, "missing from the cache; prepare the subject again") from None
        except (OSError, ValueError) as error:
            raise InputError(path, f"corrupt cache array ({error})") from None


def open_cache(path: str | os.PathLike) -> Cache:
    """Open a prepared cache; InputError naming the folder/manifest if it is missing or invalid."""
    return Cache(path)
