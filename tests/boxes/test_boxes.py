"""heatmap_to_boxes, Boxes and box ops: exact boxes on hand-built blobs, and the batched fast
path against a plain per-map reference loop."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.measure import label as sk_label
from skimage.measure import regionprops

import gcfeat.boxes.threshold as thr
from gcfeat.boxes import (
    BOX_MODES,
    Boxes,
    HeatmapError,
    box_area,
    box_iou,
    box_mean,
    box_union,
    heatmap_to_boxes,
    pairwise_box_iou,
    points_in_boxes,
)


def boxes_of(b: Boxes):
    return [tuple(int(v) for v in row) for row in b.xyxy.tolist()]


@pytest.fixture(params=["fast", "device_path"])
def path(request, monkeypatch):
    """Run each test through the CPU chunk path and through the generic (device) path."""
    monkeypatch.setattr(thr, "_CPU_FAST_2D", request.param == "fast")
    return request.param


# ---------------------------------------------------------------------------------------------
# exact boxes on known blobs


def two_blob_map():
    heat = torch.zeros(1, 1, 20, 30)
    heat[0, 0, 2:6, 3:10] = 0.6  # 7 x 4 = 28 px box
    heat[0, 0, 10:18, 15:26] = 0.8  # 11 x 8 = 88 px box
    heat[0, 0, 12, 17] = 1.0
    return heat


@pytest.mark.parametrize("mode", BOX_MODES)
def test_known_blobs_every_mode(mode, path):
    heat = two_blob_map()
    b = heatmap_to_boxes(heat, 0.3, mode=mode)
    small, big = (3, 2, 10, 6), (15, 10, 26, 18)
    expected = {"components": [small, big], "largest": [big], "union": [(3, 2, 26, 18)]}[mode]
    assert boxes_of(b) == expected
    assert b.frame.tolist() == [0] * len(expected) and b.label.tolist() == [0] * len(expected)
    # score: mean heat over the whole box (on and off pixels)
    for (x1, y1, x2, y2), s in zip(expected, b.score.tolist()):
        assert s == pytest.approx(float(heat[0, 0, y1:y2, x1:x2].mean()), abs=1e-6)
    assert b.xyxy.dtype == torch.float32 and b.frame.dtype == torch.int64
    assert b.label.dtype == torch.int64 and b.score.dtype == torch.float32


def test_diagonal_neighbours_join_8_connectivity(path):
    heat = torch.zeros(1, 1, 16, 16)
    heat[0, 0, 2:7, 2:7] = 1
    heat[0, 0, 7:12, 7:12] = 1  # touches the first square only at a corner
    heat[0, 0, 2:7, 13:16] = 1  # separated by a zero gap: its own blob
    heat[0, 0, 8:14, 13:16] = 1  # touching it edge to edge below? no: row 7 is empty
    b = heatmap_to_boxes(heat, 0.5, min_area=0)
    assert boxes_of(b) == [(2, 2, 12, 12), (13, 2, 16, 7), (13, 8, 16, 14)]


def test_touching_blobs_merge(path):
    heat = torch.zeros(1, 1, 10, 20)
    heat[0, 0, 2:6, 2:8] = 0.5
    heat[0, 0, 4:9, 8:15] = 0.9  # shares an edge with the first
    b = heatmap_to_boxes(heat, 0.4, min_area=0)
    assert boxes_of(b) == [(2, 2, 15, 9)]
    b = heatmap_to_boxes(heat, 0.6, min_area=0)  # only the second one is above 0.6
    assert boxes_of(b) == [(8, 4, 15, 9)]


def test_blobs_on_frame_edges_exclusive_end(path):
    H, W = 12, 17
    heat = torch.zeros(1, 2, H, W)
    heat[0, 0, H - 3 :, W - 4 :] = 1  # bottom-right corner
    heat[0, 0, 0:2, 0:3] = 1  # top-left corner
    heat[0, 1, :, :] = 0.7  # the whole frame
    b = heatmap_to_boxes(heat, 0.5, min_area=0)
    assert boxes_of(b) == [(0, 0, 3, 2), (W - 4, H - 3, W, H), (0, 0, W, H)]
    assert b.label.tolist() == [0, 0, 1]
    assert b.score[-1].item() == pytest.approx(0.7)


def test_blobs_never_cross_between_stacked_maps(path):
    # bottom rows of one map and top rows of the next (next class, next frame) must stay apart
    heat = torch.zeros(2, 2, 8, 10)
    heat[0, 0, 6:, 2:9] = 1
    heat[0, 1, :2, 2:9] = 1
    heat[1, 0, 6:, 2:9] = 1
    heat[1, 1, :, 9:] = 1
    b = heatmap_to_boxes(heat, 0.5, min_area=0)
    assert boxes_of(b) == [(2, 6, 9, 8), (2, 0, 9, 2), (2, 6, 9, 8), (9, 0, 10, 8)]
    assert b.frame.tolist() == [0, 0, 1, 1] and b.label.tolist() == [0, 1, 0, 1]


def test_min_area_drops_box_area_at_most_min_area(path):
    heat = torch.zeros(1, 1, 30, 40)
    heat[0, 0, 1, 1] = 1  # 1 px
    heat[0, 0, 5:10, 5:10] = 1  # 5 x 5 = 25: dropped (<= 25)
    heat[0, 0, 20:22, 2:15] = 1  # 13 x 2 = 26: kept
    heat[0, 0, 12:17, 30:36] = 1  # 6 x 5 = 30: kept
    assert boxes_of(heatmap_to_boxes(heat, 0.5)) == [(2, 20, 15, 22), (30, 12, 36, 17)]
    assert boxes_of(heatmap_to_boxes(heat, 0.5, min_area=0)) == [
        (1, 1, 2, 2),
        (2, 20, 15, 22),
        (5, 5, 10, 10),
        (30, 12, 36, 17),
    ]
    # box area, not pixel count: a 10-pixel diagonal line has a 10 x 10 box
    diag = torch.zeros(1, 1, 12, 12)
    idx = torch.arange(10)
    diag[0, 0, idx + 1, idx + 1] = 1
    assert boxes_of(heatmap_to_boxes(diag, 0.5)) == [(1, 1, 11, 11)]
    # union and largest ignore the dropped blobs
    assert boxes_of(heatmap_to_boxes(heat, 0.5, mode="union")) == [(2, 12, 36, 22)]
    assert boxes_of(heatmap_to_boxes(heat, 0.5, mode="largest")) == [(30, 12, 36, 17)]


def test_threshold_zero_one_and_constant_maps(path):
    heat = torch.zeros(1, 3, 10, 12)
    heat[0, 0, 3:8, 4:10] = 0.01  # tiny but > 0
    heat[0, 1] = 0.5  # constant
    heat[0, 2, 2:9, 2:9] = 1.0  # saturated
    b = heatmap_to_boxes(heat, 0.0, min_area=0)
    # T = 0: zeros are not > 0, so class 0 gets only its positive pixels
    assert boxes_of(b) == [(4, 3, 10, 8), (0, 0, 12, 10), (2, 2, 9, 9)]
    assert len(heatmap_to_boxes(heat, 1.0, min_area=0)) == 0  # nothing is > 1
    assert heatmap_to_boxes(heat, 1.0).xyxy.shape == (0, 4)
    assert boxes_of(heatmap_to_boxes(heat[:, 1:2], 0.49, min_area=0)) == [(0, 0, 12, 10)]
    assert len(heatmap_to_boxes(heat[:, 1:2], 0.5, min_area=0)) == 0  # strictly greater
    assert len(heatmap_to_boxes(torch.zeros(2, 3, 10, 12), 0.0, min_area=0)) == 0


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), "x", None])
def test_threshold_out_of_range_raises(bad):
    with pytest.raises(ValueError, match="threshold"):
        heatmap_to_boxes(torch.zeros(1, 1, 4, 4), bad)


def test_nan_and_bad_shapes_raise(path):
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 1, 3, 3] = float("nan")
    with pytest.raises(HeatmapError, match="1 NaN"):
        heatmap_to_boxes(heat, 0.3)
    heat[0, 1, 3, 4] = float("inf")
    with pytest.raises(HeatmapError, match="1 NaN and 1 infinite"):
        heatmap_to_boxes(heat, 0.3)
    # only the maps that are thresholded matter: class 1 not predicted -> no error
    assert len(heatmap_to_boxes(heat, 0.3, probs=torch.tensor([[0.9, 0.1]]))) == 0
    with pytest.raises(HeatmapError, match="NaN"):
        heatmap_to_boxes(torch.full((1, 1, 3, 4, 4), float("nan")), 0.3)
    assert issubclass(HeatmapError, ValueError)
    with pytest.raises(ValueError, match="heat"):
        heatmap_to_boxes(torch.zeros(8, 8), 0.3)
    with pytest.raises(ValueError, match="mode"):
        heatmap_to_boxes(torch.zeros(1, 1, 8, 8), 0.3, mode="blobs")
    with pytest.raises(ValueError, match="mode"):
        heatmap_to_boxes(torch.zeros(1, 1, 8, 8), 0.3, class_modes={0: "nope"})
    with pytest.raises(ValueError, match="probs"):
        heatmap_to_boxes(torch.zeros(2, 3, 8, 8), 0.3, probs=torch.ones(2, 4))
    with pytest.raises(ValueError, match="classes"):
        heatmap_to_boxes(torch.zeros(2, 3, 8, 8), 0.3, classes=[0, 1])


def test_probs_select_classes_and_class_modes(path):
    heat = torch.zeros(2, 3, 20, 20)
    for k in range(3):
        heat[:, k, 1:7, 1:7] = 0.9
        heat[:, k, 10:18, 12:19] = 0.8
    probs = torch.tensor([[0.9, 0.5, 0.7], [0.1, 0.2, 0.51]])
    b = heatmap_to_boxes(heat, 0.5, probs=probs, class_modes={2: "union"})
    # frame 0: class 0 (two blobs) and class 2 (union); 0.5 is not > 0.5; frame 1: class 2 only
    assert b.frame.tolist() == [0, 0, 0, 1]
    assert b.label.tolist() == [0, 0, 2, 2]
    assert boxes_of(b) == [(1, 1, 7, 7), (12, 10, 19, 18), (1, 1, 19, 18), (1, 1, 19, 18)]
    # nothing predicted: no boxes, no crash (the original crashed here)
    assert len(heatmap_to_boxes(heat, 0.5, probs=torch.zeros(2, 3))) == 0
    # pred_threshold moves the cut
    assert len(heatmap_to_boxes(heat, 0.5, probs=probs, pred_threshold=0.05)) == 12
    # `classes`: channel -> class id, probs over all model outputs
    b = heatmap_to_boxes(
        heat[:, :2],
        0.5,
        classes=[7, 3],
        probs=torch.tensor([[0, 0, 0, 0.9, 0, 0, 0, 0.1], [0, 0, 0, 0.1, 0, 0, 0, 0.8]]),
    )
    assert b.label.tolist() == [3, 3, 7, 7] and b.frame.tolist() == [0, 0, 1, 1]


def test_sorted_by_frame_label_then_coordinates(path):
    torch.manual_seed(0)
    heat = torch.zeros(3, 4, 24, 24)
    for b_ in range(3):
        for k in range(4):
            for y, x in [(15, 15), (2, 14), (14, 2), (2, 2)]:
                heat[b_, k, y : y + 6, x : x + 6] = 0.9
    b = heatmap_to_boxes(heat, 0.5)
    keys = list(zip(b.frame.tolist(), b.label.tolist(), *b.xyxy.T.tolist()))
    assert keys == sorted(keys) and len(keys) == 48


def test_3d_blobs_26_connectivity():
    heat = torch.zeros(2, 2, 8, 9, 10)
    heat[0, 0, 1:3, 1:3, 1:3] = 0.9
    heat[0, 0, 3:5, 3:5, 3:5] = 0.7  # touches the first only at a corner voxel
    heat[0, 0, 6:8, 0:2, 8:10] = 0.8  # separate blob, on the volume's edge
    heat[0, 1, 7:, 8:, 9:] = 1.0  # one voxel at the far corner
    heat[1, 1, :1, :, :] = 0.6  # first slice of the next volume: no crossing
    b = heatmap_to_boxes(heat, 0.5, min_area=0)
    assert boxes_of(b) == [(1, 1, 1, 5, 5, 5), (6, 0, 8, 8, 2, 10), (7, 8, 9, 8, 9, 10), (0, 0, 0, 1, 9, 10)]
    assert b.frame.tolist() == [0, 0, 0, 1] and b.label.tolist() == [0, 0, 1, 1]
    s = float(heat[0, 0, 1:5, 1:5, 1:5].mean())
    assert b.score[0].item() == pytest.approx(s, abs=1e-6)
    assert b.xyxy.shape == (4, 6) and b.ndim == 3
    # min_area on the box volume: 2x2x2 = 8 <= 8 dropped
    assert boxes_of(heatmap_to_boxes(heat, 0.5, min_area=8)) == [(1, 1, 1, 5, 5, 5), (0, 0, 0, 1, 9, 10)]
    u = heatmap_to_boxes(heat, 0.5, min_area=0, mode="union")
    assert boxes_of(u)[0] == (1, 0, 1, 8, 5, 10)


# ---------------------------------------------------------------------------------------------
# fast path == naive reference loop


def smooth_heat(B, K, H, W, seed, d=2):
    g = torch.Generator().manual_seed(seed)
    if d == 2:
        x = torch.rand(B * K, 1, max(H // 8, 2), max(W // 8, 2), generator=g)
        h = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    else:
        x = torch.rand(B * K, 1, 3, 3, 3, generator=g)
        h = F.interpolate(x, size=(H, H, W), mode="trilinear", align_corners=False)
    h = h.reshape(B, K, *h.shape[2:])
    lo = h.flatten(2).amin(-1)[..., None, None]
    hi = h.flatten(2).amax(-1)[..., None, None]
    if d == 3:
        lo, hi = lo[..., None], hi[..., None]
    return (h - lo) / (hi - lo)


def reference_boxes(heat, T, mode, min_area, class_modes=None, probs=None, pred_threshold=0.5):
    """Per frame, per class: skimage label (full connectivity) + regionprops, plain Python."""
    out = []
    hn = heat.numpy()
    d = hn.ndim - 2
    for b in range(hn.shape[0]):
        for k in range(hn.shape[1]):
            if probs is not None and not probs[b, k] > pred_threshold:
                continue
            lab = sk_label(hn[b, k] > T, connectivity=d)
            regs = []
            for r in regionprops(lab):
                bb = r.bbox  # (min..., max...) in array order
                if d == 2:
                    box = (bb[1], bb[0], bb[3], bb[2])
                else:
                    box = tuple(bb)
                if math.prod(box[d + i] - box[i] for i in range(d)) > min_area:
                    regs.append(box)
            m = (class_modes or {}).get(k, mode)
            if m == "largest" and regs:
                regs = [sorted(regs, key=lambda bx: (-math.prod(bx[d + i] - bx[i] for i in range(d)), bx))[0]]
            if m == "union" and regs:
                regs = [
                    tuple(min(r[i] for r in regs) for i in range(d))
                    + tuple(max(r[d + i] for r in regs) for i in range(d))
                ]
            for box in regs:
                if d == 2:
                    x1, y1, x2, y2 = box
                    score = hn[b, k, y1:y2, x1:x2].mean()
                else:
                    score = hn[b, k, box[0] : box[3], box[1] : box[4], box[2] : box[5]].mean()
                out.append((b, k, *box, score))
    out.sort(key=lambda r: r[:-1])
    return out


@pytest.mark.parametrize("mode", BOX_MODES)
def test_fast_path_equals_reference_loop_2d(mode, path):
    heat = smooth_heat(3, 4, 48, 64, seed=1)
    probs = torch.rand(3, 4, generator=torch.Generator().manual_seed(2))
    for T in (0.0, 0.3, 0.55, 0.8, 0.97):
        for min_area in (0, 25):
            ref = reference_boxes(heat, T, mode, min_area, {3: "union"}, probs)
            b = heatmap_to_boxes(
                heat, T, mode=mode, min_area=min_area, class_modes={3: "union"}, probs=probs, workers=2
            )
            got = [(f, k, *bx) for f, k, bx in zip(b.frame.tolist(), b.label.tolist(), boxes_of(b))]
            assert got == [r[:-1] for r in ref], (T, min_area)
            np.testing.assert_allclose(b.score.numpy(), [r[-1] for r in ref], atol=1e-5)


def test_fast_path_many_chunks_and_threads(monkeypatch):
    heat = smooth_heat(6, 5, 40, 56, seed=3)
    ref = heatmap_to_boxes(heat, 0.45, workers=1)
    monkeypatch.setattr(thr, "_CHUNK_PIXELS", 40 * 56 * 3)  # 3 maps per chunk -> 10 chunks
    for workers in (1, 3):
        b = heatmap_to_boxes(heat, 0.45, workers=workers)
        assert torch.equal(b.xyxy, ref.xyxy) and torch.equal(b.frame, ref.frame)
        assert torch.allclose(b.score, ref.score, atol=1e-6)
    expected = reference_boxes(heat, 0.45, "components", 25)
    assert len(ref) == len(expected)


def test_fast_path_equals_reference_loop_3d():
    heat = smooth_heat(2, 3, 12, 14, seed=4, d=3)
    for T in (0.2, 0.5, 0.85):
        for mode in BOX_MODES:
            ref = reference_boxes(heat, T, mode, 8)
            b = heatmap_to_boxes(heat, T, mode=mode, min_area=8)
            got = [(f, k, *bx) for f, k, bx in zip(b.frame.tolist(), b.label.tolist(), boxes_of(b))]
            assert got == [r[:-1] for r in ref]
            np.testing.assert_allclose(b.score.numpy(), [r[-1] for r in ref], atol=1e-5)


def test_box_mean_integral_image():
    maps = torch.rand(3, 9, 11, dtype=torch.float32)
    boxes = torch.tensor([[0, 0, 11, 9], [2, 3, 5, 4], [10, 8, 11, 9]], dtype=torch.float32)
    idx = torch.tensor([0, 2, 1])
    got = box_mean(maps, idx, boxes, chunk=2)
    want = [maps[0].mean(), maps[2, 3:4, 2:5].mean(), maps[1, 8, 10]]
    assert torch.allclose(got, torch.stack(want), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Boxes


def test_boxes_round_trip_per_frame_lists():
    b = heatmap_to_boxes(smooth_heat(4, 3, 32, 40, seed=5), 0.6, min_area=0)
    per_frame = b.to_list(num_frames=6)
    assert len(per_frame) == 6 and per_frame[5]["boxes"].shape == (0, 4)
    assert sum(len(d["boxes"]) for d in per_frame) == len(b)
    for f, d in enumerate(per_frame):
        sel = b.frame == f
        assert torch.equal(d["boxes"], b.xyxy[sel]) and torch.equal(d["labels"], b.label[sel])
        assert torch.equal(d["scores"], b.score[sel])
    back = Boxes.from_list(per_frame)
    for f in ("xyxy", "frame", "label", "score"):
        assert torch.equal(getattr(back, f), getattr(b, f))
    # lists and numpy arrays in, frames without boxes allowed, default scores 1
    c = Boxes.from_list([{}, {"boxes": [[1, 2, 3, 4]], "labels": np.array([5])}])
    assert c.frame.tolist() == [1] and c.label.tolist() == [5] and c.score.tolist() == [1.0]
    assert len(Boxes.from_list([{}, {}])) == 0
    with pytest.raises(ValueError, match="frame 0"):
        Boxes.from_list([{"boxes": [[1, 2, 3, 4]], "labels": [1, 2]}])
    with pytest.raises(ValueError, match="num_frames"):
        b.to_list(num_frames=2)


def test_boxes_structure_ops():
    b = Boxes(torch.tensor([[0, 0, 4, 2], [1, 1, 3, 3], [5, 5, 6, 6]]), [0, 1, 1], [3, 2, 3], [0.5, 0.6, 0.7])
    assert b.xyxy.dtype == torch.float32 and b.frame.dtype == torch.int64
    assert len(b) == 3 and b.ndim == 2
    assert b.area().tolist() == [8, 4, 1]
    assert b.roi_format().tolist() == [[0, 0, 0, 4, 2], [1, 1, 1, 3, 3], [1, 5, 5, 6, 6]]
    m = b[b.label == 3]
    assert m.frame.tolist() == [0, 1] and m.score.tolist() == pytest.approx([0.5, 0.7])
    assert b[1].label.tolist() == [2] and b[-1].label.tolist() == [3]
    assert b[torch.tensor([2, 0])].frame.tolist() == [1, 0]
    c = Boxes.cat([b, Boxes.empty(2), b[:1]])
    assert len(c) == 4 and c.frame.tolist() == [0, 1, 1, 0]
    assert Boxes.empty(3).xyxy.shape == (0, 6) and b.to("cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="frame"):
        Boxes(torch.zeros(2, 4), [0], [0, 0], [0, 0])
    with pytest.raises(ValueError, match="xyxy"):
        Boxes(torch.zeros(2, 5), [0, 0], [0, 0], [0, 0])


def test_roi_format_feeds_roi_align():
    from torchvision.ops import roi_align

    heat = torch.zeros(2, 1, 16, 16)
    heat[1, 0, 4:12, 2:10] = 1
    b = heatmap_to_boxes(heat, 0.5)
    feats = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    out = roi_align(feats, b.roi_format(), output_size=(1, 1), aligned=True, sampling_ratio=2)
    assert out.shape == (1, 1, 1, 1)
    assert out.item() == pytest.approx(float(feats[1, 0, 4:12, 2:10].mean()), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# ops


def test_box_iou_2d_and_3d():
    from torchvision.ops import box_iou as tv_iou

    a = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 0, 5]], dtype=torch.float32)
    b = torch.tensor([[0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=torch.float32)
    iou = box_iou(a, b)
    assert iou[0].tolist() == pytest.approx([0.5, 0.0, 1.0])
    assert iou[1, 2].item() == pytest.approx(25 / 175)
    assert iou[2].tolist() == [0.0, 0.0, 0.0]  # empty box: IoU 0, never NaN
    assert torch.allclose(iou[:2], tv_iou(a[:2], b))
    assert torch.allclose(pairwise_box_iou(a, b), iou.diagonal())
    c = torch.tensor([[0, 0, 0, 2, 2, 2]], dtype=torch.float32)
    d = torch.tensor([[1, 0, 0, 3, 2, 2], [0, 0, 0, 2, 2, 1]], dtype=torch.float32)
    assert box_iou(c, d)[0].tolist() == pytest.approx([4 / 12, 0.5])
    assert box_area(d).tolist() == [8, 4]
    with pytest.raises(ValueError):
        box_iou(a, c)


def test_box_union_and_points_in_boxes():
    b = torch.tensor([[0, 0, 2, 2], [5, 1, 7, 9], [3, 3, 4, 4]], dtype=torch.float32)
    u = box_union(b, torch.tensor([0, 0, 2]), 3)
    assert u[0].tolist() == [0, 0, 7, 9] and u[2].tolist() == [3, 3, 4, 4]
    assert math.isinf(u[1, 0].item())
    pts = torch.tensor([[0, 0], [2, 1], [6, 8]])
    assert points_in_boxes(pts, b).tolist() == [True, False, False]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_boxes_equal_cpu_and_stay_on_device():
    heat = smooth_heat(4, 5, 48, 64, seed=9)
    probs = torch.rand(4, 5, generator=torch.Generator().manual_seed(3))
    cpu = heatmap_to_boxes(heat, 0.4, probs=probs, class_modes={4: "union"})
    gpu = heatmap_to_boxes(heat.cuda(), 0.4, probs=probs.cuda(), class_modes={4: "union"})
    assert gpu.xyxy.is_cuda and gpu.frame.is_cuda and gpu.score.is_cuda
    assert torch.equal(gpu.xyxy.cpu(), cpu.xyxy) and torch.equal(gpu.label.cpu(), cpu.label)
    assert torch.allclose(gpu.score.cpu(), cpu.score, atol=1e-5)
    h3 = smooth_heat(2, 2, 10, 12, seed=2, d=3)
    assert torch.equal(heatmap_to_boxes(h3.cuda(), 0.5).xyxy.cpu(), heatmap_to_boxes(h3, 0.5).xyxy)
