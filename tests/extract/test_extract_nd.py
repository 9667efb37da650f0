"""Extractors beyond 2D ResNets: ROI align in 3D, volumes and small CNNs, single-label class
choice, the MRI tasks through ``python -m gcfeat.extract --task``, and annotated boxes."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from gcfeat.boxes import Boxes
from gcfeat.cam import GradCAM
from gcfeat.cli.extract import main as extract_main
from gcfeat.extract import (
    CropExtractor,
    HeatmapExtractor,
    RoiExtractor,
    box_bounds,
    crop_boxes,
    feature_levels,
    forward_to,
    layer_channels,
    roi_align_nd,
    roi_features,
    selected_classes,
)
from gcfeat.extract.pipeline import auto_layout, extract_dataset
from gcfeat.extract.pooling import channel_group_mean
from gcfeat.io import FeatureFile
from gcfeat.models.small_cnn import build_small_cnn
from gcfeat.models.task_checkpoint import save_task_checkpoint
from gcfeat.tasks import get_task


def random_boxes(n, size, gen, min_side=1.0):
    """``(n, D)`` starts and ends inside a map of ``size`` (tensor order), float."""
    size = torch.tensor(size, dtype=torch.float32)
    a = torch.rand(n, len(size), generator=gen) * (size - min_side)
    b = a + min_side + torch.rand(n, len(size), generator=gen) * (size - a - min_side)
    return a, b


def linear_sample(vol, coord):
    """(Tri/bi)linear value of ``vol (C, *s)`` at pixel coordinate ``coord`` (tensor order),
    clamped to the border: written out corner by corner."""
    D = len(coord)
    c = [min(max(float(coord[d]), 0.0), vol.shape[1 + d] - 1) for d in range(D)]
    lo = [int(math.floor(v)) for v in c]
    out = torch.zeros(vol.shape[0])
    for corner in range(2**D):
        idx, w = [], 1.0
        for d in range(D):
            up = (corner >> d) & 1
            i = min(lo[d] + up, vol.shape[1 + d] - 1)
            frac = c[d] - lo[d]
            w *= frac if up else 1 - frac
            idx.append(i)
        out += w * vol[(slice(None), *idx)]
    return out


def naive_roi_align(fmap, frame, start, end, out_size, n):
    """Per box, per bin, per sample: the rule of roi_align(aligned=True, sampling_ratio=n)."""
    M, C, D = start.shape[0], fmap.shape[1], len(out_size)
    out = torch.zeros(M, C, *out_size)
    for m in range(M):
        bins = [(end[m, d] - start[m, d]) / out_size[d] for d in range(D)]
        for cell in np.ndindex(*out_size):
            acc = torch.zeros(C)
            for s in np.ndindex(*([n] * D)):
                coord = [start[m, d] - 0.5 + cell[d] * bins[d] + (s[d] + 0.5) * bins[d] / n for d in range(D)]
                acc += linear_sample(fmap[frame[m]], coord)
            out[(m, slice(None), *cell)] = acc / n**D
    return out


def test_roi_align_nd_2d_equals_torchvision():
    gen = torch.Generator().manual_seed(0)
    fmap = torch.randn(3, 5, 9, 11, generator=gen)
    start, end = random_boxes(12, (9, 11), gen)
    frame = torch.randint(0, 3, (12,), generator=gen)
    for n, size in ((1, (3, 4)), (2, (2, 2)), (3, (1, 1))):
        ours = roi_align_nd(fmap, frame, start, end, size, n)
        rois = torch.cat([frame.float()[:, None], start[:, [1, 0]], end[:, [1, 0]]], 1)
        ref = roi_align(fmap, rois, size, 1.0, n, aligned=True)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_roi_align_nd_3d_equals_naive_loop():
    gen = torch.Generator().manual_seed(1)
    fmap = torch.randn(2, 3, 5, 6, 7, generator=gen)
    start, end = random_boxes(5, (5, 6, 7), gen)
    frame = torch.tensor([0, 1, 1, 0, 1])
    for n, size in ((2, (1, 2, 2)), (1, (2, 3, 2))):
        ours = roi_align_nd(fmap, frame, start, end, size, n, chunk=2)
        ref = naive_roi_align(fmap, frame, start, end, size, n)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_crop_boxes_3d_is_a_trilinear_resize():
    gen = torch.Generator().manual_seed(2)
    vol = torch.randn(2, 1, 8, 10, 12, generator=gen)
    whole = torch.tensor([[0.0, 0, 0, 8, 10, 12], [0.0, 0, 0, 8, 10, 12]])
    crops = crop_boxes(vol, whole, torch.tensor([1, 0]), (5, 7, 9))
    ref = F.interpolate(vol, size=(5, 7, 9), mode="trilinear", align_corners=False)
    torch.testing.assert_close(crops, ref[[1, 0]], atol=1e-5, rtol=1e-5)
    # an integer sub-box taken at its own size is the sub-volume itself
    box = torch.tensor([[2.0, 3, 4, 6, 8, 10]])
    torch.testing.assert_close(
        crop_boxes(vol, box, torch.tensor([0]), (4, 5, 6))[0], vol[0, :, 2:6, 3:8, 4:10], atol=1e-5, rtol=1e-5
    )


def test_box_bounds_orders():
    s, e = box_bounds(torch.tensor([[1.0, 2, 3, 4]]))
    assert s.tolist() == [[2, 1]] and e.tolist() == [[4, 3]]
    s, e = box_bounds(torch.tensor([[1.0, 2, 3, 4, 5, 6]]))
    assert s.tolist() == [[1, 2, 3]] and e.tolist() == [[4, 5, 6]]
    with pytest.raises(ValueError, match="expected"):
        box_bounds(torch.zeros(1, 5))


def test_roi_features_3d_routes_by_volume_and_pools():
    gen = torch.Generator().manual_seed(3)
    size = (16, 16, 16)
    maps = {
        "layer2": torch.randn(2, 8, 8, 8, 8, generator=gen),
        "layer3": torch.randn(2, 16, 4, 4, 4, generator=gen),
        "layer4": torch.randn(2, 32, 2, 2, 2, generator=gen),
    }
    # volume fractions 1/64 (-> layer2), 1/8 (-> layer3), 1/1 (-> layer4)
    xyxy = torch.tensor([[0.0, 0, 0, 4, 4, 4], [8, 8, 8, 16, 16, 16], [0, 0, 0, 16, 16, 16]])
    frame = torch.tensor([0, 1, 1])
    layout = (8, 2, 2)
    out = roi_features(maps, xyxy, frame, size, layout=layout)
    for i, name in enumerate(maps):
        fmap = maps[name]
        scale = torch.tensor([fmap.shape[2] / 16.0] * 3)
        region = naive_roi_align(
            fmap, frame[i : i + 1], xyxy[i : i + 1, :3] * scale, xyxy[i : i + 1, 3:] * scale, (1, 2, 2), 2
        )[:, :, 0]
        ref = channel_group_mean(region, 8).flatten(1)
        torch.testing.assert_close(out[i : i + 1], ref, atol=1e-5, rtol=1e-5)


def test_feature_levels_and_auto_layout():
    cnn = build_small_cnn("baseline_cnn_convadd")
    levels = feature_levels(cnn)
    assert list(levels) == ["last_conv"] and levels["last_conv"] is cnn.conv3
    assert layer_channels(cnn) == {"last_conv": 128}
    slim = get_task("organ3d").build_model("resnet3d_18_slim")
    assert layer_channels(slim) == {"layer2": 32, "layer3": 64, "layer4": 128}
    assert auto_layout({"layer2": 512, "layer3": 1024, "layer4": 2048}) == (512, 1, 1)
    assert auto_layout({"layer2": 128, "layer3": 256, "layer4": 512}) == (32, 4, 4)
    assert auto_layout({"a": 24, "b": 48}) == (8, 4, 4)
    with pytest.raises(ValueError, match="no feature levels"):
        feature_levels(torch.nn.Linear(2, 2))


def test_forward_to_stops_and_matches_a_hook():
    torch.manual_seed(0)
    cnn = build_small_cnn("baseline_cnn", input_size=32).eval()
    x = torch.randn(3, 1, 32, 32)
    seen = []
    h = cnn.conv2.register_forward_hook(lambda m, i, o: seen.append(o))
    cnn(x)
    h.remove()
    called = []
    h = cnn.fc1.register_forward_hook(lambda *a: called.append(1))
    out = forward_to(cnn, x, cnn.conv2)
    h.remove()
    torch.testing.assert_close(out, seen[0])
    assert not called  # the head never ran


def test_selected_classes_top1_and_threshold():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    frame, k = selected_classes(probs, torch.arange(3), "top1")
    assert frame.tolist() == [0, 1] and k.tolist() == [1, 0]
    frame, k = selected_classes(probs, torch.arange(3), "threshold", 0.4)
    assert frame.tolist() == [0, 1] and k.tolist() == [1, 0]
    frame, k = selected_classes(probs, torch.tensor([2, 0]), "top1")  # among the heat classes
    assert k.tolist() == [0, 1]
    with pytest.raises(ValueError, match="selection"):
        selected_classes(probs, torch.arange(3), "best")


def test_small_cnn_extractors_equal_naive(one_thread):
    """M1 / M2 / M3 on the Alzheimer CNN (one level: its last conv; softmax top-1)."""
    torch.manual_seed(0)
    cnn = build_small_cnn("baseline_cnn", input_size=48).eval()
    x = torch.rand(3, 1, 48, 48)
    res = GradCAM(cnn, [cnn.last_conv]).explain(x)
    probs = res.logits.softmax(1)
    boxes = Boxes(
        torch.tensor([[0.0, 0, 20, 30], [10, 5, 48, 48], [3, 3, 13, 9]]),
        torch.tensor([0, 0, 2]),
        torch.tensor([1, 3, 0]),
        torch.ones(3),
    )
    layout = (8, 2, 2)
    m1 = CropExtractor(cnn, (24, 24), layout)(x, res, boxes, probs)
    m2 = RoiExtractor(layout=layout, levels=["last_conv"])(x, res, boxes, probs)
    m3 = HeatmapExtractor(0.3, "heat", layout=layout, level="last_conv", selection="top1")(
        x, res, boxes, probs
    )
    fmap = res.activations[0]
    # m1: the crops (crop_boxes: checked against cv2 in test_extract) through the conv layers
    # by hand (the flatten head could not take 24x24 crops: m1 must stop before it), pooled
    crops = crop_boxes(x, boxes.xyxy, boxes.frame, (24, 24))
    with torch.no_grad():
        conv = cnn.conv2(cnn.bn1(cnn.pool(cnn.relu(cnn.conv1(crops)))))
    pooled = channel_group_mean(F.adaptive_avg_pool2d(conv, (2, 2)), 8).flatten(1)
    torch.testing.assert_close(m1.features, pooled, atol=1e-5, rtol=1e-5)
    # m2 with torchvision's adaptive sampling: checked per box against roi_align itself
    for i in range(3):
        x1, y1, x2, y2 = boxes.xyxy[i].tolist()
        s = [fmap.shape[3] / 48.0, fmap.shape[2] / 48.0]
        roi = torch.tensor([[float(boxes.frame[i]), x1 * s[0], y1 * s[1], x2 * s[0], y2 * s[1]]])
        ref = channel_group_mean(roi_align(fmap, roi, (2, 2), 1.0, -1, True), 8).flatten(1)
        torch.testing.assert_close(m2.features[i : i + 1], ref, atol=1e-5, rtol=1e-5)
    # m3: one row per image, its top class, heat-weighted mean per 2x2 cell
    assert m3.frame.tolist() == [0, 1, 2]
    assert m3.label.tolist() == probs.argmax(1).tolist()
    for r in range(3):
        k = int(m3.label[r])
        heat = res.layer_heatmaps[0][r, k]
        w = heat * (heat > 0.3)
        A = fmap[r]
        ref = torch.zeros(A.shape[0], 2, 2)
        hs, ws = A.shape[1:]
        for ci in range(2):
            for cj in range(2):
                ys = slice(ci * hs // 2, -(-(ci + 1) * hs // 2))
                xs = slice(cj * ws // 2, -(-(cj + 1) * ws // 2))
                ww = w[ys, xs]
                if ww.sum() > 0:
                    ref[:, ci, cj] = (A[:, ys, xs] * ww).sum((1, 2)) / ww.sum()
        ref = channel_group_mean(ref[None], 8).flatten(1)
        torch.testing.assert_close(m3.features[r : r + 1], ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m3.score[r], probs[r, k])


@pytest.fixture(scope="module")
def organ3d(tmp_path_factory):
    d = tmp_path_factory.mktemp("organ3d")
    task = get_task("organ3d")
    task.write_synthetic(d / "data", n_train=4, n_val=2, n_test=5, seed=0)
    torch.manual_seed(0)
    model = task.build_model("resnet3d_18_slim")
    ck = save_task_checkpoint(d / "ck.pt", model, task, "resnet3d_18_slim")
    return d, ck


def test_extract_cli_organ3d_volumes(organ3d, one_thread):
    d, ck = organ3d
    out = d / "feats.h5"

    def cli(out, *extra):
        return extract_main(
            [
                "--task",
                "organ3d",
                "--data",
                str(d / "data"),
                "--checkpoint",
                str(ck),
                "--split",
                "test",
                "--methods",
                "m1",
                "m2",
                "m3",
                "--out",
                str(out),
                "--threshold",
                "0.5",
                "--min-area",
                "8",
                "--no-progress",
                "--workers",
                "0",
                "--batch-size",
                "2",
                *extra,
            ]
        )

    assert cli(out, "--crop-size", "16x16x16") == 0
    task = get_task("organ3d")
    model, _ = task.load_checkpoint(ck)
    ds = task.build_dataset(d / "data", "test")
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    with FeatureFile(out) as ff:
        assert ff.attrs["task"] == "organ3d" and ff.attrs["spatial_dims"] == 3
        assert ff.attrs["activation"] == "softmax"
        v = ff["test"]
        assert v.frame_index.tolist() == list(range(len(ds)))
        res = GradCAM(model, [model.layer4]).explain(x, extra_layers=(model.layer2, model.layer3))
        probs = res.logits.softmax(1)
        np.testing.assert_allclose(v.class_prob, probs.numpy(), atol=1e-5)
        m3 = v.rows("m3")  # one row per volume: its top class
        assert m3["frame"].tolist() == list(range(len(ds)))
        assert m3["label"].tolist() == probs.argmax(1).tolist()
        m2 = v.rows("m2")
        assert m2["box"].shape[1] == 6 and len(m2["label"]) > 0
        assert set(m2["label"].tolist()) <= set(probs.argmax(1).tolist())
        maps = {"layer2": res.extra[0], "layer3": res.extra[1], "layer4": res.activations[0]}
        ref = roi_features(
            maps, torch.from_numpy(m2["box"]), torch.from_numpy(m2["frame"]), (28, 28, 28), layout=(32, 4, 4)
        )
        np.testing.assert_allclose(m2["features"], ref.numpy(), atol=1e-4)
        np.testing.assert_array_equal(v.rows("m1")["box"], m2["box"])
        df = ff.to_dataframe("m2")
        assert list(df.columns[5:11]) == ["z1", "y1", "x1", "z2", "y2", "x2"]
    # a rerun resumes: nothing new, same file
    assert cli(out, "--crop-size", "16x16x16") == 0
    with FeatureFile(out) as ff:
        assert len(ff["test"]) == len(ds)
    assert cli(out) == 2  # another crop size: refuses to append
    # annotated boxes are a surgical option; a 2D crop size for volumes is refused
    assert cli(d / "x.h5", "--boxes", "gt") == 2
    assert cli(d / "y.h5", "--crop-size", "16x16") == 2
    assert not (d / "x.h5").exists() and not (d / "y.h5").exists()


def test_extract_gt_boxes(tmp_path, one_thread):
    from helpers import make_tiny_surgical

    from gcfeat.data import build_dataset
    from gcfeat.models import load_checkpoint

    make_tiny_surgical(tmp_path, frames=3, seed=4, model_seed=0)
    model, info = load_checkpoint(tmp_path / "ck.pt")
    ds = build_dataset(
        tmp_path / "data", split="all", size=(64, 80), mean=info.mean, std=info.std, with_gt=True
    )
    stats = extract_dataset(
        ds,
        model,
        info,
        ("m1", "m2", "m3"),
        out=str(tmp_path / "g.h5"),
        batch_size=4,
        num_workers=0,
        progress=False,
        layout=(32, 4, 4),
        crop_size=(32, 32),
        boxes="gt",
    )
    assert stats["frames"] == len(ds)
    with FeatureFile(tmp_path / "g.h5") as ff:
        assert ff.attrs["boxes"] == "gt"
        n = 0
        for i in range(len(ds)):
            s = ds[i]
            v = ff[s["video"]]
            row = v.frame_index.tolist().index(s["frame_index"])
            for m in ("m1", "m2"):
                r = v.rows(m)
                sel = r["frame"] == row
                np.testing.assert_allclose(r["box"][sel], s["gt_boxes"].numpy())
                assert r["label"][sel].tolist() == s["gt_labels"].tolist()
                assert np.all(r["score"][sel] == 1)
            n += len(s["gt_labels"])
        assert stats["rows"]["m1"] == n > 0


def test_interaction_export_refuses_volumes(organ3d, tmp_path, one_thread, capsys):
    from gcfeat.cli.export import main as export_main

    d, ck = organ3d
    out = tmp_path / "v.h5"
    assert (
        extract_main(
            [
                "--task",
                "organ3d",
                "--data",
                str(d / "data"),
                "--checkpoint",
                str(ck),
                "--split",
                "val",
                "--methods",
                "m2",
                "--out",
                str(out),
                "--no-progress",
                "--workers",
                "0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        export_main(["interaction", str(out), "--data", str(d / "data"), "--out", str(tmp_path / "i")]) == 2
    )
    assert re.search("3D boxes .* 2D frames only", capsys.readouterr().err)


@pytest.mark.parametrize("opt", [["--threshold", "1.5"], ["--pred-threshold", "-0.1"], ["--min-area", "-1"]])
def test_extract_bad_settings_leave_no_file(organ3d, tmp_path, opt, capsys):
    d, ck = organ3d
    out = tmp_path / "bad.h5"
    assert (
        extract_main(
            [
                "--task",
                "organ3d",
                "--data",
                str(d / "data"),
                "--checkpoint",
                str(ck),
                "--out",
                str(out),
                "--no-progress",
                "--workers",
                "0",
                *opt,
            ]
        )
        == 2
    )
    assert "expected" in capsys.readouterr().err
    assert not out.exists()
