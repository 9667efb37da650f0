"""LocalizationStudy: the sweep table unchanged, plus AP / MaxBoxAccV2 / PxAP / pointing games
equal to the metric functions called directly, batches merged like one batch."""

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from gcfeat.boxes import heatmap_to_boxes
from gcfeat.boxes.evaluate import ThresholdSweep
from gcfeat.metrics.localization import (
    coco_ap,
    energy_pointing_game,
    gt_boxes,
    max_box_acc,
    region_masks,
)
from gcfeat.metrics.study import LocalizationStudy


def _data(B=8, K=3, H=40, W=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(B * K, 1, 5, 6, generator=g) ** 2
    heat = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False).reshape(B, K, H, W)
    flat = heat.flatten(2)
    heat = (
        (flat - flat.amin(-1, keepdim=True)) / (flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True))
    ).reshape(B, K, H, W)
    boxes, labels = [], []
    for b in range(B):
        n = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.randint(0, 30, (n, 2), generator=g)
        wh = torch.randint(4, 18, (n, 2), generator=g)
        boxes.append(torch.cat([xy, xy + wh], 1).float())
        labels.append(torch.randint(0, K, (n,), generator=g))
    probs = torch.rand(B, K, generator=g)
    return heat, probs, boxes, labels


def test_study_adds_metrics_without_changing_the_sweep():
    heat, probs, boxes, labels = _data()
    T = [0.3, 0.5, 0.7]
    base = ThresholdSweep(T, range(3), min_area=4)
    base.update(heat, probs, boxes, labels)
    study = LocalizationStudy(T, range(3), min_area=4, tolerance=3)
    study.update(heat[:5], probs[:5], boxes[:5], labels[:5])
    study.update(heat[5:], probs[5:], boxes[5:], labels[5:])
    one = LocalizationStudy(T, range(3), min_area=4, tolerance=3)
    one.update(heat, probs, boxes, labels)
    df = study.result()
    pd.testing.assert_frame_equal(df[base.result().columns], base.result())
    gt = gt_boxes(boxes, labels)
    ref = coco_ap(heatmap_to_boxes(heat, 0.5, probs=probs, min_area=4), gt, 3)
    row = df[(df.threshold == 0.5) & (df.class_id == -1)].iloc[0]
    assert row.ap == pytest.approx(ref.map) and row.ap50 == pytest.approx(ref.map50)
    rep, rep1 = study.report(), one.report()
    mba = max_box_acc(heat, gt, taus=T)
    assert torch.equal(rep.max_box_acc.correct, mba.correct) and torch.equal(
        rep1.max_box_acc.correct, mba.correct
    )
    f, l, m = region_masks(gt, (40, 48), 3)
    e = energy_pointing_game(heat[f, l], m)
    for k in range(3):
        assert float(rep.energy[k]) == pytest.approx(float(e[l == k].mean()))
    assert rep.pxap.value == pytest.approx(rep1.pxap.value) and 0 < rep.pxap.value < 1
    torch.testing.assert_close(rep.pointing, rep1.pointing)
    assert rep.best_ap50()[0] in T
