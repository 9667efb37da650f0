"""CAM volume exports: NIfTI (affine kept), MetaImage round trips, HTML view, PNG figures."""

import base64
import re

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch

from gcfeat.data.medical import (
    MedicalIOError,
    load_nifti,
    nifti_to_mha_geometry,
    read_mha,
    save_mha_like_nifti,
    save_nifti,
    write_mha,
)
from gcfeat.viz.montage import batch_grid, overlay, plot_curve, plot_curves, slice_montage
from gcfeat.viz.volume import write_volume_html

AFFINE = np.array(
    [[0.0, -0.7, 0.1, 12.5], [0.5, 0.0, 0.0, -40.0], [0.0, 0.2, 3.0, 7.25], [0.0, 0.0, 0.0, 1.0]]
)


def test_nifti_cam_reopens_with_same_affine_and_values(tmp_path):
    heat = torch.rand(7, 6, 5)
    path = save_nifti(tmp_path / "cam.nii.gz", heat, AFFINE)
    arr, aff = load_nifti(path)
    np.testing.assert_array_equal(arr, heat.numpy())
    np.testing.assert_allclose(aff, AFFINE, atol=1e-6)
    img = nib.load(str(path))  # also as nibabel sees it: sform and qform codes set
    assert int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(img.get_sform(), AFFINE, atol=1e-6)
    with pytest.raises(MedicalIOError, match="affine"):
        save_nifti(tmp_path / "x.nii.gz", heat, np.eye(3))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int16, np.float64])
def test_mha_round_trip(tmp_path, dtype):
    vol = (np.random.default_rng(0).random((4, 5, 6)) * 100).astype(dtype)
    path = write_mha(tmp_path / "v.mha", vol, spacing=(0.5, 0.6, 3.0), origin=(1, 2, 3))
    back, meta = read_mha(path)
    assert back.dtype == vol.dtype and back.shape == (4, 5, 6)
    np.testing.assert_array_equal(back, vol)
    np.testing.assert_allclose(meta["spacing"], [0.5, 0.6, 3.0])
    np.testing.assert_allclose(meta["origin"], [1, 2, 3])
    header = path.read_bytes()[:400].decode("ascii", "replace")
    assert "DimSize = 6 5 4" in header and "ElementDataFile = LOCAL" in header


def test_mha_raw_layout_is_x_fastest(tmp_path):
    vol = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)  # (z, y, x)
    path = write_mha(tmp_path / "o.mha", vol)
    raw = path.read_bytes()
    assert raw[-24:] == bytes(range(24))  # C order of (z, y, x) == x fastest


def test_mha_like_nifti_geometry(tmp_path):
    vol = np.random.default_rng(1).random((5, 4, 3)).astype(np.float32)  # nibabel (i, j, k)
    path = save_mha_like_nifti(tmp_path / "c.mha", vol, AFFINE)
    back, meta = read_mha(path)
    np.testing.assert_array_equal(back, vol.transpose(2, 1, 0))
    spacing, origin, direction = nifti_to_mha_geometry(AFFINE)
    np.testing.assert_allclose(meta["spacing"], spacing, rtol=1e-6)
    np.testing.assert_allclose(meta["direction"], direction, atol=1e-6)
    # world (LPS) position of voxel index (i, j, k) equals the NIfTI's RAS position flipped
    ijk = np.array([2.0, 1.0, 2.0])
    lps = meta["origin"] + meta["direction"] @ (meta["spacing"] * ijk)
    ras = AFFINE[:3, :3] @ ijk + AFFINE[:3, 3]
    np.testing.assert_allclose(lps, ras * [-1, -1, 1], atol=1e-5)


def test_mha_errors(tmp_path):
    path = write_mha(tmp_path / "t.mha", np.zeros((3, 3, 3), np.float32))
    (tmp_path / "cut.mha").write_bytes(path.read_bytes()[:-10])
    with pytest.raises(MedicalIOError, match="truncated"):
        read_mha(tmp_path / "cut.mha")
    (tmp_path / "txt.mha").write_bytes(b"hello world\n")
    with pytest.raises(MedicalIOError, match="Key = Value"):
        read_mha(tmp_path / "txt.mha")


def _data_pngs(page: str):
    return re.findall(r'"([A-Za-z0-9+/=]{40,})"', page)


def test_volume_html_is_self_contained_and_cam_only_on_foreground(tmp_path):
    vol = np.zeros((6, 8, 8), np.float32)
    vol[:, 2:6, 2:6] = 1.0  # foreground block
    heat = np.ones_like(vol)
    path = write_volume_html(tmp_path / "v.html", vol, heat, title="t<1>", upscale=1)
    page = path.read_text()
    assert "<script src" not in page and "<link" not in page and "http" not in page
    assert "t&lt;1&gt;" in page
    pngs = _data_pngs(page)
    assert len(pngs) == 2 * (6 + 8 + 8)  # grey + CAM per slice, three views
    # axial view: 6 grey slices, then 6 CAM layers; a CAM layer is opaque on foreground only
    cam = cv2.imdecode(np.frombuffer(base64.b64decode(pngs[6]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert cam.shape == (8, 8, 4)
    alpha = cam[..., 3] > 0
    expect = np.zeros((8, 8), bool)
    expect[2:6, 2:6] = True
    assert np.array_equal(alpha, expect)
    with pytest.raises(ValueError, match="heat"):
        write_volume_html(tmp_path / "x.html", vol, heat[:3])


def test_png_figures(tmp_path):
    img = np.linspace(0, 1, 64).reshape(8, 8)
    heat = np.zeros((8, 8))
    ov = overlay(img, heat, alpha=0.5, foreground=np.zeros((8, 8), bool))
    np.testing.assert_array_equal(ov[..., 0], np.round(img * 255).astype(np.uint8))
    vol, hv = np.random.rand(5, 8, 8), np.random.rand(5, 8, 8)
    for p in (
        slice_montage(vol, hv, tmp_path / "m.png", cols=3, title="x"),
        batch_grid(vol, hv, [f"pred {i} / true {i}" for i in range(5)], tmp_path / "g.png"),
        plot_curve(np.linspace(0, 1, 11), np.linspace(1, 0, 11), tmp_path / "c.png"),
        plot_curves(
            np.linspace(0, 1, 11), {"a": np.random.rand(3, 11)}, tmp_path / "cs.png", kind="insertion"
        ),
    ):
        im = cv2.imread(str(p))
        assert im is not None and im.shape[0] > 50


def test_batch_grid_outlines_masks(tmp_path):
    """The ground-truth outline is drawn in white on panels whose mask is not empty only."""
    rng = np.random.default_rng(0)
    img, heat = np.zeros((2, 32, 32)), rng.random((2, 32, 32)) * 0.2  # dark, blue-ish panels
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 8:24, 8:24] = True
    plain = cv2.imread(str(batch_grid(img, heat, ["a", "b"], tmp_path / "p.png")))
    drawn = cv2.imread(str(batch_grid(img, heat, ["a", "b"], tmp_path / "d.png", masks=masks)))
    assert plain.shape == drawn.shape
    white = lambda im: im.min(-1) > 200  # noqa: E731
    h, w = drawn.shape[:2]
    left, right = (slice(0, w // 2), slice(w // 2, w))
    body = slice(h // 5, h)  # below the titles
    assert white(drawn[body, left]).sum() > white(plain[body, left]).sum() + 20
    assert white(drawn[body, right]).sum() == white(plain[body, right]).sum()
