"""Writing phantom subjects in the real on-disk layouts of M&Ms, M&Ms-2 and ACDC, plus QA files.

File names, CSV headers and label conventions are those of data-formats.md 1.2-1.4:

- mnms: ``211230_M&Ms_Dataset_information_diagnosis_opendataset.csv`` and
  ``dataset/<CODE>/<CODE>_sa.nii.gz`` + ``<CODE>_sa_gt.nii.gz`` (4D, labelled at ED and ES only);
- mnms2: ``dataset_information.csv`` (padded with empty ``,,,,`` rows like the Excel export) and
  ``dataset/<NNN>/<NNN>_SA_CINE``, ``_SA_ED``/``_SA_ES`` (frames copied exactly out of the cine),
  ``_SA_ED_gt``/``_SA_ES_gt`` and small long-axis ``_LA_*`` files that readers must ignore;
- acdc: ``training/patientXXX/Info.cfg`` (1-based ED/ES), ``patientXXX_4d`` and
  ``patientXXX_frameYY[_gt]`` with ACDC labels (1 RV, 2 MYO, 3 LV).

Beside the cohort: ``phantom_qa.csv`` (one row per subject), ``phantom_qa/<id>_labels.nii.gz``
(canonical labels at every frame) and ``phantom_preview.png`` when matplotlib is available.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from cmrssp.atomic import write_bytes, write_text
from cmrssp.data.nifti import write_nifti

MNMS_CSV = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
MNMS_HEADER = ("", "External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Age", "Pathology", "Sex", "Height", "Weight")
MNMS2_CSV = "dataset_information.csv"
MNMS2_HEADER = ("SUBJECT_CODE", "DISEASE", "VENDOR", "SCANNER", "FIELD")
MNMS2_PADDING_ROWS = 20
QA_CSV = "phantom_qa.csv"
QA_LABELS = "phantom_qa"
PREVIEW = "phantom_preview.png"
TO_ACDC_LABELS = np.array([0, 3, 2, 1], np.uint8)  # canonical 1 LV, 3 RV -> ACDC 3 LV, 1 RV


def _write_image(path: Path, image: np.ndarray, affine: np.ndarray, storage: str) -> None:
    dtype = np.int16 if storage == "int16" else np.float32
    write_nifti(path, image.astype(dtype, copy=False), affine, dtype=dtype)


def _write_labels(path: Path, labels: np.ndarray, affine: np.ndarray) -> None:
    write_nifti(path, labels.astype(np.uint8, copy=False), affine, dtype=np.uint8)


def write_subject(root: Path, subject, layout: str) -> None:
    """Write one ``PhantomSubject`` in ``layout`` under ``root``, plus its all-frame QA labels."""
    sid, image, labels, affine = subject.subject_id, subject.image, subject.labels, subject.affine
    ed, es, storage = subject.ed, subject.es, subject.storage_dtype
    if layout == "mnms":
        folder = root / "dataset" / sid
        _write_image(folder / f"{sid}_sa.nii.gz", image, affine, storage)
        gt = np.zeros(labels.shape, np.uint8, order="F")
        gt[..., [ed, es]] = labels[..., [ed, es]]
        _write_labels(folder / f"{sid}_sa_gt.nii.gz", gt, affine)
    elif layout == "mnms2":
        folder = root / "dataset" / sid
        _write_image(folder / f"{sid}_SA_CINE.nii.gz", image, affine, storage)
        for phase, frame in (("ED", ed), ("ES", es)):
            _write_image(folder / f"{sid}_SA_{phase}.nii.gz", image[..., frame], affine, storage)
            _write_labels(folder / f"{sid}_SA_{phase}_gt.nii.gz", labels[..., frame], affine)
        _write_long_axis(folder, subject)
    elif layout == "acdc":
        folder = root / "training" / sid
        meta = subject.qa
        write_text(
            folder / "Info.cfg",
            f"ED: {ed + 1}\nES: {es + 1}\nGroup: {subject.pathology}\nHeight: {meta['height']:.1f}\n"
            f"NbFrame: {image.shape[3]}\nWeight: {meta['weight']:.1f}\n",
        )
        _write_image(folder / f"{sid}_4d.nii.gz", image, affine, storage)
        for frame in (ed, es):
            _write_image(folder / f"{sid}_frame{frame + 1:02d}.nii.gz", image[..., frame], affine, storage)
            _write_labels(folder / f"{sid}_frame{frame + 1:02d}_gt.nii.gz", TO_ACDC_LABELS[labels[..., frame]], affine)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    _write_labels(root / QA_LABELS / f"{sid}_labels.nii.gz", labels, affine)


def _write_long_axis(folder: Path, subject) -> None:
    """Small 4-chamber-like long-axis cine (x, y, 1, t) whose LV follows the SAX label volume."""
    sid, labels, storage = subject.subject_id, subject.labels, subject.storage_dtype
    size = 32 if labels.shape[0] < 128 else 64
    spacing = 2.0 * float(np.linalg.norm(subject.affine[:3, 0])) * 128 / max(labels.shape[0], 128)
    lv = (labels == 1).sum(axis=(0, 1, 2)).astype(np.float64)
    scale = np.sqrt(lv / max(lv.max(), 1.0))  # (T,)
    rows, columns = np.meshgrid(np.arange(size) - size / 2, np.arange(size) - size / 2, indexing="ij")
    radius = np.sqrt((rows / (0.35 * size)) ** 2 + (columns / (0.18 * size)) ** 2)[..., None]
    cavity = radius < 0.3 + 0.7 * scale[None, None, :]
    wall = radius < 1.25
    bright = float(np.percentile(subject.image, 99))
    cine = np.where(cavity, bright, np.where(wall, 0.3 * bright, 0.05 * bright))[:, :, None, :]
    cine = np.rint(cine) if storage == "int16" else cine.astype(np.float32)
    la_labels = np.where(cavity, 1, np.where(wall, 2, 0)).astype(np.uint8)[:, :, None, :]
    long_axis = subject.affine[:3, 2] / np.linalg.norm(subject.affine[:3, 2])
    across = subject.affine[:3, 0] / np.linalg.norm(subject.affine[:3, 0])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = long_axis * spacing, across * spacing
    affine[:3, 2] = np.cross(long_axis, across) * 8.0
    affine[:3, 3] = subject.affine[:3, 3]
    _write_image(folder / f"{sid}_LA_CINE.nii.gz", cine, affine, storage)
    for phase, frame in (("ED", subject.ed), ("ES", subject.es)):
        _write_image(folder / f"{sid}_LA_{phase}.nii.gz", cine[..., frame], affine, storage)
        _write_labels(folder / f"{sid}_LA_{phase}_gt.nii.gz", la_labels[..., frame], affine)


def _csv_text(header, rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _blank(value: Any) -> Any:
    return "" if value is None else value


def write_metadata(root: Path, layout: str, rows: list[dict[str, Any]]) -> None:
    """The dataset's information CSV (ACDC keeps its metadata in each subject's Info.cfg)."""
    if layout == "mnms":
        table = [
            (i, r["subject_id"], r["vendor_name"], r["vendor"], r["centre"], r["ed"], r["es"], r["age"],
             r["pathology"], r["sex"], _blank(r["height"]), _blank(r["weight"]))
            for i, r in enumerate(rows)
        ]
        write_text(root / MNMS_CSV, _csv_text(MNMS_HEADER, table))
    elif layout == "mnms2":
        table = [(int(r["subject_id"]), r["pathology"], r["vendor_name"], r["scanner"], r["field"]) for r in rows]
        table += [("",) * len(MNMS2_HEADER)] * MNMS2_PADDING_ROWS
        write_text(root / MNMS2_CSV, _csv_text(MNMS2_HEADER, table))


def write_qa_table(root: Path, rows: list[dict[str, Any]]) -> None:
    """``phantom_qa.csv``: every QA key of the subjects, in generation order."""
    header = list(rows[0]) if rows else []
    write_text(root / QA_CSV, _csv_text(header, [[_blank(r.get(k)) for k in header] for r in rows]))


def preview_slices(subject) -> dict[str, Any]:
    """The mid-ventricular slice at ED and ES, small enough to send between processes.

    Mid-ventricular: the middle of the slices holding LV blood pool at both ED and ES.
    """
    both = np.flatnonzero(((subject.labels[..., [subject.ed, subject.es]] == 1).any(axis=(0, 1))).all(axis=1))
    z = int(both[len(both) // 2]) if len(both) else subject.labels.shape[2] // 2
    return {
        "subject_id": subject.subject_id,
        "title": f"{subject.subject_id} {subject.vendor} {subject.pathology}",
        "images": [np.array(subject.image[:, :, z, t]) for t in (subject.ed, subject.es)],
        "labels": [np.array(subject.labels[:, :, z, t]) for t in (subject.ed, subject.es)],
    }


def write_preview(root: Path, previews: list[dict[str, Any]]) -> bool:
    """``phantom_preview.png`` (ED/ES mid-ventricular slices with label contours); False without matplotlib."""
    if not previews:
        return False
    try:  # the object-oriented Agg API leaves the process's pyplot backend alone
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(6, 3 * len(previews)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(previews), 2, squeeze=False)
    for row, preview in zip(axes, previews):
        for axis, image, labels, phase in zip(row, preview["images"], preview["labels"], ("ED", "ES")):
            axis.imshow(image.T, cmap="gray", origin="lower")
            for label, colour in ((1, "tab:red"), (2, "tab:green"), (3, "tab:blue")):
                if (labels == label).any():
                    axis.contour((labels == label).T.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
            axis.set_title(f"{preview['title']} {phase}", fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    write_bytes(root / PREVIEW, buffer.getvalue())
    return True
