"""heatmap_to_boxes with one T per channel equals one scalar call per channel (2D and 3D, CPU
fast path and the mask path)."""

import pytest
import torch
import torch.nn.functional as F

import gcfeat.boxes.threshold as thr_mod
from gcfeat.boxes import Boxes, HeatmapError, heatmap_to_boxes


def _maps(shape, seed):
    g = torch.Generator().manual_seed(seed)
    B, K, *S = shape
    low = torch.rand(B * K, 1, *[max(2, s // 8) for s in S], generator=g) ** 2
    mode = "bilinear" if len(S) == 2 else "trilinear"
    h = F.interpolate(low, size=S, mode=mode, align_corners=False).reshape(B, K, *S)
    flat = h.flatten(2)
    flat = (flat - flat.amin(-1, keepdim=True)) / (flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True))
    return flat.reshape(h.shape)


def _per_channel_reference(heat, T, **kw):
    parts = []
    for k in range(heat.shape[1]):
        b = heatmap_to_boxes(heat[:, k : k + 1].contiguous(), float(T[k]), **kw)
        parts.append(Boxes(b.xyxy, b.frame, torch.full_like(b.label, k), b.score))
    out = Boxes.cat(parts)
    order = sorted(
        range(len(out)), key=lambda i: (int(out.frame[i]), int(out.label[i]), *out.xyxy[i].tolist())
    )
    return out[torch.tensor(order, dtype=torch.long)]


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("shape", [(5, 4, 40, 48), (2, 3, 12, 16, 16)])
def test_per_class_threshold_equals_scalar_calls(fast, shape, monkeypatch):
    monkeypatch.setattr(thr_mod, "_CPU_FAST_2D", fast)
    heat = _maps(shape, 0)
    T = torch.tensor([0.2, 0.55, 0.8, 1.0][: shape[1]])
    got = heatmap_to_boxes(heat, T, min_area=4)
    ref = _per_channel_reference(heat, T, min_area=4)
    assert len(got) > 0 and len(got) == len(ref)
    assert torch.equal(got.xyxy, ref.xyxy) and torch.equal(got.frame, ref.frame)
    assert torch.equal(got.label, ref.label)
    torch.testing.assert_close(got.score, ref.score)


def test_per_class_threshold_with_probs_and_equal_values_is_scalar_path():
    heat = _maps((4, 3, 32, 40), 1)
    probs = torch.rand(4, 3, generator=torch.Generator().manual_seed(2))
    a = heatmap_to_boxes(heat, 0.4, probs=probs)
    b = heatmap_to_boxes(heat, [0.4, 0.4, 0.4], probs=probs)
    assert len(a) > 0 and torch.equal(a.xyxy, b.xyxy) and torch.equal(a.score, b.score)
    # a threshold exactly at a pixel value: float32 comparison in both paths
    v = float(heat[0, 0, 10, 10])
    a = heatmap_to_boxes(heat, v, min_area=0)
    b = heatmap_to_boxes(heat, torch.tensor([v, v, v], dtype=torch.float64), min_area=0)
    assert torch.equal(a.xyxy, b.xyxy)


def test_per_class_threshold_errors():
    heat = _maps((1, 3, 16, 16), 0)
    with pytest.raises(HeatmapError, match=r"\(3,\)"):
        heatmap_to_boxes(heat, [0.2, 0.3])
    with pytest.raises(HeatmapError, match="in \\[0, 1\\]"):
        heatmap_to_boxes(heat, [0.2, float("nan"), 0.3])
