import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from cmrssp.data.source_header import geometry_differences, header_geometry, write_like_source
from cmrssp.errors import InputError

from shared_data import REAL_ACDC, needs_real_acdc


def labels_of(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 4, shape).astype(np.uint8)


def saved_source(tmp_path, header, shape, image_class=nib.Nifti1Image, name="source.nii.gz"):
    """Write an int16 'image' with ``header`` and load it back, as a user's source file would be."""
    header = header.copy()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape) % 100
    path = tmp_path / name
    nib.save(image_class(data, None, header=header), str(path))
    return nib.load(str(path))


def acdc_like_header():
    """The real ACDC convention (data-formats.md 2.1): placeholder sform, spacing only in pixdim."""
    header = nib.Nifti1Header()
    header["pixdim"] = [1, 1.5625, 1.5625, 10, 1, 1, 1, 1]
    header["qform_code"], header["sform_code"] = 0, 2
    header["quatern_b"], header["quatern_c"], header["quatern_d"] = 0.0, 0.0, 1.0
    header["srow_x"], header["srow_y"], header["srow_z"] = [-1, -0.0, 0, 0], [-0.0, -1, 0, 0], [0, 0, 1, 0]
    return header


def oblique_header():
    """qform and sform both code 1, a left-handed (qfac -1) rotation and non-zero offsets."""
    angle = 0.37
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)], [0, np.sin(0.2), np.cos(0.2)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ tilt @ np.diag([1.3, 1.3, -8.0])  # negative determinant: qfac -1
    affine[:3, 3] = [-120.25, 33.5, 71.125]
    header = nib.Nifti1Header()
    header.set_qform(affine, code=1)
    sform = affine.copy()
    sform[:3, 3] += [0.5, -0.25, 0.125]  # a distinct sform, so both must be copied independently
    header.set_sform(sform, code=1)
    header.set_xyzt_units("mm", "sec")
    header.set_dim_info(freq=0, phase=1, slice=2)
    return header


def check_written_like(source, written_path, labels):
    written = nib.load(str(written_path))
    assert geometry_differences(source.header, written.header) == []
    assert written.get_data_dtype() == np.uint8
    assert written.dataobj.slope == 1.0 and written.dataobj.inter == 0.0
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), labels)
    assert np.array_equal(written.affine, source.affine)
    assert written.header.get_zooms()[:3] == source.header.get_zooms()[:3]
    return written


def test_acdc_placeholder_geometry_is_copied_not_rederived(tmp_path):
    shape = (6, 5, 3)
    source = saved_source(tmp_path, acdc_like_header(), shape)
    labels = labels_of(shape)
    out = tmp_path / "pred.nii.gz"
    write_like_source(out, labels, header_geometry(source.header))
    written = check_written_like(source, out, labels)
    assert int(written.header["qform_code"]) == 0 and int(written.header["sform_code"]) == 2
    assert written.header.get_zooms()[:3] == (1.5625, 1.5625, 10.0)
    np.testing.assert_array_equal(written.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.nii.gz", "source.nii.gz"]


def test_oblique_qform_and_sform_with_negative_qfac(tmp_path):
    shape = (5, 4, 3)
    source = saved_source(tmp_path, oblique_header(), shape)
    assert source.header["pixdim"][0] == -1 and source.header["quatern_b"] != 0
    labels = labels_of(shape, seed=1)
    out = tmp_path / "pred.nii"  # uncompressed branch
    write_like_source(out, labels, header_geometry(source.header))
    written = check_written_like(source, out, labels)
    assert np.array_equal(written.header.get_qform(), source.header.get_qform())
    assert written.header.get_dim_info() == (0, 1, 2)


def test_nifti2_source_gives_nifti2_output(tmp_path):
    shape = (4, 4, 2)
    source = saved_source(tmp_path, nib.Nifti2Header.from_header(oblique_header()), shape, nib.Nifti2Image)
    record = header_geometry(source.header)
    assert record["format"] == "nifti2"
    out = tmp_path / "pred.nii.gz"
    write_like_source(out, labels_of(shape), record)
    assert isinstance(nib.load(str(out)), nib.Nifti2Image)
    check_written_like(source, out, labels_of(shape))


def test_4d_cine_source_gives_3d_labels(tmp_path):
    header = acdc_like_header()
    header["pixdim"][4] = 30.0
    header.set_xyzt_units("mm", "msec")
    source = saved_source(tmp_path, header, (6, 5, 3, 25))
    assert source.header["dim"][0] == 4 and source.header["dim"][4] == 25
    labels = labels_of((6, 5, 3))
    out = tmp_path / "pred.nii.gz"
    write_like_source(out, labels, header_geometry(source.header))
    written = check_written_like(source, out, labels)
    assert written.shape == (6, 5, 3)
    assert list(written.header["dim"]) == [3, 6, 5, 3, 1, 1, 1, 1]
    assert written.header.get_xyzt_units() == ("mm", "msec")


def test_wrong_label_shape_raises_and_writes_nothing(tmp_path):
    record = header_geometry(saved_source(tmp_path, acdc_like_header(), (6, 5, 3)).header)
    out = tmp_path / "out" / "pred.nii.gz"
    with pytest.raises(InputError) as info:
        write_like_source(out, labels_of((6, 5, 4)), record)
    message = str(info.value)
    assert str(out) in message and "(6, 5, 4)" in message and "(6, 5, 3)" in message
    assert not out.exists() and (not out.parent.exists() or list(out.parent.iterdir()) == [])


@pytest.mark.parametrize(
    "labels, dtype, message",
    [
        (np.full((6, 5, 3), 300, np.int32), np.uint8, "do not fit"),
        (np.zeros((6, 5, 3), np.float32), np.uint8, "must hold integers"),
        (np.zeros((6, 5, 3), np.uint8), np.float32, "integer type"),
    ],
)
def test_bad_labels_or_dtype_raise_input_error(tmp_path, labels, dtype, message):
    record = header_geometry(acdc_like_header())
    record["dim"][1:4] = [6, 5, 3]
    with pytest.raises(InputError, match=message):
        write_like_source(tmp_path / "pred.nii.gz", labels, record, dtype=dtype)
    assert list(tmp_path.iterdir()) == []


def test_int16_dtype_and_no_scaling_on_disk(tmp_path):
    record = header_geometry(acdc_like_header())
    record["dim"][1:4] = [3, 2, 2]
    out = tmp_path / "pred.nii.gz"
    write_like_source(out, np.array(labels_of((3, 2, 2)), dtype=np.int64), record, dtype=np.int16)
    raw = nib.Nifti1Header(gzip.decompress(out.read_bytes())[:348], check=False)  # no load-time fixes
    assert raw.get_data_dtype() == np.int16
    assert (float(raw["scl_slope"]), float(raw["scl_inter"])) == (1.0, 0.0)


def test_record_is_plain_json_and_round_trips_exactly(tmp_path):
    source = saved_source(tmp_path, oblique_header(), (5, 4, 3))
    record = header_geometry(source.header)
    assert list(record) == [
        "format", "dim", "pixdim", "qform_code", "sform_code", "quatern", "qoffset", "srow", "xyzt_units", "dim_info",
    ]
    text = json.dumps(record)
    assert json.loads(text) == record
    # Bit-exact: every float came from float32 and converts back to the very same float32.
    stored_srow = np.stack([source.header[key] for key in ("srow_x", "srow_y", "srow_z")])
    assert np.array_equal(np.float32(json.loads(text)["srow"]), stored_srow)
    out = tmp_path / "pred.nii.gz"
    write_like_source(out, labels_of((5, 4, 3)), json.loads(text))
    assert geometry_differences(source.header, nib.load(str(out)).header) == []


def test_geometry_differences_names_changed_fields():
    base = oblique_header()
    base.set_data_shape((5, 4, 3))
    assert geometry_differences(base, base.copy()) == []

    changed = base.copy()
    changed["srow_y"][2] = np.nextafter(changed["srow_y"][2], np.float32(np.inf))
    assert geometry_differences(base, changed) == ["srow"]

    changed = base.copy()
    changed["qform_code"] = 2
    assert geometry_differences(base, changed) == ["qform_code"]

    changed = base.copy()
    changed["pixdim"][1] = 1.25
    assert geometry_differences(base, changed) == ["pixdim"]

    changed = base.copy()
    changed.set_data_shape((5, 4, 3, 25))  # number of frames and their time step are not geometry
    changed["pixdim"][4] = 30.0
    assert geometry_differences(base, changed) == []

    changed = base.copy()
    changed.set_data_shape((5, 4, 2))
    assert geometry_differences(base, changed) == ["dim"]


def test_non_nifti_header_raises_input_error(tmp_path):
    with pytest.raises(InputError, match="not a NIfTI header") as info:
        header_geometry(nib.AnalyzeHeader(), path=tmp_path / "x.img")
    assert str(tmp_path / "x.img") in str(info.value)


@needs_real_acdc
def test_real_acdc_ground_truth_round_trips(tmp_path):
    source_path = REAL_ACDC / "patient001" / "patient001_frame01_gt.nii.gz"
    source = nib.load(str(source_path))
    labels = np.rint(np.asanyarray(source.dataobj)).astype(np.uint8)
    out = tmp_path / "patient001_frame01_pred.nii.gz"
    write_like_source(out, labels, header_geometry(source.header, source_path))
    written = nib.load(str(out))
    assert geometry_differences(source.header, written.header) == []
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), labels)
    assert written.header.get_zooms()[:3] == (1.5625, 1.5625, 10.0)
    assert np.array_equal(written.affine, source.affine)
