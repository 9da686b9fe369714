"""Clinical measures from labels and their Bland-Altman agreement (cmrssp.measures, issue 13).

Closed forms throughout: voxelised shapes of known voxel count, hand-built ED/ES volumes, the
Mosteller formula, hand-computed Bland-Altman numbers, and the phantom's own QA row.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmrssp import measures
from cmrssp.data import consistency
from cmrssp.data.geometry import voxel_spacing
from cmrssp.data.phantom import PHANTOM_PRESETS, generate_subject
from cmrssp.errors import InputError
from cmrssp.measures import (
    MEASURES,
    MYOCARDIUM_DENSITY_G_PER_ML,
    CardiacMeasures,
    agreement,
    agreement_table,
    bsa_mosteller,
    cardiac_measures,
    class_volumes_ml,
    detect_ed_es,
    volume_curve,
)

SPACING = (1.5, 2.0, 8.0)  # anisotropic: 24 mm³ per voxel
VOXEL_ML = 1.5 * 2.0 * 8.0 / 1000.0


def _ventricles(lv_voxels: int, myo_voxels: int, rv_voxels: int, shape=(20, 20, 6)) -> np.ndarray:
    """Labels with exactly the given voxel counts per class (filled in raster order)."""
    flat = np.zeros(int(np.prod(shape)), np.uint8)
    flat[:lv_voxels] = 1
    flat[lv_voxels : lv_voxels + myo_voxels] = 2
    flat[lv_voxels + myo_voxels : lv_voxels + myo_voxels + rv_voxels] = 3
    return flat.reshape(shape)


def test_voxelised_cylinder_and_box_volume_exact_for_anisotropic_spacing():
    x, y = np.meshgrid(np.arange(16) - 7.5, np.arange(16) - 7.5, indexing="ij")
    disc = x**2 + y**2 <= 36.0
    labels = np.zeros((16, 16, 5), np.uint8)
    labels[..., 1:4][disc] = 1  # cylinder: the disc on 3 slices
    labels[0:2, 0:3, 0] = 2  # 2x3x1 box
    labels[10:16, 12:16, 4] = 3  # 6x4x1 box, outside the cylinder's slices
    disc_pixels = int(disc.sum())
    expected = np.array([3 * disc_pixels, 6, 24]) * VOXEL_ML
    np.testing.assert_allclose(class_volumes_ml(labels, SPACING), expected, rtol=1e-12)
    # Spacing order does not matter (only the voxel volume does); disc summation: area x spacing.
    np.testing.assert_allclose(class_volumes_ml(labels, SPACING[::-1]), expected, rtol=1e-12)
    assert class_volumes_ml(labels, SPACING)[0] == pytest.approx(disc_pixels * 1.5 * 2.0 * 3 * 8.0 / 1000)


def test_consistency_keeps_class_volumes_ml():
    assert consistency.class_volumes_ml is measures.class_volumes_ml
    labels = np.zeros((4, 5, 3), dtype=np.uint8)
    labels[0, :, 0] = 1
    labels[1:3, 0:3, 1] = 2
    assert consistency.class_volumes_ml(labels, (2.0, 2.0, 10.0)) == pytest.approx([0.2, 0.24, 0.0])


@pytest.mark.parametrize("spacing", [(1.0, 0.0, 8.0), (1.0, 1.0), (1.0, float("nan"), 8.0), "abc"])
def test_bad_spacing_is_an_input_error(spacing):
    with pytest.raises(InputError, match="voxel spacing"):
        class_volumes_ml(np.zeros((2, 2, 2), np.uint8), spacing)


def test_ef_sv_mass_on_hand_built_volumes():
    ed = _ventricles(lv_voxels=500, myo_voxels=300, rv_voxels=600)
    es = _ventricles(lv_voxels=200, myo_voxels=310, rv_voxels=330)
    m = cardiac_measures(ed, es, SPACING, ed_frame=0, es_frame=3)
    # 500 voxels x 24 mm³ = 12 mL; ES 200 -> 4.8 mL; SV 7.2 mL; EF 60 %.
    assert (m.lv_edv, m.lv_esv, m.lv_sv, m.lv_ef) == pytest.approx((12.0, 4.8, 7.2, 60.0))
    # RV: 600 -> 14.4 mL, 330 -> 7.92 mL, SV 6.48 mL, EF 45 %.
    assert (m.rv_edv, m.rv_esv, m.rv_sv, m.rv_ef) == pytest.approx((14.4, 7.92, 6.48, 45.0))
    # Mass at ED only: 300 voxels = 7.2 mL x 1.05 = 7.56 g (the ES myocardium is ignored).
    assert m.lv_mass == pytest.approx(7.2 * MYOCARDIUM_DENSITY_G_PER_ML) == pytest.approx(7.56)
    assert (m.ed_frame, m.es_frame) == (0, 3)
    assert m.bsa is None and m.lv_edvi is None and m.lv_massi is None


def test_bsa_mosteller_and_indexed_values():
    assert bsa_mosteller(180, 81) == pytest.approx(math.sqrt(180 * 81 / 3600)) == pytest.approx(2.01246117975)
    ed = _ventricles(500, 300, 600)
    es = _ventricles(200, 310, 330)
    m = cardiac_measures(ed, es, SPACING, height_cm=180, weight_kg=81)
    bsa = math.sqrt(180 * 81 / 3600)
    assert m.bsa == pytest.approx(bsa)
    assert (m.lv_edvi, m.lv_esvi, m.rv_edvi, m.rv_esvi, m.lv_massi) == pytest.approx(
        (12.0 / bsa, 4.8 / bsa, 14.4 / bsa, 7.92 / bsa, 7.56 / bsa)
    )


@pytest.mark.parametrize("height, weight", [(None, 80), (180, None), (float("nan"), 80), (0, 80), (180, -1)])
def test_missing_demographics_give_none(height, weight):
    assert bsa_mosteller(height, weight) is None
    m = cardiac_measures(_ventricles(5, 5, 5), _ventricles(2, 5, 2), SPACING, height, weight)
    assert m.bsa is None
    assert all(v is None for v in (m.lv_edvi, m.lv_esvi, m.rv_edvi, m.rv_esvi, m.lv_massi))


def test_bsa_rejects_non_numbers():
    with pytest.raises(InputError, match="height_cm"):
        bsa_mosteller("tall", 80)


def test_as_row_columns_and_zero_edv_ef_is_nan():
    m = cardiac_measures(_ventricles(0, 10, 4), _ventricles(0, 10, 1), SPACING, 180, 81, 2, 5)
    row = m.as_row()
    assert list(row) == [
        "lvedv_ml", "lvesv_ml", "lvsv_ml", "lvef_pct", "rvedv_ml", "rvesv_ml", "rvsv_ml", "rvef_pct",
        "lvmass_g", "bsa_m2", "lvedvi_ml_m2", "lvesvi_ml_m2", "rvedvi_ml_m2", "rvesvi_ml_m2",
        "lvmassi_g_m2", "ed_frame", "es_frame",
    ]
    assert set(MEASURES) <= set(row)
    assert math.isnan(row["lvef_pct"]) and row["lvedv_ml"] == 0.0
    assert row["rvef_pct"] == pytest.approx(75.0)
    assert (row["ed_frame"], row["es_frame"]) == (2, 5)
    assert isinstance(m, CardiacMeasures)
    with pytest.raises(AttributeError):
        m.lv_edv = 1.0  # frozen


def test_mismatched_ed_es_shapes_are_an_input_error():
    with pytest.raises(InputError, match="differ in shape"):
        cardiac_measures(np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.uint8), SPACING)


def test_detect_ed_es_on_a_curve():
    assert detect_ed_es([90.0, 120.0, 80.0, 40.0, 60.0, 120.0]) == (1, 3)  # ties: first index
    assert detect_ed_es(np.array([5.0, 5.0])) == (0, 0)
    with pytest.raises(InputError, match="at least 2 frames"):
        detect_ed_es([100.0])
    with pytest.raises(InputError, match="no LV predicted"):
        detect_ed_es(np.zeros(5))
    with pytest.raises(InputError, match="NaN"):
        detect_ed_es([1.0, float("nan")])


def test_volume_curve_4d_and_sequence():
    frames = [_ventricles(lv, 10, 20 - lv) for lv in (9, 3, 6)]
    cine = np.stack(frames, axis=3)  # (X, Y, Z, T)
    expected = np.array([[9, 10, 11], [3, 10, 17], [6, 10, 14]]) * VOXEL_ML
    np.testing.assert_allclose(volume_curve(cine, SPACING), expected)
    np.testing.assert_allclose(volume_curve(frames, SPACING), expected)
    assert detect_ed_es(volume_curve(cine, SPACING)[:, 0]) == (0, 1)
    with pytest.raises(InputError, match=r"\(X, Y, Z, T\)"):
        volume_curve(frames[0], SPACING)
    with pytest.raises(InputError, match="3D frames"):
        volume_curve([frames[0][..., 0]], SPACING)


# Phantom subjects: mnms 0 stores ED late (ED 5, ES 1: the cycle wraps), acdc 0 has ED at frame 0.
@pytest.fixture(scope="module", params=[("mnms", 0), ("acdc", 0)], ids=lambda p: f"{p[0]}{p[1]}")
def phantom(request):
    layout, index = request.param
    return generate_subject(0, index, PHANTOM_PRESETS["tiny"], layout)


def test_phantom_measures_match_its_qa(phantom):
    """The QA row (phantom.measure_labels) counts the same voxel labels with voxel volume
    |det(affine)|; the affine's axes are orthogonal, so det equals the product of the column
    norms we use as spacing, and the only difference is the QA's rounding to 2 decimals."""
    qa, labels = phantom.qa, phantom.labels
    spacing = voxel_spacing(phantom.affine)
    assert float(np.prod(spacing)) == pytest.approx(abs(np.linalg.det(phantom.affine[:3, :3])), rel=1e-12)
    m = cardiac_measures(labels[..., qa["ed"]], labels[..., qa["es"]], spacing, qa["height"], qa["weight"],
                         qa["ed"], qa["es"])
    rounding = 0.005 + 1e-9
    for ours, theirs in [
        (m.lv_edv, "lv_edv_ml"), (m.lv_esv, "lv_esv_ml"), (m.lv_ef, "lv_ef_pct"),
        (m.rv_edv, "rv_edv_ml"), (m.rv_esv, "rv_esv_ml"), (m.rv_ef, "rv_ef_pct"), (m.lv_mass, "myo_mass_ed_g"),
    ]:
        assert ours == pytest.approx(qa[theirs], abs=rounding), theirs
    # Looser, against the analytic target: the phantom calibrates each frame's LV pixel count to
    # the target volume curve (phantom_heart_fractions.solve_scale), so the labelled EF misses the target
    # only by the voxel discretisation: <= 0.3 points on 16 tiny subjects; 1 point allowed.
    assert m.lv_ef == pytest.approx(qa["target_lv_ef_pct"], abs=1.0)
    assert m.lv_edvi == pytest.approx(m.lv_edv / math.sqrt(qa["height"] * qa["weight"] / 3600))


def test_phantom_ed_es_detected_from_its_volume_curve(phantom):
    curve = volume_curve(phantom.labels, voxel_spacing(phantom.affine))
    assert curve.shape == (phantom.labels.shape[3], 3)
    assert detect_ed_es(curve[:, 0]) == (phantom.ed, phantom.es) == (phantom.qa["ed"], phantom.qa["es"])


def test_agreement_hand_computed_four_pairs():
    predicted = [10.0, 12.0, 14.0, 20.0]
    reference = [9.0, 13.0, 11.0, 19.0]
    # differences 1, -1, 3, 1: bias 1, MAE 1.5, sd sqrt(((0)+(4)+(4)+(0))/3) = sqrt(8/3).
    sd = math.sqrt(8 / 3)
    # r: pred mean 14, dev (-4, -2, 0, 6); ref mean 13, dev (-4, 0, -2, 6); Sxy 52, Sxx 56, Syy 56.
    result = agreement(predicted, reference)
    assert result["n"] == 4 and result["n_dropped"] == 0
    assert result["bias"] == pytest.approx(1.0)
    assert result["mae"] == pytest.approx(1.5)
    assert result["sd"] == pytest.approx(sd)
    assert (result["loa_low"], result["loa_high"]) == pytest.approx((1 - 1.96 * sd, 1 + 1.96 * sd))
    assert result["pearson_r"] == pytest.approx(52 / 56)
    assert result["pearson_r"] == pytest.approx(np.corrcoef(predicted, reference)[0, 1])


def test_agreement_drops_nan_pairs_and_handles_small_n():
    result = agreement([10.0, float("nan"), 14.0, None, 20.0], [9.0, 5.0, float("nan"), 4.0, 19.0])
    assert result["n"] == 2 and result["n_dropped"] == 3
    assert result["bias"] == pytest.approx(1.0) and result["sd"] == pytest.approx(0.0)
    single = agreement([10.0], [7.0])
    assert single["n"] == 1 and single["bias"] == pytest.approx(3.0) and single["mae"] == pytest.approx(3.0)
    assert all(math.isnan(single[k]) for k in ("sd", "loa_low", "loa_high", "pearson_r"))
    empty = agreement([float("nan")], [1.0])
    assert empty["n"] == 0 and empty["n_dropped"] == 1 and math.isnan(empty["bias"]) and math.isnan(empty["mae"])
    flat = agreement([5.0, 5.0, 5.0], [4.0, 6.0, 5.0])  # zero variance on one side
    assert math.isnan(flat["pearson_r"]) and flat["bias"] == pytest.approx(0.0)
    with pytest.raises(InputError, match="paired"):
        agreement([1.0, 2.0], [1.0])


def test_agreement_table_pairs_rows_by_position():
    reference = [cardiac_measures(_ventricles(lv, 100, 200), _ventricles(lv // 2, 100, 80), SPACING).as_row()
                 for lv in (100, 200, 300)]
    predicted = [dict(row, lvedv_ml=row["lvedv_ml"] + shift) for row, shift in zip(reference, (1.0, 2.0, 3.0))]
    table = agreement_table(predicted, reference)
    assert [row["measure"] for row in table] == list(MEASURES)
    by_measure = {row["measure"]: row for row in table}
    assert by_measure["lvedv_ml"]["bias"] == pytest.approx(2.0)
    assert by_measure["lvedv_ml"]["sd"] == pytest.approx(1.0)
    assert by_measure["lvedv_ml"]["pearson_r"] == pytest.approx(1.0)
    assert by_measure["lvmass_g"]["bias"] == 0.0 and by_measure["lvmass_g"]["n"] == 3
    only = agreement_table(predicted, reference, measures=("lvedvi_ml_m2",))  # None without BSA: all dropped
    assert only[0]["n"] == 0 and only[0]["n_dropped"] == 3
    with pytest.raises(InputError, match="paired rows"):
        agreement_table(predicted[:2], reference)
    with pytest.raises(InputError, match="no column"):
        agreement_table(predicted, reference, measures=("lv_volume",))
