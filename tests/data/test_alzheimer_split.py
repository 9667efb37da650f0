"""The alzheimer task's val split: a fixed class-stratified holdout of train.parquet."""

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from gcfeat.data.alzheimer import AlzheimerSlices, stratified_holdout
from gcfeat.data.errors import DataError
from gcfeat.tasks import get_task

M64 = (1 << 64) - 1


def naive_holdout(labels, fraction, seed):
    """Reference: per class, rows sorted by a pure-Python SplitMix64 of (seed, row)."""

    def key(row):
        z = (row + (((seed << 32) + 1) & M64) * 0x9E3779B97F4A7C15) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    out = []
    for k in sorted(set(labels)):
        rows = [r for r, lb in enumerate(labels) if lb == k]
        n = len(rows)
        take = 0 if n < 2 or fraction == 0 else min(max(int(fraction * n + 0.5), 1), n - 1)
        out += sorted(rows, key=key)[:take]
    return sorted(out)


def read_direct(path):
    """(images uint8 (N, 128, 128), labels) straight from pandas + cv2."""
    df = pd.read_parquet(path)
    images = np.stack(
        [cv2.imdecode(np.frombuffer(c["bytes"], np.uint8), cv2.IMREAD_GRAYSCALE) for c in df["image"]]
    )
    return images, df["label"].to_numpy()


@pytest.fixture(scope="module")
def alz(tmp_path_factory):
    return get_task("alzheimer").write_synthetic(
        tmp_path_factory.mktemp("alz") / "data", n_train=40, n_test=8, seed=3
    )


@pytest.mark.parametrize("seed", [0, 1, 12345, -7])
@pytest.mark.parametrize("fraction", [0.0, 0.15, 0.5, 0.9])
def test_holdout_equals_naive_reference(seed, fraction):
    rng = np.random.default_rng(abs(seed))
    # imbalanced like the real data: a rare class (Moderate), a single-row class, a missing one
    labels = rng.permutation(np.repeat([0, 1, 2, 3, 5], [37, 3, 90, 55, 1]))
    got = stratified_holdout(labels, fraction, seed)
    assert got.dtype == np.int64
    assert got.tolist() == naive_holdout(labels.tolist(), fraction, seed)
    if fraction:
        counts = np.bincount(labels[got], minlength=6)
        full = np.bincount(labels, minlength=6)
        assert np.all(np.abs(counts - fraction * full) <= 1)
        assert counts[5] == 0 and counts[4] == 0 and np.all(counts[:4] >= 1)
        assert np.all(counts[:4] < full[:4])  # every class keeps training rows


def test_holdout_rejects_bad_fraction():
    with pytest.raises(ValueError, match=r"val_fraction 1\.0"):
        stratified_holdout([0, 1], 1.0)
    with pytest.raises(ValueError, match="val_fraction=-0.1"):
        AlzheimerSlices("nowhere", "train", val_fraction=-0.1)


def test_train_val_disjoint_cover_stratified(alz):
    _, labels = read_direct(alz / "train.parquet")
    train, val = AlzheimerSlices(alz, "train"), AlzheimerSlices(alz, "val")
    assert set(train.rows.tolist()).isdisjoint(val.rows.tolist())
    assert sorted(train.rows.tolist() + val.rows.tolist()) == list(range(40))
    assert len(train) + len(val) == 40
    full, counts = np.bincount(labels, minlength=4), np.bincount(val.labels, minlength=4)
    assert np.all(np.abs(counts - 0.15 * full) <= 1) and np.all(counts >= 1)
    assert val.labels.tolist() == labels[val.rows].tolist()
    assert train.labels.tolist() == labels[train.rows].tolist()
    # samples: video = split name, frame_index = the row in train.parquet
    assert [val[i]["frame_index"] for i in range(len(val))] == val.rows.tolist()
    assert {val[i]["video"] for i in range(len(val))} == {"val"}
    assert [train[i]["frame_index"] for i in range(len(train))] == train.rows.tolist()
    test = AlzheimerSlices(alz, "test")
    assert test.rows.tolist() == list(range(8)) and test[3]["video"] == "test"
    assert test.labels.tolist() == read_direct(alz / "test.parquet")[1].tolist()


def test_holdout_is_deterministic_and_seeded(alz):
    a, b = AlzheimerSlices(alz, "val"), AlzheimerSlices(alz, "val")
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.images, b.images)
    other = AlzheimerSlices(alz, "val", seed=1)
    assert other.rows.tolist() != a.rows.tolist()
    assert sorted(np.bincount(other.labels).tolist()) == sorted(np.bincount(a.labels).tolist())
    assert len(AlzheimerSlices(alz, "val", val_fraction=0.5)) == 20


def test_masks_follow_the_rows(alz):
    images, _ = read_direct(alz / "train.parquet")
    with np.load(alz / "train_masks.npz") as z:
        masks = z["masks"]
    for split in ("train", "val"):
        ds = AlzheimerSlices(alz, split)
        np.testing.assert_array_equal(ds.images, images[ds.rows])
        for i in range(len(ds)):
            s = ds[i]
            r = s["frame_index"]
            torch.testing.assert_close(s["image"][0], torch.from_numpy(images[r]).float() / 255)
            assert torch.equal(s["gt_mask"], torch.from_numpy(masks[r] > 0))
            # the planted ventricles are bright: the mask sits on its own image
            assert s["image"][0][s["gt_mask"]].mean() > 0.8


def test_val_parquet_takes_precedence(alz, tmp_path):
    import shutil

    for f in ("train.parquet", "train_masks.npz", "test.parquet", "test_masks.npz"):
        shutil.copy(alz / f, tmp_path / f)
    shutil.copy(alz / "test.parquet", tmp_path / "val.parquet")  # a real val file: 8 rows
    with np.load(alz / "test_masks.npz") as z:
        masks = z["masks"][::-1].copy()  # distinguishable masks
    np.savez_compressed(tmp_path / "val_masks.npz", masks=masks)
    val, train = AlzheimerSlices(tmp_path, "val"), AlzheimerSlices(tmp_path, "train")
    assert val.source.name == "val.parquet" and val.rows.tolist() == list(range(8))
    assert train.rows.tolist() == list(range(40))  # the whole train file
    np.testing.assert_array_equal(val.images, read_direct(tmp_path / "val.parquet")[0])
    np.testing.assert_array_equal(val.masks, masks)
    assert len(AlzheimerSlices(tmp_path, "val", val_fraction=0.5)) == 8  # ignored


def test_no_holdout(alz):
    assert len(AlzheimerSlices(alz, "train", val_fraction=0)) == 40
    with pytest.raises(DataError, match="no val.parquet and val_fraction=0.0"):
        AlzheimerSlices(alz, "val", val_fraction=0)


def test_task_trains_on_val_not_test(alz):
    from gcfeat.tasks import Task

    _val_split = Task.val_split.fget  # was gcfeat.tasks.train._val_split

    task = get_task("alzheimer")
    assert task.splits == ("train", "val", "test") and _val_split(task) == "val"
    assert len(task.build_dataset(alz, "val")) == len(AlzheimerSlices(alz, "val"))


def test_extract_split_all_covers_every_row_once(alz, tmp_path, one_thread):
    from gcfeat.cli.extract import main as extract_main
    from gcfeat.io.features import FeatureFile
    from gcfeat.models.task_checkpoint import save_task_checkpoint

    task = get_task("alzheimer")
    torch.manual_seed(0)
    ck = save_task_checkpoint(tmp_path / "ck.pt", task.build_model("baseline_cnn"), task, "baseline_cnn")
    out = tmp_path / "all.h5"
    assert (
        extract_main(
            [
                "--task",
                "alzheimer",
                "--data",
                str(alz),
                "--checkpoint",
                str(ck),
                "--split",
                "all",
                "--methods",
                "m3",
                "--out",
                str(out),
                "--no-progress",
                "--workers",
                "0",
                "--batch-size",
                "16",
            ]
        )
        == 0
    )
    with FeatureFile(out) as ff:
        assert sorted(ff.videos) == ["test", "train", "val"]
        rows = {v: ff[v].frame_index.tolist() for v in ff.videos}
    assert sorted(rows["train"] + rows["val"]) == list(range(40))  # train.parquet: once each
    assert sorted(rows["test"]) == list(range(8))
    assert sorted(rows["val"]) == AlzheimerSlices(alz, "val").rows.tolist()
