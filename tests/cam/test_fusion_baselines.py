"""Multi-layer fusion and the baseline map producers."""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gcfeat.boxes import heatmap_to_boxes
from gcfeat.cam import CAMError, LayerCAM
from gcfeat.cam.baselines import (
    fraction_of_max_maps,
    otsu_maps,
    otsu_threshold,
    random_maps,
)
from gcfeat.cam.fusion import explain_fused, fuse_maps
from gcfeat.models import build_classifier


def test_fuse_maps_rules_by_hand():
    a = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])  # (1, 1, 2, 2)
    b = torch.tensor([[[[1.0, 1.0], [0.0, 0.5]]]])
    mean = fuse_maps([a, b], (2, 2), "mean")
    mx = fuse_maps([a, b], (2, 2), "max")
    prod = fuse_maps([a, b], (2, 2), "product")
    geo = fuse_maps([a, b], (2, 2), "geomean")
    e = 1e-7
    torch.testing.assert_close(mean, torch.tensor([[[[0.5, 1.0], [0.25, 0.5]]]]).sub(0.25) / (0.75 + e))
    torch.testing.assert_close(mx, torch.tensor([[[[1.0, 1.0], [0.5, 0.5]]]]).sub(0.5) / (0.5 + e))
    torch.testing.assert_close(prod, torch.tensor([[[[0.0, 1.0], [0.0, 0.25]]]]) / (1 + e))
    torch.testing.assert_close(geo, torch.tensor([[[[0.0, 1.0], [0.0, 0.5]]]]) / (1 + e))
    with pytest.raises(CAMError, match="how"):
        fuse_maps([a], (2, 2), "median")


def test_fused_mean_equals_engine_and_3d_shapes(one_thread):
    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=4).eval()
    x = torch.randn(2, 3, 64, 80)
    cam = LayerCAM(model, [model.layer2, model.layer3, model.layer4])
    res = cam.explain(x)
    fused = explain_fused(cam, x, "mean")
    torch.testing.assert_close(fused.heatmap, res.heatmap, atol=1e-6, rtol=0)
    prod = explain_fused(cam, x, "product")
    assert prod.heatmap.shape == (2, 4, 64, 80) and float(prod.heatmap.amax()) == pytest.approx(1.0, abs=1e-5)
    # sharper: the product map's area above 0.5 is smaller than the mean's
    assert (prod.heatmap > 0.5).float().mean() < (fused.heatmap > 0.5).float().mean()
    v = [torch.rand(1, 2, 2, 3, 3), torch.rand(1, 2, 4, 6, 6)]
    out = fuse_maps(v, (8, 12, 12), "max")
    assert out.shape == (1, 2, 8, 12, 12) and float(out.amin()) == 0.0


def test_otsu_equals_opencv():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(12, 1, 4, 5, generator=g) ** 2
    maps = F.interpolate(low, size=(40, 50), mode="bilinear", align_corners=False)[:, 0]
    maps = (maps - maps.amin((1, 2), keepdim=True)) / (
        maps.amax((1, 2), keepdim=True) - maps.amin((1, 2), keepdim=True)
    )
    maps[0] = 0.0  # constant: nothing is on
    out = otsu_maps(maps[:, None])[:, 0]
    for i in range(len(maps)):
        q = (maps[i].numpy() * 255).astype(np.uint8)
        _, ref = cv2.threshold(q, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        assert np.array_equal(out[i].numpy() > 0, ref > 0), i
    assert otsu_threshold(maps[:1].flatten(1)).tolist() == [0]
    # kept pixels keep their heat
    on = out > 0
    assert torch.equal(out[on], maps[on])


def test_fraction_of_max_and_random_maps():
    h = torch.tensor([[[[0.1, 0.3], [0.5, 1.0]]]]) * 0.5  # max 0.5: cut at 0.1
    assert fraction_of_max_maps(h, 0.2).flatten().tolist() == pytest.approx([0.0, 0.15, 0.25, 0.5])
    heat = torch.zeros(1, 2, 32, 40)
    heat[0, 0, 4:12, 5:20] = 0.9
    heat[0, 0, 20:30, 20:30] = 0.1  # below 20 % of the max: dropped
    b = heatmap_to_boxes(fraction_of_max_maps(heat, 0.2), 0.0)
    assert b.xyxy.tolist() == [[5.0, 4.0, 20.0, 12.0]]
    a, a2 = (
        random_maps((2, 3, 16, 20), seed=1, cells=(4, 5)),
        random_maps((2, 3, 16, 20), seed=1, cells=(4, 5)),
    )
    c = random_maps((2, 3, 16, 20), seed=2, cells=(4, 5))
    assert torch.equal(a, a2) and not torch.equal(a, c)
    assert float(a.amin()) == 0.0 and float(a.amax()) == pytest.approx(1.0, abs=1e-6)
    assert random_maps((1, 1, 4, 6, 6), seed=0, cells=(2, 3, 3)).shape == (1, 1, 4, 6, 6)


def test_needed_classes_scatter_equals_the_full_fused_call(one_thread):
    from gcfeat.cam import GradCAM
    from gcfeat.cam.fusion import explain_fused, needed_classes, scatter_classes
    from gcfeat.models import build_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet18", num_classes=5).eval()
    x = torch.randn(3, 3, 48, 64)
    cam = GradCAM(model, [model.layer2, model.layer3, model.layer4])
    full = explain_fused(cam, x, how="product").heatmap  # (3, 5, 48, 64)
    needed = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    sel = needed_classes(needed)
    assert sel.tolist() == [[0, 3], [2, 2], [0, 0]]
    part = scatter_classes(explain_fused(cam, x, how="product", classes=sel).heatmap, sel, 5)
    torch.testing.assert_close(part[needed], full[needed], atol=1e-5, rtol=0)
    assert (part[~needed & (torch.arange(5) != 0)] == 0).all()
