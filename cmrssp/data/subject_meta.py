"""The prepared cache's on-disk format: the manifest and one typed record per subject's ``meta.json``.

:mod:`cmrssp.data.prepare` writes a cache, :mod:`cmrssp.data.cache` reads it; both take the format
from here, and nothing here imports torch, so a cache can be opened and described without it.

``subjects/<key>/meta.json`` is the JSON object of :meth:`SubjectMeta.to_dict`: one key per field
of :class:`SubjectMeta`, in field order, nested records as objects, tuples as lists.
:meth:`SubjectMeta.from_dict` is its only reader: it checks every field's presence and JSON type
and raises one :class:`InputError` naming the file and the field, so no module indexes the JSON
by string. Keys this toolkit does not know (written by another version) are kept, not refused.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from cmrssp.config import PrepareConfig
from cmrssp.errors import InputError

FORMAT = "cmrssp-cache"
FORMAT_VERSION = 2  # 2: geometry from affine + pixdim, source header fields, ED/ES-only subjects
MANIFEST = "manifest.json"
SUBJECTS = "subjects"
META = "meta.json"
# SubjectMeta fields copied into each manifest entry (so that listing a cache reads one file).
MANIFEST_FIELDS = (
    "key", "dataset", "subject_id", "vendor", "pathology", "n_slices", "n_frames", "labelled", "label_phases",
    "geometry_finding",
)

Pair = tuple[float, float]
Row4 = tuple[float, float, float, float]
Matrix4 = tuple[Row4, Row4, Row4, Row4]


@dataclass(frozen=True)
class CanvasGrid:
    """The in-plane resample map, per native axis i in {0, 1}: canvas index k -> native index
    ``scale[i] * k + offset[i]`` (pixel centres, align_corners=False; :mod:`cmrssp.data.prepare`)."""

    scale: Pair  # native pixels per canvas pixel: target spacing / native spacing
    offset: Pair  # native index of canvas index 0


@dataclass(frozen=True)
class IntensityStats:
    """Subject statistics of the cropped image after subtracting its minimum (protocol 3.6), in the
    file's intensity units; the canvas image is (x - mean) / std."""

    mean: float
    std: float  # unbiased (ddof=1)
    min: float  # always 0.0: the minimum was subtracted
    max: float
    subtracted_minimum: float  # the original image's minimum inside the content box


@dataclass(frozen=True)
class GeometryRecord:
    """How the image file's voxel-to-world map was resolved (:class:`cmrssp.data.geometry.Geometry`)."""

    mode: str  # the rule asked for: "auto", "affine" or "header"
    chosen: str  # "affine" or "header" (pixdim spacing with the affine's direction)
    finding: str | None  # None when affine and pixdim agree, else a key of geometry.FINDINGS
    affine_spacing: tuple[float, float, float]  # mm, from the affine's column norms
    header_spacing: tuple[float, float, float]  # mm, pixdim[1:4]
    affine_source: str  # "sform code 2", "qform code 1", "in memory", ...
    file: str  # the image file (or the subject key for a subject built in memory)


@dataclass(frozen=True)
class SubjectMeta:
    """Everything a prepared cache knows about one subject besides its arrays (``meta.json``).

    Identity and provenance:
        format, version: the cache format tag and version (``FORMAT``, ``FORMAT_VERSION``).
        key: ``"<dataset>-<subject_id>"``, also the subject's folder name.
        dataset: source dataset code (``cmrssp.data.subject.DATASETS``).
        subject_id: the dataset's own id (M&Ms ``A0S9V9``, ACDC ``patient001``).
        vendor, pathology: as the dataset records them, or None.
        source: the files the subject was read from.
        extra: dataset-specific metadata as free-form JSON (ACDC height/weight, a label map, ...).

    Frames and labels (frame indices are 0-based into the image's T axis):
        ed, es: end-diastole / end-systole frame, or None when unknown.
        label_frames: the frame of each of the L label volumes (empty when unlabelled).
        label_phases: the phase name of each label volume ("ED", "ES", "frame05"), same order.
        labelled: True when labels.npy and labels_native.npy exist (L >= 1).
        n_frames, n_slices: T and Z of the cine.

    Canvas (image.npy is (T, Z, C, C), labels.npy (L, Z, C, C)):
        config: the PrepareConfig the subject was prepared with (the cache's one config).
        spacing: canvas pixel size in mm (``config.spacing``).
        size: S, side of the network's evaluation window in pixels (``config.size``).
        canvas: C, side of the stored canvas in pixels (``config.canvas_size``).
        evaluation_window: [start, stop) canvas indices of the centred S x S window, on both
            in-plane axes; stop - start = S (protocol 5.3).

    Native grid (the original file's voxels; labels_native.npy is (X, Y, Z, L)):
        native_shape: (X, Y, Z, T) of the original cine.
        spacing_native: (3,) voxel size in mm of ``affine``.
        affine: (4, 4) voxel-to-world map in mm, resolved from the file's affine and pixdim.
        geometry: how ``affine`` was resolved (:class:`GeometryRecord`).
        geometry_finding: ``geometry.finding`` (copied into the manifest).
        source_header: the image file's own header geometry fields
            (:func:`cmrssp.data.source_header.header_geometry`), None for a subject built in
            memory; exports are written with it so they overlay on the source.
        notices: the kinds of the reader's findings about the subject ("geometry:conflict").

    Resample map (native -> canvas):
        content_box: [[start0, stop0], [start1, stop1]) native in-plane indices inside the
            all-zero border; the resample scales about the centre of this box.
        grid: canvas index -> native index, per in-plane axis (:class:`CanvasGrid`).
        canvas_affine: (4, 4) canvas (k0, k1, z) -> world mm, i.e. ``affine`` @ the grid map.

    Intensities (protocol 3.6, 7.6, 7.18):
        stats: statistics of the cropped, min-shifted image (:class:`IntensityStats`).
        background_value: -mean / std, the standardized value of canvas pixels outside the
            field of view.
        standardized_max: (max - mean) / std, DINO's solarization threshold.

    Heart and slice order (protocol 2.2, 3.4; None when unlabelled):
        heart_centre_native: (x0, x1) native index centre of the smallest circle enclosing every
            labelled pixel (all slices and label volumes).
        heart_centre_canvas: the same centre in canvas index coordinates.
        heart_radius_mm: that circle's radius in mm.
        base_first: is slice 0 the base end of the stack (the stack is never reoriented)?
        base_first_source: "labels" (area profile) or "affine" (slice direction in world space).
        slice_positions: per stored slice, its rank from the base / n_slices, in [0, (n-1)/n].

    Timing:
        prepare_seconds: seconds :func:`cmrssp.data.prepare.prepare_subject` took.

    unknown_fields: keys of the file this toolkit does not know, kept so that
    :meth:`to_dict` gives them back; never written by this version.
    """

    # identity and provenance
    format: str
    version: int
    key: str
    dataset: str
    subject_id: str
    vendor: str | None
    pathology: str | None
    source: tuple[str, ...]
    extra: dict[str, Any]
    # frames and labels
    ed: int | None
    es: int | None
    label_frames: tuple[int, ...]
    label_phases: tuple[str, ...]
    labelled: bool
    n_frames: int
    n_slices: int
    # canvas
    config: PrepareConfig
    spacing: float
    size: int
    canvas: int
    evaluation_window: tuple[int, int]
    # native grid
    native_shape: tuple[int, int, int, int]
    spacing_native: tuple[float, float, float]
    affine: Matrix4
    geometry: GeometryRecord
    geometry_finding: str | None
    source_header: dict[str, Any] | None
    notices: tuple[str, ...]
    # resample map
    content_box: tuple[tuple[int, int], tuple[int, int]]
    grid: CanvasGrid
    canvas_affine: Matrix4
    # intensities
    stats: IntensityStats
    background_value: float
    standardized_max: float
    # heart and slice order
    heart_centre_native: Pair | None
    heart_centre_canvas: Pair | None
    heart_radius_mm: float | None
    base_first: bool
    base_first_source: str
    slice_positions: tuple[float, ...]
    # timing
    prepare_seconds: float
    unknown_fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Any, path: str | Path | None = None) -> "SubjectMeta":
        """Check and convert a parsed ``meta.json``; InputError(path, ...) names a missing or
        mistyped field. Lists become tuples, nested objects their records."""
        if not isinstance(data, dict):
            raise InputError(path, f"subject meta should be a JSON object, got {_json_name(data)}")
        values = _fields(cls, data, path, prefix="", skip=("unknown_fields",))
        known = {f.name for f in dataclasses.fields(cls)} - {"unknown_fields"}
        meta = cls(**values, unknown_fields={k: v for k, v in data.items() if k not in known})
        if meta.format != FORMAT:
            raise InputError(path, f"not a {FORMAT} subject meta (format {meta.format!r})")
        if meta.version != FORMAT_VERSION:
            raise InputError(
                path, f"subject meta format version {meta.version}, this toolkit reads {FORMAT_VERSION}; prepare again"
            )
        return meta

    @classmethod
    def read(cls, path: str | Path) -> "SubjectMeta":
        """Read and check one ``meta.json`` file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(path, f"unreadable subject meta ({error}); delete the folder and prepare again") from None
        return cls.from_dict(data, path)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written as ``meta.json`` (plain lists, dicts, numbers, strings)."""
        values = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "unknown_fields"}
        return {**values, **_plain(self.unknown_fields)}

    def manifest_entry(self) -> dict[str, Any]:
        """The subject's manifest entry (``MANIFEST_FIELDS``; the writer adds ``bytes``)."""
        values = self.to_dict()
        return {name: values[name] for name in MANIFEST_FIELDS}


def read_manifest(path: Path) -> dict[str, Any]:
    """Load and check ``manifest.json`` (format tag, version, config, subject entries)."""
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "not a prepared cache (manifest.json missing); run `prepare` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"corrupt manifest, not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(path, f"not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise InputError(
            path, f"cache format version {manifest.get('version')}, this toolkit reads {FORMAT_VERSION}; prepare again"
        )
    if not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("subjects"), list):
        raise InputError(path, "manifest lacks its config or subject list")
    return manifest


# ----------------------------------------------------------------------------------------------
# Checking JSON against the field types (the few forms the records above use)


def _fields(cls: type, data: dict, path, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Checked field values of record ``cls`` from a JSON object; keys it lacks are refused,
    keys it does not know are left to the caller."""
    hints = _type_hints(cls)
    values = {}
    for item in dataclasses.fields(cls):
        if item.name in skip:
            continue
        name = prefix + item.name
        if item.name not in data:
            raise InputError(path, f"subject meta lacks the field {name!r}; prepare the subject again")
        values[item.name] = _checked(hints[item.name], data[item.name], path, name)
    return values


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _checked(hint: Any, value: Any, path, name: str, shown: Any = None) -> Any:
    """``value`` checked against ``hint`` (lists as tuples, objects as records); ``shown`` is the
    type an error names (an optional field's ``X | None``)."""
    shown = hint if shown is None else shown
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _checked(inner, value, path, name, shown) if value is not None else _refuse(shown, value, path, name)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            _refuse(shown, value, path, name)
        return hint(**_fields(hint, value, path, prefix=f"{name}."))
    if origin is tuple:
        items = args[:1] * len(value) if isinstance(value, list) and args[1:] == (Ellipsis,) else args
        if not isinstance(value, list) or len(items) != len(value):
            _refuse(shown, value, path, name)
        return tuple(_checked(item, element, path, f"{name}[{i}]") for i, (item, element) in enumerate(zip(items, value)))
    if origin is dict:
        return value if isinstance(value, dict) else _refuse(shown, value, path, name)
    # bool is an int in Python, never in JSON; an int is a valid float and is kept as written.
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[hint]
    if isinstance(value, bool) != (hint is bool) or not isinstance(value, accepted):
        _refuse(shown, value, path, name)
    return value


def _refuse(hint: Any, value: Any, path, name: str) -> typing.NoReturn:
    raise InputError(
        path, f"subject meta field {name!r} should be {_describe(hint)}, got {_json_name(value)}; prepare the subject again"
    )


def _describe(hint: Any, plural: bool = False) -> str:
    """``hint`` in JSON words: "a list of 2 numbers", "a string or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg, plural) for arg in args)
    if origin is tuple:
        if plural:
            return "lists"
        count = "" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{_describe(args[0], plural=True)}"
    names = {type(None): ("null", "nulls"), bool: ("true or false", "booleans"), int: ("an integer", "integers"),
             float: ("a number", "numbers"), str: ("a string", "strings")}
    return names.get(hint, ("an object", "objects"))[plural]


def _json_name(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"{'an object' if isinstance(value, dict) else 'a list'} ({json.dumps(value)[:60]})"
    return json.dumps(value)[:60] if value is None or isinstance(value, (bool, int, float, str)) else type(value).__name__


def _plain(value: Any) -> Any:
    """A record as plain JSON types, fields in order; tuples become lists, containers are copied."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: _plain(element) for key, element in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(element) for element in value]
    return value
