import gzip

import nibabel as nib
import numpy as np
import pytest

from cmrssp.data import nifti
from cmrssp.errors import InputError


def oblique_affine(spacing=(1.4, 1.4, 9.0)):
    angle = 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [10, -20, 30]
    return affine


def test_read_image_returns_float32_and_the_resolved_geometry(tmp_path):
    affine = oblique_affine()
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3, 2), np.int16), affine), str(path))
    data, geometry = nifti.read_image(path)
    assert data.dtype == np.float32 and data.shape == (4, 5, 3, 2)
    np.testing.assert_allclose(geometry.affine, affine, atol=1e-5)  # records agree: affine unchanged
    assert geometry.finding is None and geometry.path == str(path)


def test_write_then_read_keeps_dtype_and_affine(tmp_path):
    labels = np.random.default_rng(0).integers(0, 4, (6, 5, 3)).astype(np.uint8)
    path = tmp_path / "gt.nii.gz"
    nifti.write_nifti(path, labels, oblique_affine(), dtype=np.uint8)
    assert nib.load(str(path)).get_data_dtype() == np.uint8
    read, geometry = nifti.read_labels(path, ndim=3)
    np.testing.assert_array_equal(read, labels)
    np.testing.assert_allclose(geometry.affine, oblique_affine(), atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["gt.nii.gz"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b"not a nifti at all"), "not a gzip file"),
        (lambda p: p.write_bytes(__import__("gzip").compress(b"not a nifti header at all")), "not a readable NIfTI"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(InputError, match=message) as info:
        nifti.read_image(path)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "cine.nii.gz"
    nifti.write_nifti(path, np.random.default_rng(0).random((20, 20, 4, 5)).astype(np.float32), np.eye(4))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as info:
        nifti.read_image(path)
    assert "cine.nii.gz" in str(info.value)


def test_dimension_nan_spacing_and_label_checks(tmp_path):
    three_d = tmp_path / "frame.nii.gz"
    nifti.write_nifti(three_d, np.zeros((4, 4, 2), np.float32), np.eye(4))
    with pytest.raises(InputError, match="expected a 4D image, found 3D"):
        nifti.read_image(three_d, ndim=4)

    nan = tmp_path / "nan.nii.gz"
    data = np.zeros((4, 4, 2, 2), np.float32)
    data[1, 1, 1, 1] = np.nan
    nifti.write_nifti(nan, data, np.eye(4))
    with pytest.raises(InputError, match="non-finite"):
        nifti.read_image(nan)

    flat = tmp_path / "flat.nii.gz"
    affine = np.eye(4)
    affine[2, 2] = 0.0  # a zero slice spacing that only the sform carries
    image = nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), None)
    image.header.set_sform(affine, code=1)
    image.header.set_qform(None, code=0)
    nib.save(image, str(flat))
    with pytest.raises(InputError, match="spacing"):
        nifti.read_image(flat, ndim=3)

    labels = tmp_path / "gt.nii.gz"
    nifti.write_nifti(labels, np.full((4, 4, 2), 5, np.uint8), np.eye(4), dtype=np.uint8)
    with pytest.raises(InputError, match=r"label values \[5\] outside"):
        nifti.read_labels(labels)
    fractional = tmp_path / "frac.nii.gz"
    nifti.write_nifti(fractional, np.full((4, 4, 2), 1.4, np.float32), np.eye(4))
    with pytest.raises(InputError, match="non-integer"):
        nifti.read_labels(fractional)


def test_corruption_in_the_middle_of_a_gzip_is_caught(tmp_path):
    path = tmp_path / "cine.nii.gz"
    data = np.random.default_rng(1).random((24, 24, 4, 6)).astype(np.float32)
    nifti.write_nifti(path, data, np.eye(4))
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 8] = bytes(8)
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="corrupt") as info:
        nifti.read_image(path)
    assert info.value.path == str(path)


def test_uncompressed_nii_is_read_into_memory(tmp_path):
    path = tmp_path / "cine.nii"
    nifti.write_nifti(path, np.ones((4, 4, 2, 2), np.float32), np.eye(4))
    data, _ = nifti.read_image(path)
    assert not isinstance(data, np.memmap) and data.base is None or not isinstance(data.base, np.memmap)
    data[0, 0, 0, 0] = 5.0
    assert nifti.read_image(path)[0][0, 0, 0, 0] == 1.0
