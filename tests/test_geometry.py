"""The one geometry rule (cmrssp.data.geometry): every case, on files written to disk."""

import nibabel as nib
import numpy as np
import pytest

from cmrssp.data import nifti
from cmrssp.data.geometry import resolve_geometry, voxel_spacing
from cmrssp.errors import InputError


def rotation(angle=0.4):
    return np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])


def write(path, sform, pixdim, sform_code=2, qform=None, qform_code=0, shape=(6, 5, 3)):
    """A file whose sform and pixdim are set independently, as a scanner export or an edit may leave them."""
    image = nib.Nifti1Image(np.ones(shape, np.int16), None)
    header = image.header
    if qform is not None:
        header.set_qform(qform, code=qform_code)
    else:
        header.set_qform(None, code=0)
    header.set_sform(sform, code=sform_code)
    header["pixdim"][1:4] = pixdim
    nib.save(image, str(path))
    return path


def oblique(spacing, origin=(10.0, -20.0, 30.0)):
    affine = np.eye(4)
    affine[:3, :3] = rotation() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


ACDC_SFORM = np.diag([-1.0, -1.0, 1.0, 1.0])


def test_agreeing_records_keep_the_affine_bit_for_bit(tmp_path):
    affine = oblique((1.4, 1.4, 9.0))
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 3), np.int16), affine), str(path))
    _, geometry = nifti.read_image(path, ndim=3)
    np.testing.assert_array_equal(geometry.affine, nib.load(str(path)).affine)
    assert (geometry.chosen, geometry.finding) == ("affine", None)


def test_acdc_placeholder_sform_takes_pixdim_and_keeps_direction(tmp_path):
    path = write(tmp_path / "acdc.nii.gz", ACDC_SFORM, [1.5625, 1.5625, 10.0])
    _, geometry = nifti.read_image(path, ndim=3)
    np.testing.assert_allclose(geometry.affine, np.diag([-1.5625, -1.5625, 10.0, 1.0]))
    assert (geometry.chosen, geometry.finding, geometry.affine_source) == ("header", "placeholder-affine", "sform code 2")
    np.testing.assert_allclose(geometry.spacing, [1.5625, 1.5625, 10.0])
    # what ITK reports for the same file: spacing = pixdim, direction = normalised sform columns, origin
    message = geometry.message()
    assert str(path) in message and "1 x 1 x 1 mm" in message and "1.562 x 1.562 x 10 mm" in message


def test_a_conflict_takes_pixdim_with_the_affines_direction_and_origin(tmp_path):
    affine = oblique((1.4, 1.4, 9.0))
    path = write(tmp_path / "c.nii.gz", affine, [1.2, 1.3, 8.0], sform_code=1)
    _, geometry = nifti.read_image(path, ndim=3)
    assert (geometry.chosen, geometry.finding) == ("header", "conflict")
    np.testing.assert_allclose(geometry.spacing, [1.2, 1.3, 8.0], rtol=1e-6)
    direction = geometry.affine[:3, :3] / geometry.spacing
    np.testing.assert_allclose(direction, rotation(), atol=1e-6)
    np.testing.assert_allclose(geometry.affine[:3, 3], affine[:3, 3])


def test_a_unit_pixdim_against_a_real_affine_is_the_placeholder(tmp_path):
    affine = oblique((1.4, 1.4, 9.0))
    path = write(tmp_path / "p.nii.gz", affine, [1.0, 1.0, 1.0], sform_code=1)
    _, geometry = nifti.read_image(path, ndim=3)
    assert (geometry.chosen, geometry.finding) == ("affine", "placeholder-pixdim")
    np.testing.assert_allclose(geometry.affine, affine, atol=1e-5)


def test_an_unusable_pixdim_falls_back_to_the_affine_unless_header_is_forced(tmp_path):
    affine = oblique((1.4, 1.4, 9.0))
    path = write(tmp_path / "z.nii.gz", affine, [0.0, 1.4, 9.0], sform_code=1)
    _, geometry = nifti.read_image(path, ndim=3)
    assert (geometry.chosen, geometry.finding) == ("affine", "pixdim-unusable")
    with pytest.raises(InputError, match="pixdim") as info:
        nifti.read_image(path, ndim=3, geometry="header")
    assert str(path) in str(info.value)


def test_forced_rules_and_their_findings(tmp_path):
    path = write(tmp_path / "acdc.nii.gz", ACDC_SFORM, [1.5625, 1.5625, 10.0])
    _, by_affine = nifti.read_image(path, ndim=3, geometry="affine")
    np.testing.assert_allclose(voxel_spacing(by_affine.affine), [1.0, 1.0, 1.0])
    assert (by_affine.chosen, by_affine.finding) == ("affine", "forced-affine")
    _, by_header = nifti.read_image(path, ndim=3, geometry="header")
    assert (by_header.chosen, by_header.finding) == ("header", "forced-header")
    # forcing the rule on agreeing records changes nothing and reports nothing
    agreeing = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((6, 5, 3), np.int16), oblique((1.4, 1.4, 9.0))), str(agreeing))
    for mode in ("affine", "header"):
        _, geometry = nifti.read_image(agreeing, ndim=3, geometry=mode)
        assert geometry.finding is None
        np.testing.assert_allclose(geometry.affine, oblique((1.4, 1.4, 9.0)), atol=1e-5)


def test_a_qform_only_file_cannot_disagree(tmp_path):
    # The qform is a rotation scaled by pixdim (NIfTI method 2): both records are one.
    path = write(tmp_path / "q.nii.gz", oblique((1.4, 1.4, 9.0)), [1.4, 1.4, 9.0], sform_code=0,
                 qform=oblique((1.4, 1.4, 9.0)), qform_code=1)
    _, geometry = nifti.read_image(path, ndim=3)
    assert (geometry.finding, geometry.affine_source) == (None, "qform code 1")


def test_unknown_rule_is_refused(tmp_path):
    path = write(tmp_path / "acdc.nii.gz", ACDC_SFORM, [1.5625, 1.5625, 10.0])
    with pytest.raises(InputError, match="unknown geometry rule 'itk'"):
        resolve_geometry(nib.load(str(path)), path, "itk")


def test_the_record_is_json_and_keeps_both_voxel_sizes(tmp_path):
    import json

    path = write(tmp_path / "acdc.nii.gz", ACDC_SFORM, [1.5625, 1.5625, 10.0])
    _, geometry = nifti.read_image(path, ndim=3)
    record = json.loads(json.dumps(geometry.record()))
    assert record["affine_spacing"] == [1.0, 1.0, 1.0] and record["header_spacing"] == [1.5625, 1.5625, 10.0]
    assert record["mode"] == "auto" and record["file"] == str(path)
    assert geometry.source_header["sform_code"] == 2 and geometry.source_header["qform_code"] == 0
