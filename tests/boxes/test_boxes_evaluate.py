"""Threshold sweep metrics: hand-built cases with known IoU, and a naive per-frame loop."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gcfeat.boxes import box_iou, heatmap_to_boxes
from gcfeat.boxes.evaluate import ThresholdSweep, evaluate_thresholds, parse_thresholds, recommend_thresholds


def row(df, T, cid):
    sub = df[(df.threshold == T) & (df.class_id == cid)]
    assert len(sub) == 1
    return sub.iloc[0]


def test_hand_built_known_ious():
    heat = torch.zeros(2, 3, 40, 40)
    # frame 0, class 0: prediction [0, 0, 10, 5] vs GT [0, 0, 10, 10] -> IoU 0.5 (a hit)
    heat[0, 0, 0:5, 0:10] = 0.9
    # frame 0, class 1: prediction [20, 20, 30, 30] vs GT [25, 20, 35, 30] -> IoU 50/150 = 1/3
    heat[0, 1, 20:30, 20:30] = 0.6
    # frame 1, class 0: exact GT box [10, 10, 20, 20] (IoU 1) plus a false positive far away
    heat[1, 0, 10:20, 10:20] = 0.8
    heat[1, 0, 30:38, 30:38] = 0.4
    # frame 1, class 2: GT but no heat at all -> IoU 0
    gt = [
        [[0, 0, 10, 10], [25, 20, 35, 30]],
        [[10, 10, 20, 20], [0, 0, 8, 8]],
    ]
    labels = [[0, 1], [0, 2]]
    df = evaluate_thresholds(
        heat,
        None,
        gt,
        labels,
        [0.3, 0.5, 0.7],
        min_area=25,
        class_names=["a", "b", "c"],
        aggregate={"ab": [0, 1]},
    )
    assert len(df) == 3 * 4 and set(df.class_name) == {"a", "b", "c", "ab"}

    r = row(df, 0.3, 0)
    assert r.n_gt == 2 and r.n_pred == 3 and r.tp == 2
    assert r.mean_iou == pytest.approx((0.5 + 1.0) / 2)
    assert r.hit_rate == 1.0 and r.precision == pytest.approx(2 / 3) and r.recall == 1.0
    assert r.f1 == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert r.boxes_per_frame == 1.5
    assert row(df, 0.5, 0).n_pred == 2 and row(df, 0.5, 0).precision == 1.0  # 0.4 blob gone
    r = row(df, 0.7, 0)
    assert r.n_pred == 2 and r.mean_iou == pytest.approx(0.75)
    r = row(df, 0.3, 1)
    assert r.mean_iou == pytest.approx(1 / 3) and r.hit_rate == 0 and r.tp == 0 and r.precision == 0
    r = row(df, 0.7, 1)  # nothing above 0.7: IoU 0, no predictions -> precision NaN
    assert r.mean_iou == 0 and r.n_pred == 0 and math.isnan(r.precision) and r.recall == 0
    r = row(df, 0.5, 2)
    assert r.n_gt == 1 and r.mean_iou == 0 and r.hit_rate == 0
    # aggregate "ab" pools classes 0 and 1 (3 GT boxes)
    r = row(df, 0.3, -1)
    assert r.class_name == "ab" and r.n_gt == 3 and r.n_pred == 4 and r.tp == 2
    assert r.mean_iou == pytest.approx((0.5 + 1.0 + 1 / 3) / 3)
    assert r.hit_rate == pytest.approx(2 / 3) and r.boxes_per_frame == 2.0
    # pointing game (independent of T): class 0 argmax (first max) lies in frames' GT boxes
    assert row(df, 0.3, 0).pointing_game == 1.0
    assert row(df, 0.7, 1).pointing_game == 0.0  # argmax at (20, 20), GT starts at x = 25
    assert row(df, 0.3, 2).pointing_game == 1.0  # all-zero map: argmax (0, 0) is inside [0,0,8,8]


def test_greedy_one_to_one_matching():
    heat = torch.zeros(1, 1, 30, 30)
    heat[0, 0, 0:10, 0:10] = 0.9  # one prediction over two GT boxes
    gt = [[[0, 0, 10, 10], [0, 0, 10, 9]]]  # IoU 1.0 and 0.9
    df = evaluate_thresholds(heat, None, gt, [[0, 0]], [0.5])
    r = row(df, 0.5, 0)
    assert r.tp == 1 and r.precision == 1.0 and r.recall == 0.5
    assert r.hit_rate == 1.0  # both GT boxes have a prediction with IoU >= 0.5
    assert r.mean_iou == pytest.approx(0.95)


def test_probs_gate_predictions():
    heat = torch.zeros(2, 2, 20, 20)
    heat[:, :, 5:15, 5:15] = 0.9
    gt = [[[5, 5, 15, 15]], [[5, 5, 15, 15]]]
    lab = [[1], [1]]
    probs = torch.tensor([[0.9, 0.9], [0.9, 0.2]])  # class 1 missed in frame 1
    df = evaluate_thresholds(heat, probs, gt, lab, [0.5])
    r = row(df, 0.5, 1)
    assert r.mean_iou == 0.5 and r.recall == 0.5 and r.n_pred == 1
    assert row(df, 0.5, 0).n_pred == 2 and math.isnan(row(df, 0.5, 0).mean_iou)
    assert row(df, 0.5, 0).precision == 0.0


def naive_metrics(heat, probs, gt, gl, T, K, min_area=25, iou_thr=0.5):
    """Per frame, per class loops with a full IoU matrix and a sorted greedy matching."""
    b = heatmap_to_boxes(heat, T, probs=probs, min_area=min_area)
    stats = {k: dict(iou=[], hits=0, tp=0, n_pred=0, pg=[]) for k in range(K)}
    for f in range(heat.shape[0]):
        for k in range(K):
            pb = b.xyxy[(b.frame == f) & (b.label == k)]
            gb = torch.tensor(
                np.array([g for g, l in zip(gt[f], gl[f]) if l == k]), dtype=torch.float32
            ).reshape(-1, 4)
            stats[k]["n_pred"] += len(pb)
            if len(gb) == 0:
                continue
            m = box_iou(gb, pb) if len(pb) else torch.zeros(len(gb), 0)
            for i in range(len(gb)):
                best = float(m[i].max()) if m.shape[1] else 0.0
                stats[k]["iou"].append(best)
                stats[k]["hits"] += best >= iou_thr
            pairs = sorted(
                (
                    (float(m[i, j]), i, j)
                    for i in range(len(gb))
                    for j in range(len(pb))
                    if m[i, j] >= iou_thr
                ),
                key=lambda t: (-t[0], t[1], t[2]),
            )
            ug, up = set(), set()
            for _, i, j in pairs:
                if i not in ug and j not in up:
                    ug.add(i), up.add(j)
            stats[k]["tp"] += len(ug)
            hm = heat[f, k]
            y, x = divmod(int(hm.argmax()), hm.shape[1])
            stats[k]["pg"].append(any(g[0] <= x < g[2] and g[1] <= y < g[3] for g in gb.tolist()))
    return stats


def random_case(seed, N=6, K=3, H=40, W=48):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N * K, 1, 5, 6, generator=g)
    heat = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False).reshape(N, K, H, W)
    heat = (heat - heat.amin((2, 3), keepdim=True)) / (
        heat.amax((2, 3), keepdim=True) - heat.amin((2, 3), keepdim=True)
    )
    probs = torch.rand(N, K, generator=g)
    rng = np.random.default_rng(seed)
    gt, gl = [], []
    for _ in range(N):
        n = rng.integers(0, 4)
        x1 = rng.integers(0, W - 10, n)
        y1 = rng.integers(0, H - 10, n)
        w = rng.integers(6, 30, n)
        h = rng.integers(6, 30, n)
        gt.append(np.stack([x1, y1, np.minimum(x1 + w, W), np.minimum(y1 + h, H)], 1).reshape(-1, 4))
        gl.append(rng.integers(0, K, n))
    return heat, probs, gt, gl


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_equals_naive_loop(seed):
    heat, probs, gt, gl = random_case(seed)
    Ts = [0.1, 0.4, 0.6, 0.9]
    df = evaluate_thresholds(heat, probs, gt, gl, Ts, iou_threshold=0.5)
    for T in Ts:
        st = naive_metrics(heat, probs, gt, gl, T, 3)
        for k in range(3):
            r = row(df, T, k)
            s = st[k]
            assert r.n_gt == len(s["iou"]) and r.n_pred == s["n_pred"] and r.tp == s["tp"]
            if s["iou"]:
                assert r.mean_iou == pytest.approx(np.mean(s["iou"]))
                assert r.hit_rate == pytest.approx(s["hits"] / len(s["iou"]))
                assert r.pointing_game == pytest.approx(np.mean(s["pg"]))
            else:
                assert math.isnan(r.mean_iou) and math.isnan(r.pointing_game)
        agg = row(df, T, -1)
        all_iou = sum((st[k]["iou"] for k in range(3)), [])
        assert agg.mean_iou == pytest.approx(np.mean(all_iou))
        assert agg.tp == sum(st[k]["tp"] for k in range(3))


def test_batches_accumulate_like_one_pass():
    heat, probs, gt, gl = random_case(7, N=8)
    Ts = parse_thresholds("0.1:0.9:0.2")
    whole = evaluate_thresholds(heat, probs, gt, gl, Ts)
    sweep = ThresholdSweep(Ts, range(3))
    for s in (slice(0, 3), slice(3, 5), slice(5, 8)):
        sweep.update(heat[s], probs[s], gt[s], gl[s])
    parts = sweep.result()
    assert parts.equals(whole)


def test_gt_labels_outside_classes_ignored_and_errors():
    heat = torch.zeros(1, 2, 10, 10)
    df = evaluate_thresholds(heat, None, [[[0, 0, 5, 5], [1, 1, 4, 4]]], [[9, 1]], [0.5])
    assert row(df, 0.5, 1).n_gt == 1 and row(df, 0.5, 0).n_gt == 0
    with pytest.raises(ValueError, match="frame 0"):
        evaluate_thresholds(heat, None, [[[0, 0, 5, 5]]], [[0, 1]], [0.5])
    with pytest.raises(ValueError, match="batch"):
        evaluate_thresholds(heat, None, [], [], [0.5])
    with pytest.raises(ValueError, match="aggregate"):
        ThresholdSweep([0.5], [0, 1], aggregate={"x": [5]})


def test_3d_sweep():
    heat = torch.zeros(1, 1, 8, 8, 8)
    heat[0, 0, 0:4, 0:4, 0:4] = 0.9
    df = evaluate_thresholds(heat, None, [[[0, 0, 0, 4, 4, 8]]], [[0]], [0.5], min_area=0)
    assert row(df, 0.5, 0).mean_iou == pytest.approx(0.5)
    assert row(df, 0.5, 0).pointing_game == 1.0


def test_parse_thresholds():
    t = parse_thresholds("0.05:0.95:0.05")
    assert len(t) == 19 and t[0] == 0.05 and t[-1] == 0.95 and t[9] == 0.5
    assert parse_thresholds("0.3, 0.1,0.3") == [0.1, 0.3]
    assert parse_thresholds([0.2]) == [0.2]
    for bad in ("a:b:c", "0.1:0.9", "0:1:0", "1.5", "", "0.5:1.5:0.5"):
        with pytest.raises(ValueError, match="thresholds"):
            parse_thresholds(bad)


def test_recommend_thresholds():
    heat, probs, gt, gl = random_case(3, N=10)
    df = evaluate_thresholds(heat, None, gt, gl, "0.1:0.9:0.1", class_names=["x", "y", "z"])
    rec = recommend_thresholds(df, "mean_iou")
    for name, r in rec["per_class"].items():
        sub = df[df.class_name == name]
        assert r["mean_iou"] == pytest.approx(sub.mean_iou.max())
        assert r["threshold"] == sub[sub.mean_iou == sub.mean_iou.max()].threshold.min()
    agg = df[df.class_id == -1]
    assert rec["overall"]["name"] == "all"
    assert rec["overall"]["mean_iou"] == pytest.approx(agg.mean_iou.max())
    # ties -> smallest T; classes without GT left out
    import pandas as pd

    tie = pd.DataFrame(
        dict(
            threshold=[0.1, 0.2, 0.3] * 2,
            class_id=[0] * 3 + [1] * 3,
            class_name=["a"] * 3 + ["b"] * 3,
            mean_iou=[0.2, 0.5, 0.5, np.nan, np.nan, np.nan],
        )
    )
    for m in ("hit_rate", "precision", "recall", "f1", "pointing_game", "boxes_per_frame"):
        tie[m] = 0.0
    r = recommend_thresholds(tie)
    assert r["per_class"]["a"]["threshold"] == 0.2 and "b" not in r["per_class"]
    assert r["overall"] is None
    with pytest.raises(ValueError, match="metric"):
        recommend_thresholds(df, "boxes_per_frame")
