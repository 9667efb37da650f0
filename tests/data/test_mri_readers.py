"""Readers of the three MRI tasks on files written in the real formats, and broken files."""

import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from gcfeat.data.alzheimer import AlzheimerSlices, decode_image, read_alzheimer_parquet
from gcfeat.data.errors import DataError
from gcfeat.data.medical import MedicalIOError, load_nifti
from gcfeat.data.medmnist import ORGAN3D_CLASSES, MedMNIST3D, load_medmnist_npz
from gcfeat.data.mri_synthetic import ORGAN3D_LAYOUT, write_alzheimer, write_organ3d, write_prostate
from gcfeat.data.prostate import (
    ProstateSlices,
    case_slices,
    gland_bbox,
    load_case,
    read_labels,
    scale_intensity_range_percentiles,
)


# ------------------------------------------------------------------------------ percentiles
def test_percentile_scaling_matches_hand_computation():
    img = np.arange(11, dtype=np.float32) * 10  # 0, 10, ..., 100
    # 10th / 90th percentiles of 0..100 in steps of 10 are exactly 10 and 90.
    out = scale_intensity_range_percentiles(img, 10, 90, b_min=0, b_max=1, clip=False)
    np.testing.assert_allclose(out, (img - 10) / 80, rtol=1e-6)
    out = scale_intensity_range_percentiles(img, 10, 90, b_min=-1, b_max=1, clip=True)
    expect = np.clip((img - 10) / 80 * 2 - 1, -1, 1)
    np.testing.assert_allclose(out, expect, rtol=1e-6)
    # relative: targets move to b_min + (b_max - b_min) * p / 100 -> 0.1 .. 0.9
    out = scale_intensity_range_percentiles(img, 10, 90, b_min=0, b_max=1, clip=False, relative=True)
    np.testing.assert_allclose(out, (img - 10) / 80 * 0.8 + 0.1, rtol=1e-6)
    # linear interpolation between order statistics: 25th of [0, 4] at 4 values -> 1.0
    out = scale_intensity_range_percentiles(
        np.array([0.0, 4.0, 8.0, 12.0]), 25, 75, b_min=0, b_max=1, clip=False
    )
    np.testing.assert_allclose(out, (np.array([0, 4, 8, 12]) - 3) / 6, rtol=1e-6)
    # constant image: shifted only (MONAI behaviour), tensors stay tensors
    t = scale_intensity_range_percentiles(torch.full((3, 3), 5.0), 1, 99, b_min=0.5, b_max=1)
    assert torch.is_tensor(t) and torch.allclose(t, torch.full((3, 3), 0.5))
    with pytest.raises(ValueError, match="percentiles"):
        scale_intensity_range_percentiles(img, 90, 10)


# ---------------------------------------------------------------------------------- prostate
@pytest.fixture(scope="module")
def prostate_root(tmp_path_factory):
    return write_prostate(tmp_path_factory.mktemp("picai"), n_cases=6, shape=(48, 40, 10), seed=3)


def test_prostate_nifti_keeps_non_identity_affine(prostate_root):
    rows = read_labels(prostate_root)
    assert {r["split"] for r in rows} <= {"train", "val", "test"} and len(rows) == 6
    case = load_case(prostate_root, rows[0]["case_id"], rows[0]["label"])
    assert case.t2w.shape == (48, 40, 10)
    assert not np.allclose(case.affine, np.eye(4))
    assert np.allclose(np.linalg.norm(case.affine[:3, :3], axis=0), [0.5, 0.5, 3.0])
    img = nib.load(str(prostate_root / rows[0]["case_id"] / f"{rows[0]['case_id']}_t2w.nii.gz"))
    np.testing.assert_allclose(img.affine, case.affine)


def test_prostate_slices_pipeline(prostate_root):
    rows = read_labels(prostate_root)
    pos = next(r for r in rows if r["label"] == 1)
    case = load_case(prostate_root, pos["case_id"], 1)
    s = case_slices(case, size=32)
    x1, y1, z1, x2, y2, z2 = gland_bbox(case.gland)
    assert s["image"].shape == (z2 - z1, 3, 32, 32)
    # channel 0 is the gland mask, 1 ADC, 2 T2W, each scaled into [0, 1]
    assert set(torch.unique(s["image"][:, 0]).tolist()) <= {0.0, 1.0}
    assert s["image"].min() >= 0 and s["image"].max() <= 1
    expect = torch.tensor([bool(case.lesion[:, :, z].any()) for z in range(z1, z2)]).long()
    assert torch.equal(s["label"], expect) and s["label"].sum() > 0
    # the lesion is dark in ADC: mean ADC inside the lesion is below that of the gland
    lesion_adc = s["image"][:, 1][s["lesion"]].mean()
    gland_adc = s["image"][:, 1][s["image"][:, 0] > 0].mean()
    assert lesion_adc < gland_adc
    neg = next(r for r in rows if r["label"] == 0)
    assert case_slices(load_case(prostate_root, neg["case_id"], 0), size=32)["label"].sum() == 0


def test_prostate_dataset_balance(prostate_root):
    full = ProstateSlices(prostate_root, "train", size=32)
    bal = ProstateSlices(prostate_root, "train", size=32, balance=True, seed=0)
    n_pos = int(full.labels.sum())
    assert 0 < n_pos < len(full)
    labels = torch.stack([bal[i]["label"] for i in range(len(bal))])
    assert len(bal) == 2 * min(n_pos, len(full) - n_pos) and int(labels.sum()) == n_pos
    again = ProstateSlices(prostate_root, "train", size=32, balance=True, seed=0)
    assert np.array_equal(bal.index, again.index)
    item = full[0]
    assert item["image"].shape == (3, 32, 32) and item["gt_mask"].shape == (32, 32)
    assert item["labels"].shape == (2,) and item["video"].startswith("case_")


def test_prostate_truncated_nifti_is_rejected(prostate_root, tmp_path):
    cid = read_labels(prostate_root)[0]["case_id"]
    src = prostate_root / cid / f"{cid}_adc.nii.gz"
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])
    with pytest.raises(MedicalIOError, match="bad.nii.gz"):
        load_nifti(bad)
    # uncompressed and cut inside the voxel data
    raw = gzip.decompress(src.read_bytes())
    bad2 = tmp_path / "bad2.nii"
    bad2.write_bytes(raw[: 352 + 100])
    with pytest.raises(MedicalIOError, match="truncated"):
        load_nifti(bad2)
    with pytest.raises(MedicalIOError, match="does not exist"):
        load_nifti(tmp_path / "missing.nii.gz")


def test_prostate_labels_csv_errors(tmp_path):
    with pytest.raises(DataError, match="labels.csv"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("case,label\nx,1\n")
    with pytest.raises(DataError, match="missing columns"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("case_id,label,split\nx,3,train\n")
    with pytest.raises(DataError, match="line 2"):
        read_labels(tmp_path)


# ----------------------------------------------------------------------------------- organ3d
@pytest.fixture(scope="module")
def organ_npz(tmp_path_factory):
    return write_organ3d(tmp_path_factory.mktemp("organ"), n_train=22, n_val=11, n_test=11, seed=1)


def test_medmnist_npz_real_keys_and_shapes(organ_npz):
    with np.load(organ_npz) as npz:
        assert set(npz.files) == {f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels")}
        assert npz["train_images"].dtype == np.uint8
        assert npz["train_images"].shape == (22, 28, 28, 28)
        assert npz["train_labels"].shape == (22, 1)
    images, labels = load_medmnist_npz(organ_npz, "val", 11)
    assert images.shape == (11, 28, 28, 28) and labels.dtype == np.int64
    assert sorted(labels.tolist()) == list(range(11))


def test_medmnist_dataset_and_planted_organ(organ_npz):
    ds = MedMNIST3D(organ_npz, "train")
    assert ds.classes == ORGAN3D_CLASSES and len(ds) == 22
    s = ds[0]
    assert s["image"].shape == (1, 28, 28, 28) and s["image"].dtype == torch.float32
    assert 0 <= s["image"].min() and s["image"].max() <= 1
    # the organ (GT mask) is the bright structure and sits near its class-specific centre
    m = s["gt_mask"]
    assert s["image"][0][m].mean() > 0.6 > s["image"][0][~m].mean()
    centre = torch.stack(torch.nonzero(m, as_tuple=True)).float().mean(1) / 28
    expect = torch.tensor(ORGAN3D_LAYOUT[int(s["label"])][0])
    assert torch.allclose(centre, expect, atol=0.12)
    assert MedMNIST3D(organ_npz, "test", masks=None).masks is None


def test_medmnist_rejects_broken_npz(tmp_path):
    np.savez(tmp_path / "nokeys.npz", images=np.zeros((2, 28, 28, 28), np.uint8))
    with pytest.raises(DataError, match="missing keys"):
        load_medmnist_npz(tmp_path / "nokeys.npz", "train")
    good = {f"{s}_images": np.zeros((2, 28, 28, 28), np.uint8) for s in ("train", "val", "test")}
    good.update({f"{s}_labels": np.zeros((2, 1), np.uint8) for s in ("train", "val", "test")})
    np.savez(tmp_path / "shape.npz", **{**good, "train_images": np.zeros((2, 28, 28), np.uint8)})
    with pytest.raises(DataError, match=r"train_images has shape \(2, 28, 28\)"):
        load_medmnist_npz(tmp_path / "shape.npz", "train")
    np.savez(tmp_path / "lab.npz", **{**good, "val_labels": np.full((2, 1), 12)})
    with pytest.raises(DataError, match="expected 0..10"):
        load_medmnist_npz(tmp_path / "lab.npz", "val", 11)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_medmnist_npz(tmp_path / "junk.npz", "train")
    np.savez(
        tmp_path / "ok64.npz",
        **{**good, **{f"{s}_images": np.zeros((2, 64, 64, 64), np.uint8) for s in ("train", "val", "test")}},
    )
    assert load_medmnist_npz(tmp_path / "ok64.npz", "test")[0].shape == (2, 64, 64, 64)


# --------------------------------------------------------------------------------- alzheimer
@pytest.fixture(scope="module")
def alz_root(tmp_path_factory):
    return write_alzheimer(tmp_path_factory.mktemp("alz"), n_train=8, n_test=4, seed=2)


def test_alzheimer_parquet_struct_format(alz_root):
    import pyarrow.parquet as pq

    schema = pq.read_schema(alz_root / "train.parquet")
    assert str(schema.field("label").type) == "int64"
    image_type = schema.field("image").type
    assert image_type.num_fields == 2 and image_type.field("bytes").type == "binary"
    df = pd.read_parquet(alz_root / "train.parquet")
    assert df["image"][0]["bytes"][:2] == b"\xff\xd8"  # a JPEG
    images, labels = read_alzheimer_parquet(alz_root / "train.parquet")
    assert images.shape == (8, 128, 128) and images.dtype == np.uint8
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_alzheimer_dataset_and_planted_ventricles(alz_root):
    ds = AlzheimerSlices(alz_root, "train")
    s = ds[0]
    assert s["image"].shape == (1, 128, 128) and s["gt_mask"].shape == (128, 128)
    # ventricles are bright (T2-like); larger for more severe classes (Moderate > Non)
    assert s["image"][0][s["gt_mask"]].mean() > 0.8
    area = {int(ds[i]["label"]): int(ds[i]["gt_mask"].sum()) for i in range(len(ds))}
    assert area[1] > area[0] > area[3] > area[2]


def test_alzheimer_rejects_undecodable_bytes(alz_root, tmp_path):
    df = pd.read_parquet(alz_root / "test.parquet")
    df.at[2, "image"] = {"bytes": b"\x00\x01garbage", "path": "x.jpg"}
    df.to_parquet(tmp_path / "test.parquet")
    with pytest.raises(DataError, match="row 2: cannot decode"):
        read_alzheimer_parquet(tmp_path / "test.parquet")
    pd.DataFrame({"img": [1], "label": [0]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(DataError, match="missing columns"):
        read_alzheimer_parquet(tmp_path / "cols.parquet")
    with pytest.raises(DataError, match="bytes"):
        decode_image(b"", where="here")
