"""Reading NIfTI, NRRD, MetaImage and DICOM into RAS grids, label maps, and refusing bad input
with one line."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from data_cases import LPS_AFFINE, synthetic_case, write_nifti

from dicom_series import write_dicom_series
from itk_images import ITK_SUFFIXES, write_itk_image
from sparsekits.data.geometry import Grid
from sparsekits.data.io import read_image, read_label_map, thick_slice_warning, write_label_map
from sparsekits.errors import InputError

OBLIQUE_DIRECTION = (0.9848077530, 0, 0.1736481777, 0, 1, 0, -0.1736481777, 0, 0.9848077530)


def test_nifti_keeps_array_dtype_and_affine(tmp_path):
    hu, _ = synthetic_case()
    image = read_image(write_nifti(tmp_path / "ct.nii.gz", hu))
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, hu)
    np.testing.assert_allclose(image.grid.affine, LPS_AFFINE)
    assert image.grid.spacing == pytest.approx((1.5, 1.5, 2.5))


def test_scaled_nifti_becomes_int16_hu(tmp_path):
    hu, _ = synthetic_case()
    nifti = nib.Nifti1Image(hu.astype(np.float32) + 1024, LPS_AFFINE)
    nifti.header.set_data_dtype(np.uint16)
    nifti.header.set_slope_inter(1.0, -1024.0)
    nib.save(nifti, tmp_path / "scaled.nii")
    image = read_image(tmp_path / "scaled.nii")
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, hu)


def test_single_volume_4d_nifti_is_read_as_3d(tmp_path):
    hu, _ = synthetic_case()
    image = read_image(write_nifti(tmp_path / "ct.nii.gz", hu[..., None]))
    assert image.array.shape == hu.shape


def test_dicom_series_geometry_matches_simpleitk_nifti_export(tmp_path):
    hu, _ = synthetic_case()
    volume = write_dicom_series(tmp_path / "series", hu, direction=OBLIQUE_DIRECTION)
    image = read_image(tmp_path / "series")
    np.testing.assert_array_equal(image.array, hu)
    # SimpleITK's own NIfTI writer converts LPS to RAS: our DICOM affine must agree with it.
    sitk.WriteImage(volume, str(tmp_path / "reference.nii.gz"))
    np.testing.assert_allclose(
        image.grid.affine, nib.load(tmp_path / "reference.nii.gz").affine, atol=1e-4
    )
    assert image.grid.spacing == pytest.approx((0.8, 0.8, 2.0), abs=1e-4)


def test_real_dicom_series(shared_data):
    folder = shared_data / "ct-samples" / "upper_abdomen_dicom"
    if not folder.is_dir():
        pytest.skip("no upper_abdomen_dicom sample")
    image = read_image(folder)
    assert image.array.shape == (512, 512, 20)
    assert image.grid.spacing == pytest.approx((0.977, 0.977, 2.0), abs=1e-3)
    assert nib.aff2axcodes(image.grid.affine) == ("L", "P", "S")
    assert image.array.min() < -500 < 200 < image.array.max()


def test_folder_with_two_series_lists_them(tmp_path):
    hu, _ = synthetic_case(shape=(16, 16, 4))
    write_dicom_series(tmp_path / "mixed", hu, series_uid="1.2.3.4")
    write_dicom_series(tmp_path / "mixed", hu, series_uid="1.2.3.5", origin=(0, 0, 300.0))
    with pytest.raises(InputError, match=r"holds 2 DICOM series.*1\.2\.3\.4.*1\.2\.3\.5"):
        read_image(tmp_path / "mixed")


def test_dicom_series_with_missing_slice_is_refused(tmp_path):
    hu, _ = synthetic_case(shape=(16, 16, 8))
    write_dicom_series(tmp_path / "gappy", hu, skip_slices=(4,))
    with pytest.raises(InputError, match="missing DICOM slices: gap of 4 mm"):
        read_image(tmp_path / "gappy")


def test_one_series_uid_with_two_acquisitions_is_refused(tmp_path):
    hu, _ = synthetic_case(shape=(16, 16, 4))
    write_dicom_series(tmp_path / "twice", hu, file_prefix="first")
    write_dicom_series(tmp_path / "twice", hu, file_prefix="second")
    with pytest.raises(InputError, match="DICOM slices share positions"):
        read_image(tmp_path / "twice")


def test_nifti2_gz_is_read(tmp_path):
    hu, _ = synthetic_case()
    nib.save(nib.Nifti2Image(hu, LPS_AFFINE), tmp_path / "ct2.nii.gz")
    image = read_image(tmp_path / "ct2.nii.gz")
    np.testing.assert_array_equal(image.array, hu)
    np.testing.assert_allclose(image.grid.affine, LPS_AFFINE)


def test_empty_folder_has_no_series(tmp_path):
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)


def test_truncated_nifti_is_refused(tmp_path):
    hu, _ = synthetic_case()
    path = write_nifti(tmp_path / "ct.nii.gz", hu)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"ct\.nii\.gz: unreadable NIfTI"):
        read_image(path)


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header at all"))
    with pytest.raises(InputError, match="unreadable NIfTI"):
        read_image(path)


@pytest.mark.parametrize("shape", [(32, 32), (8, 8, 8, 3)])
def test_2d_and_4d_images_are_refused(tmp_path, shape):
    array = np.full(shape, -1000, dtype=np.int16)
    path = write_nifti(tmp_path / "bad.nii.gz", array, np.eye(4))
    with pytest.raises(InputError, match=r"expected a 3D image, got shape"):
        read_image(path)


@pytest.mark.parametrize(
    "low, high, kind", [(0, 255, "a 0-255 range"), (0, 1800, "no air"), (-200, 1500, "no air")]
)
def test_non_hu_intensities_are_refused(tmp_path, low, high, kind):
    array = np.random.default_rng(0).uniform(low, high, (20, 20, 20)).astype(np.float32)
    path = write_nifti(tmp_path / "mr.nii.gz", array)
    with pytest.raises(InputError, match=f"not HU-like \\({kind}"):
        read_image(path)
    assert read_image(path, require_hu=False).array.shape == (20, 20, 20)


def test_label_map_is_uint8_on_the_image_grid(tmp_path):
    hu, labels = synthetic_case()
    image = read_image(write_nifti(tmp_path / "ct.nii.gz", hu))
    label_map = read_label_map(
        write_nifti(tmp_path / "seg.nii.gz", labels.astype(np.float32)), like=image
    )
    assert label_map.array.dtype == np.uint8
    np.testing.assert_array_equal(label_map.array, labels)


def test_label_values_outside_0_3_are_refused(tmp_path):
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[2, 2, 2] = 4
    with pytest.raises(InputError, match=r"seg\.nii\.gz: label values must be 0-3, found 0 to 4"):
        read_label_map(write_nifti(tmp_path / "seg.nii.gz", labels))


def test_label_on_another_grid_is_refused(tmp_path):
    hu, labels = synthetic_case()
    image = read_image(write_nifti(tmp_path / "ct.nii.gz", hu))
    shifted = LPS_AFFINE.copy()
    shifted[0, 3] += 5
    path = write_nifti(tmp_path / "seg.nii.gz", labels, shifted)
    with pytest.raises(InputError, match="differs from its image's"):
        read_label_map(path, like=image)
    path = write_nifti(tmp_path / "seg2.nii.gz", labels[:-1])
    with pytest.raises(InputError, match="differs from its image's"):
        read_label_map(path, like=image)


def test_write_label_map_round_trips_exactly(tmp_path):
    _, labels = synthetic_case()
    grid = Grid(labels.shape, LPS_AFFINE)
    path = write_label_map(tmp_path / "out" / "pred.nii.gz", labels, grid)
    back = read_label_map(path)
    assert back.grid.shape == grid.shape
    np.testing.assert_array_equal(back.grid.affine, grid.affine)
    np.testing.assert_array_equal(back.array, labels)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["pred.nii.gz"]


@pytest.mark.parametrize(
    "value, found", [(np.nan, r"\(3 NaN\)"), (np.inf, r"\(3 infinite\)"), (-np.inf, r"\(3 inf")]
)
def test_nan_and_infinite_values_are_refused(tmp_path, value, found):
    hu, _ = synthetic_case()
    array = hu.astype(np.float32)
    array[:3, 0, 0] = value
    with pytest.raises(InputError, match=f"ct.nii.gz: NaN or infinite voxel values {found}"):
        read_image(write_nifti(tmp_path / "ct.nii.gz", array))


def test_values_mostly_outside_the_ct_range_are_refused(tmp_path):
    hu, _ = synthetic_case()
    path = write_nifti(tmp_path / "ct.nii.gz", hu.astype(np.float32) * 1000)
    with pytest.raises(InputError, match=r"\d+% of voxels lie outside -1100\.\.4000 HU"):
        read_image(path)


def test_padding_far_below_air_in_a_minority_of_voxels_is_a_ct(tmp_path):
    hu, _ = synthetic_case()
    hu[:, :12] = -3024  # the value some scanners give outside the reconstructed circle
    assert read_image(write_nifti(tmp_path / "ct.nii.gz", hu)).array.min() == -3024


def test_a_single_slice_is_refused(tmp_path):
    hu, _ = synthetic_case()
    path = write_nifti(tmp_path / "slice.nii.gz", hu[:, :, 10:11])
    with pytest.raises(InputError, match=r"slice\.nii\.gz: a single slice \(shape \(48, 52, 1\)\)"):
        read_image(path)


@pytest.mark.parametrize(
    "shape, spacing, problem",
    [
        ((48, 52, 30), (1.5, 1.5, 1e6), r"implausible voxel spacing 1\.5 x 1\.5 x 1e\+06 mm"),
        ((48, 52, 30), (8e-4, 8e-4, 2e-3), r"implausible voxel spacing 0\.0008 x 0\.0008 x 0\.002"),
        ((120, 60, 60), (19, 19, 19), r"implausible field of view 1140 x 1140 x 2280 mm"),
    ],
)
def test_a_geometry_no_ct_has_is_refused_before_the_voxels_are_read(
    tmp_path, monkeypatch, shape, spacing, problem
):
    path = write_nifti(
        tmp_path / "ct.nii.gz", np.full(shape, -1000, np.int16), np.diag([*spacing, 1])
    )
    monkeypatch.setattr(np, "asanyarray", _no_reading)
    with pytest.raises(InputError, match=problem):
        read_image(path)


def test_a_non_finite_affine_is_refused(tmp_path, monkeypatch):
    hu, _ = synthetic_case()
    path = write_nifti(tmp_path / "ct.nii", hu)
    header = nib.load(path).header.copy()
    header["srow_z"][2] = np.nan
    path.write_bytes(header.binaryblock + path.read_bytes()[len(header.binaryblock) :])
    monkeypatch.setattr(np, "asanyarray", _no_reading)
    with pytest.raises(InputError, match=r"ct\.nii: the affine .* is not finite and invertible"):
        read_image(path)


def _no_reading(*args):
    raise AssertionError("the voxels were read")


def test_a_header_declaring_more_voxels_than_the_file_holds_is_refused_unread(tmp_path):
    hu, _ = synthetic_case()
    header = nib.Nifti1Image(hu, LPS_AFFINE).header
    header.set_data_shape((4000, 4000, 4000))  # 128 GB of int16: never allocated
    header.set_data_offset(352)
    path = tmp_path / "ct.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + hu.tobytes())
    with pytest.raises(InputError, match=r"truncated NIfTI: its header declares 128,000,000,352"):
        read_image(path)


def test_complex_voxels_are_refused(tmp_path):
    hu, _ = synthetic_case()
    path = write_nifti(tmp_path / "ct.nii.gz", hu.astype(np.complex64))
    with pytest.raises(InputError, match="voxel type complex64 is not a number type"):
        read_image(path)


def test_thick_slices_are_read_with_a_warning(tmp_path):
    hu, _ = synthetic_case(shape=(48, 52, 12))
    thick = LPS_AFFINE @ np.diag([1, 1, 4.8, 1])  # 2.5 mm x 4.8 = 12 mm
    image = read_image(write_nifti(tmp_path / "thick.nii.gz", hu, thick))
    assert thick_slice_warning(image.grid).startswith("slices 12 mm apart (10 mm or more)")
    assert thick_slice_warning(read_image(write_nifti(tmp_path / "ct.nii.gz", hu)).grid) is None


def test_a_dicom_series_of_another_modality_is_refused(tmp_path):
    hu, _ = synthetic_case(shape=(16, 16, 4))
    write_dicom_series(tmp_path / "mr", hu, modality="MR")
    with pytest.raises(InputError, match=r"mr: a DICOM series of modality MR, not CT"):
        read_image(tmp_path / "mr")


@pytest.mark.parametrize("suffix", ITK_SUFFIXES)
def test_nrrd_and_metaimage_keep_an_oblique_geometry_both_ways(tmp_path, suffix):
    hu, labels = synthetic_case(shape=(16, 14, 8))
    volume = write_itk_image(tmp_path / f"ct{suffix}", hu)
    image = read_image(tmp_path / f"ct{suffix}")
    np.testing.assert_array_equal(image.array, hu)
    # SimpleITK's own NIfTI writer converts LPS to RAS: our affine must agree with it.
    sitk.WriteImage(volume, str(tmp_path / "reference.nii.gz"))
    np.testing.assert_allclose(
        image.grid.affine, nib.load(tmp_path / "reference.nii.gz").affine, atol=1e-5
    )
    # A label map written in the single-file form of the format: the input's geometry as
    # SimpleITK reads it (the spacing and cosines to the last bits of a double, which the RAS
    # affine's product of the two rounds), and the grid sparsekits reads back.
    out = write_label_map(
        tmp_path / f"seg{'.nrrd' if 'rrd' in suffix else '.mha'}", labels, image.grid
    )
    written = sitk.ReadImage(str(out))
    assert written.GetOrigin() == volume.GetOrigin()
    for get in ("GetSpacing", "GetDirection"):
        np.testing.assert_allclose(
            getattr(written, get)(), getattr(volume, get)(), rtol=0, atol=1e-12
        )
    assert written.GetPixelID() == sitk.sitkUInt8
    back = read_label_map(out, like=image)
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.grid.affine, image.grid.affine, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("noise.mha", b"not an image at all", "unreadable image file"),
        ("short.nrrd", None, "unreadable image file"),
    ],
)
def test_a_damaged_nrrd_or_metaimage_is_refused_in_one_line(tmp_path, name, content, problem):
    path = tmp_path / name
    if content is None:  # a whole file cut short: its header promises more voxels
        write_itk_image(path, synthetic_case(shape=(16, 14, 8))[0])
        path.write_bytes(path.read_bytes()[:-500])
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as refused:
        read_image(path)
    assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)
