"""Extractors against naive per-box / per-class loops."""

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops import roi_align

from gcfeat.extract import (
    CropExtractor,
    Features,
    HeatmapExtractor,
    RoiExtractor,
    crop_boxes,
    heatmap_features,
    parse_layout,
    pool_to_layout,
    roi_features,
)
from gcfeat.extract.pooling import LayoutError

LAYOUTS = [(512, 1, 1), (128, 2, 2), (32, 4, 4)]


def naive_pool(region: np.ndarray, layout):
    """(C, h, w) -> p0*p1*p2 by explicit adaptive-pool cells and channel groups."""
    c, h, w = region.shape
    if layout is None:
        return region.reshape(c, -1).mean(1)
    p0, p1, p2 = layout
    out = np.zeros((p0, p1, p2))
    g = c // p0
    for i in range(p1):
        y0, y1 = (i * h) // p1, math.ceil((i + 1) * h / p1)
        for j in range(p2):
            x0, x1 = (j * w) // p2, math.ceil((j + 1) * w / p2)
            cell = region[:, y0:y1, x0:x1].reshape(c, -1).mean(1)
            for k in range(p0):
                out[k, i, j] = cell[k * g : (k + 1) * g].mean()
    return out.reshape(-1)


@pytest.mark.parametrize("layout", LAYOUTS + [None])
@pytest.mark.parametrize("channels,size", [(512, (9, 7)), (2048, (8, 10)), (1024, (5, 5))])
def test_pool_to_layout_matches_loop(layout, channels, size):
    torch.manual_seed(0)
    x = torch.randn(3, channels, *size, dtype=torch.float64)
    got = pool_to_layout(x, layout)
    want = np.stack([naive_pool(r, layout) for r in x.numpy()])
    assert got.shape == (3, 512 if layout else channels)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


def test_pool_layout_errors_and_parse():
    assert parse_layout("128x2x2") == (128, 2, 2)
    assert parse_layout("raw") is None
    with pytest.raises(ValueError, match="pooling layout"):
        parse_layout("12x2")
    with pytest.raises(LayoutError, match="1000 channels"):
        pool_to_layout(torch.zeros(1, 1000, 4, 4), (128, 2, 2))


def test_pool_3d_volume():
    x = torch.randn(2, 64, 3, 4, 6, dtype=torch.float64)
    got = pool_to_layout(x, (16, 2, 2))
    want = np.stack([naive_pool(r.mean(1), (16, 2, 2)) for r in x.numpy()])  # depth averaged
    np.testing.assert_allclose(got.numpy(), want, atol=1e-10)


# ---------------------------------------------------------------- M1
def test_crop_equals_cv2_resize():
    """An integer box crop equals cv2.resize (INTER_LINEAR) of the crop when the frame around the
    box repeats its edge (the only place the two differ), both for up- and down-scaling."""
    rng = np.random.default_rng(0)
    for (bh, bw), out in [((13, 17), (40, 30)), ((50, 61), (20, 24))]:
        crop = rng.random((bh, bw, 3)).astype(np.float32)
        img = np.pad(crop, ((3, 4), (5, 2), (0, 0)), mode="edge")
        t = torch.from_numpy(img).permute(2, 0, 1)[None]
        box = torch.tensor([[5.0, 3.0, 5.0 + bw, 3.0 + bh]])
        got = crop_boxes(t, box, torch.zeros(1, dtype=torch.long), out)[0].permute(1, 2, 0)
        want = cv2.resize(crop, (out[1], out[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=3).eval()


def test_crop_extractor_matches_per_box_loop(resnet18):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 80)
    xyxy = torch.tensor([[0, 0, 80, 64], [10, 5, 30, 40], [3, 7, 50, 20], [40, 30, 79, 63.0]])
    frame = torch.tensor([0, 0, 1, 1])
    boxes = SimpleNamespace(xyxy=xyxy, frame=frame, label=torch.tensor([10, 1, 2, 1]), score=torch.rand(4))
    ext = CropExtractor(resnet18, out_size=(32, 32), layout=(128, 2, 2), batch_size=3)
    got = ext(images, None, boxes, None)
    assert got.features.shape == (4, 512)
    for i in range(4):
        crop = roi_align(
            images[frame[i]][None], torch.cat([torch.zeros(1), xyxy[i]])[None], (32, 32), 1.0, 1, True
        )
        m = resnet18
        with torch.no_grad():
            f = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(crop))))))))
        want = naive_pool(f[0].double().numpy(), (128, 2, 2))
        np.testing.assert_allclose(got.features[i].numpy(), want, atol=1e-5)
    assert torch.equal(got.label, boxes.label) and torch.equal(got.box, xyxy)


# ---------------------------------------------------------------- M2
def _maps(B=2, H=256, W=320, widths=(512, 1024, 2048)):
    torch.manual_seed(2)
    return {f"layer{l}": torch.randn(B, c, H // s, W // s) for l, c, s in zip((2, 3, 4), widths, (8, 16, 32))}


def _naive_level(box, H, W, thresholds=(5120, 20480)):
    area = (box[2] - box[0]) * (box[3] - box[1])
    s = H * W / (256 * 320)
    return "layer2" if area < thresholds[0] * s else "layer3" if area < thresholds[1] * s else "layer4"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_roi_grid_aligned_boxes_equal_slice_mean(layout):
    """Boxes on the feature grid: ROI align equals the adaptive pool of the sliced cells."""
    maps = _maps()
    boxes = [(0, 0, 64, 64), (64, 128, 128, 192), (128, 0, 256, 128), (0, 128, 256, 256), (192, 0, 320, 256)]
    xyxy = torch.tensor(boxes, dtype=torch.float32)
    frame = torch.tensor([0, 1, 0, 1, 1])
    got = roi_features(maps, xyxy, frame, (256, 320), layout=layout)
    levels = set()
    for i, b in enumerate(boxes):
        name = _naive_level(b, 256, 320)
        levels.add(name)
        s = {"layer2": 8, "layer3": 16, "layer4": 32}[name]
        region = maps[name][frame[i], :, b[1] // s : b[3] // s, b[0] // s : b[2] // s]
        np.testing.assert_allclose(got[i].numpy(), naive_pool(region.double().numpy(), layout), atol=1e-5)
    assert levels == {"layer2", "layer3", "layer4"}


def test_roi_extractor_matches_per_box_roi_align():
    maps = _maps(B=3, H=64, W=80, widths=(16, 32, 64))  # a 64x80 frame: thresholds scale
    g = torch.Generator().manual_seed(3)
    M = 12
    x1 = torch.randint(0, 60, (M,), generator=g).float()
    y1 = torch.randint(0, 50, (M,), generator=g).float()
    xyxy = torch.stack(
        [
            x1,
            y1,
            (x1 + torch.randint(3, 40, (M,), generator=g)).clamp(max=80),
            (y1 + torch.randint(3, 40, (M,), generator=g)).clamp(max=64),
        ],
        1,
    )
    frame = torch.randint(0, 3, (M,), generator=g)
    res = SimpleNamespace(extra=[maps["layer2"], maps["layer3"]], activations=[maps["layer4"]])
    boxes = SimpleNamespace(xyxy=xyxy, frame=frame, label=torch.arange(M), score=torch.rand(M))
    ext = RoiExtractor(layout=(8, 2, 2))
    got = ext(torch.zeros(3, 3, 64, 80), res, boxes)
    seen = set()
    for i in range(M):
        b = xyxy[i].tolist()
        name = _naive_level(b, 64, 80)
        seen.add(name)
        fm = maps[name][frame[i]][None]
        s = fm.shape[-1] / 80
        r = roi_align(
            fm, torch.tensor([[0.0] + b]), (2, 2), spatial_scale=s, sampling_ratio=-1, aligned=True
        )[0]
        want = r.reshape(8, -1, 2, 2).mean(1).flatten()
        np.testing.assert_allclose(got.features[i].numpy(), want.numpy(), atol=1e-5)
    assert len(seen) >= 2
    # forcing one layer
    one = roi_features(maps, xyxy, frame, (64, 80), single_layer="layer4", layout=None)
    assert one.shape == (M, 64)
    with pytest.raises(LayoutError, match="single_layer"):
        roi_features(maps, xyxy, frame, (64, 80), layout=None)


# ---------------------------------------------------------------- M3
def _naive_m3(A, heat, b, k, T, weighting, layout):
    """Per (frame, class): explicit masked / weighted mean per adaptive cell."""
    a = A[b].double().numpy()
    h = heat[b, k].double().numpy()
    w = (h > T).astype(float) if weighting == "mask" else h * (h > T)
    if w.sum() == 0:
        return None
    c = a.shape[0]
    a = a.reshape(c, *a.shape[-2:]) if a.ndim == 3 else a
    p0, p1, p2 = layout or (c, 1, 1)
    hh, ww = a.shape[-2:]
    out = np.zeros((p0, p1, p2))
    for i in range(p1):
        y0, y1 = (i * hh) // p1, math.ceil((i + 1) * hh / p1)
        for j in range(p2):
            x0, x1 = (j * ww) // p2, math.ceil((j + 1) * ww / p2)
            wc = w[y0:y1, x0:x1]
            if wc.sum() == 0:
                continue
            cell = (a[:, y0:y1, x0:x1] * wc).reshape(c, -1).sum(1) / wc.sum()
            out[:, i, j] = cell.reshape(p0, -1).mean(1)
    return out.reshape(-1)


@pytest.mark.parametrize("weighting", ["heat", "mask"])
@pytest.mark.parametrize("layout", LAYOUTS + [None])
def test_heatmap_extractor_matches_per_class_loop(weighting, layout):
    torch.manual_seed(4)
    B, K, C = 3, 5, 512
    A = torch.randn(B, C, 8, 10)
    heat = torch.rand(B, K, 8, 10) ** 3
    heat[1, 2] = 0.1  # predicted but empty mask
    logits = torch.randn(B, K) * 2
    logits[1, 2] = 5.0
    res = SimpleNamespace(activations=[A], layer_heatmaps=[heat], logits=logits, classes=torch.arange(K))
    xyxy = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 30], [1, 2, 3, 4.0]])
    boxes = SimpleNamespace(
        xyxy=xyxy, frame=torch.tensor([0, 0, 2]), label=torch.tensor([1, 1, 3]), score=torch.ones(3)
    )
    probs = torch.sigmoid(logits)
    probs[0, 1] = probs[2, 3] = 0.9
    ext = HeatmapExtractor(threshold=0.3, weighting=weighting, layout=layout)
    got = ext(torch.zeros(B, 3, 256, 320), res, boxes, probs)
    pairs = [(b, k) for b in range(B) for k in range(K) if probs[b, k] > 0.5]
    assert [(int(f), int(l)) for f, l in zip(got.frame, got.label)] == pairs
    assert got.features.shape == (len(pairs), 512 if layout else C)
    for r, (b, k) in enumerate(pairs):
        want = _naive_m3(A, heat, b, k, 0.3, weighting, layout)
        if want is None:
            assert got.empty[r] and not got.features[r].any()
        else:
            assert not got.empty[r]
            np.testing.assert_allclose(got.features[r].numpy(), want, atol=1e-5)
        assert float(got.score[r]) == pytest.approx(float(probs[b, k]))
        sel = (boxes.frame == b) & (boxes.label == k)
        want_box = (
            [xyxy[sel, 0].min(), xyxy[sel, 1].min(), xyxy[sel, 2].max(), xyxy[sel, 3].max()]
            if sel.any()
            else [0, 0, 0, 0]
        )
        assert got.box[r].tolist() == [float(v) for v in want_box]
    assert got.empty.any()


def test_heatmap_features_3d_same_path():
    torch.manual_seed(5)
    A = torch.randn(2, 16, 3, 4, 5)
    heat = torch.rand(2, 2, 3, 4, 5)
    f, e = heatmap_features(
        A, heat, torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1]), 0.5, "heat", (16, 1, 1)
    )
    for r, (b, k) in enumerate([(0, 1), (1, 0), (1, 1)]):
        w = heat[b, k] * (heat[b, k] > 0.5)
        want = (A[b] * w).flatten(1).sum(1) / w.sum()
        np.testing.assert_allclose(f[r].numpy(), want.numpy(), atol=1e-5)
    assert not e.any()


def test_features_cat_to():
    f = Features(torch.arange(2), torch.arange(2), torch.zeros(2, 4), torch.ones(2), torch.ones(2, 5))
    g = Features.cat([f, f.select(torch.tensor([1]))])
    assert len(g) == 3 and g.dim == 5 and g.empty.shape == (3,)
    assert g.to("cpu").frame.tolist() == [0, 1, 1]
