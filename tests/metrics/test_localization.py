"""Localisation metrics: hand-computed cases, COCO AP against pycocotools, MaxBoxAccV2 and PxAP
against plain re-implementations of wsolevaluation's loops, mean best IoU against the
threshold study."""

import contextlib
import io
import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gcfeat.boxes import Boxes, heatmap_to_boxes
from gcfeat.boxes.evaluate import evaluate_thresholds
from gcfeat.metrics.localization import (
    DetectionMatches,
    LocalizationError,
    average_precision,
    best_box_iou,
    coco_ap,
    energy_pointing_game,
    gt_boxes,
    match_detections,
    max_box_acc,
    pointing_game,
    pxap,
    region_masks,
)


def _gt(xyxy, frame, label):
    return Boxes(
        torch.tensor(xyxy, dtype=torch.float32).reshape(-1, len(xyxy[0]) if xyxy else 4),
        torch.tensor(frame),
        torch.tensor(label),
        torch.ones(len(frame)),
    )


def _pred(xyxy, frame, label, score):
    return Boxes(
        torch.tensor(xyxy, dtype=torch.float32), torch.tensor(frame), torch.tensor(label), torch.tensor(score)
    )


# --- COCO AP ---------------------------------------------------------------------------------
def test_ap_hand_computed_false_positive_first():
    gt = _gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [1, 1])
    pred = _pred([[40, 40, 50, 50], [0, 0, 10, 10]], [0, 0], [1, 1], [0.9, 0.8])
    res = coco_ap(pred, gt, num_classes=3)
    # ranked: FP then TP; recall 0.5 at precision 0.5 -> 51 of 101 recall points read 0.5
    assert res.ap[:, 1].tolist() == pytest.approx([51 * 0.5 / 101] * 10)
    assert math.isnan(float(res.ap[0, 0])) and math.isnan(float(res.ap[0, 2]))
    assert res.map == pytest.approx(51 * 0.5 / 101)


def test_ap_3d_and_iou_thresholds():
    gt = _gt([[0, 0, 0, 4, 4, 4]], [0], [0])
    # IoU 27/64 + ... : a shifted cube 1 voxel along z -> IoU = 48 / 80 = 0.6
    pred = _pred([[1, 0, 0, 5, 4, 4]], [0], [0], [0.7])
    res = coco_ap(pred, gt, num_classes=1)
    assert float(res.ap50[0]) == pytest.approx(1.0) and float(res.at(0.6)[0]) == pytest.approx(1.0)
    assert float(res.at(0.65)[0]) == 0.0 and float(res.ap75[0]) == 0.0
    assert res.map == pytest.approx(0.3)  # 3 of 10 thresholds (0.5, 0.55, 0.6)


def _random_case(seed, frames=14, K=4, dets_extra=3):
    rng = np.random.default_rng(seed)
    gb, gl, gf, pb, pl, pf, ps = [], [], [], [], [], [], []
    for f in range(frames):
        for _ in range(rng.integers(0, 5)):
            x1, y1 = rng.integers(0, 50, 2)
            w, h = rng.integers(2, 20, 2)
            c = int(rng.integers(0, K))
            gb.append([x1, y1, x1 + w, y1 + h]), gl.append(c), gf.append(f)
            for _ in range(rng.integers(0, 3)):  # jittered detections of this object
                j = rng.integers(-3, 4, 4)
                b = np.array([x1, y1, x1 + w, y1 + h]) + j
                b[2:] = np.maximum(b[2:], b[:2] + 1)
                (
                    pb.append(b.tolist()),
                    pl.append(c if rng.random() < 0.85 else int(rng.integers(0, K))),
                    pf.append(f),
                )
                ps.append(float(rng.random()))
        for _ in range(rng.integers(0, dets_extra + 1)):
            x1, y1 = rng.integers(0, 50, 2)
            w, h = rng.integers(2, 20, 2)
            pb.append([x1, y1, x1 + w, y1 + h]), pl.append(int(rng.integers(0, K))), pf.append(f)
            ps.append(float(rng.random()))
    gt = _gt(gb, gf, gl)
    pred = _pred(pb, pf, pl, ps)
    return pred, gt, frames, K


def _pycocotools_ap(pred, gt, frames, K, max_dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns = []
    for j in range(len(gt)):
        x1, y1, x2, y2 = gt.xyxy[j].tolist()
        anns.append(
            dict(
                id=j + 1,
                image_id=int(gt.frame[j]),
                category_id=int(gt.label[j]),
                bbox=[x1, y1, x2 - x1, y2 - y1],
                area=(x2 - x1) * (y2 - y1),
                iscrowd=0,
            )
        )
    dets = []
    for j in range(len(pred)):
        x1, y1, x2, y2 = pred.xyxy[j].tolist()
        dets.append(
            dict(
                image_id=int(pred.frame[j]),
                category_id=int(pred.label[j]),
                bbox=[x1, y1, x2 - x1, y2 - y1],
                score=float(pred.score[j]),
            )
        )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": [{"id": i} for i in range(frames)],
            "annotations": anns,
            "categories": [{"id": k} for k in range(K)],
        }
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.params.maxDets = sorted({1, 10, max_dets})  # evaluate() sorts them anyway
        ev.evaluate()
        ev.accumulate()
    m = ev.params.maxDets.index(max_dets)
    p = ev.eval["precision"][:, :, :, 0, m]  # (T, R, K): area "all", maxDets = max_dets
    ap = np.where((p > -1).all(1), p.mean(1), np.nan)
    return ap, np.mean(p[p > -1])  # COCOeval.summarize's stats[0]


@pytest.mark.parametrize("seed,max_dets", [(0, 100), (1, 100), (2, 2), (3, 1)])
def test_ap_matches_pycocotools(seed, max_dets):
    pytest.importorskip("pycocotools")
    pred, gt, frames, K = _random_case(seed)
    ref, ref_map = _pycocotools_ap(pred, gt, frames, K, max_dets)
    res = coco_ap(pred, gt, K, max_dets=max_dets)
    got = res.ap.numpy()
    assert np.isnan(got).tolist() == np.isnan(ref).tolist()
    np.testing.assert_allclose(got[~np.isnan(got)], ref[~np.isnan(ref)], atol=1e-6)
    assert res.map == pytest.approx(ref_map, abs=1e-6)
    assert 0 < res.map50 < 1


def test_ap_batches_concatenate_like_one_call():
    pred, gt, frames, K = _random_case(5)
    whole = coco_ap(pred, gt, K)
    parts = []
    for lo, hi in [(0, 5), (5, frames)]:
        sp, sg = (pred.frame >= lo) & (pred.frame < hi), (gt.frame >= lo) & (gt.frame < hi)
        parts.append(match_detections(pred[sp], gt[sg], K))
    split = average_precision(DetectionMatches.cat(parts), K)
    torch.testing.assert_close(split.ap, whole.ap, equal_nan=True)


# --- MaxBoxAccV2 -----------------------------------------------------------------------------
def _wsol_reference(maps, gts, taus, deltas):
    """wsolevaluation's BoxEvaluator (multi_contour_eval=True), one map at a time."""

    def multiple_iou(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        lo = np.maximum(a[:, None, :2], b[None, :, :2])
        hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
        wh = np.maximum(hi - lo + 1, 0)
        inter = wh[..., 0] * wh[..., 1]
        area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
        area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
        return inter / (area_a[:, None] + area_b[None, :] - inter)

    correct = np.zeros((len(deltas), len(taus)))
    for scoremap, gt in zip(maps, gts):
        H, W = scoremap.shape
        img = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
        all_boxes, counts = [], []
        for tau in taus:
            _, th = cv2.threshold(src=img, thresh=int(tau * np.max(img)), maxval=255, type=cv2.THRESH_BINARY)
            contours = cv2.findContours(image=th, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                all_boxes.append([[0, 0, 0, 0]]), counts.append(1)
                continue
            boxes = []
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                boxes.append([x, y, min(x + w, W - 1), min(y + h, H - 1)])
            all_boxes.append(boxes), counts.append(len(boxes))
        ious = multiple_iou(np.concatenate(all_boxes), gt).max(1)
        idx, best = 0, []
        for n in counts:
            best.append(ious[idx : idx + n].max())
            idx += n
        for i, d in enumerate(deltas):
            correct[i, np.asarray(best) >= d] += 1
    return correct / len(maps)


def _cam_like(B, K, H, W, seed, cells=(5, 6)):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(B * K, 1, *cells, generator=g) ** 2
    h = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False).reshape(B, K, H, W)
    flat = h.flatten(2)
    flat = (flat - flat.amin(-1, keepdim=True)) / (flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True))
    return flat.reshape(B, K, H, W)


def test_max_box_acc_matches_wsol_loop():
    B, K, H, W = 6, 3, 40, 48
    heat = _cam_like(B, K, H, W, 0)
    heat[0, 0] = 0  # no contour at any tau: wsol's [0, 0, 0, 0]
    heat[1, 1] = 1  # everything on: box clamped to W-1, H-1
    ring = torch.zeros(H, W)
    ring[5:30, 5:35] = 1
    ring[12:22, 12:26] = 0.2  # a hole: its contour is a box too
    heat[2, 2] = ring
    rng = np.random.default_rng(0)
    xyxy, frame, label = [], [], []
    for b in range(B):
        for k in range(K):
            for _ in range(rng.integers(0, 3)):
                x1, y1 = rng.integers(0, W - 10), rng.integers(0, H - 10)
                xyxy.append([x1, y1, x1 + rng.integers(3, 20), y1 + rng.integers(3, 20)])
                frame.append(b), label.append(k)
    xyxy += [[0, 0, 1, 1], [12, 12, 26, 22]]
    frame += [0, 2]
    label += [0, 2]
    gt = _gt(xyxy, frame, label)
    taus = np.arange(0, 1, 0.05)
    res = max_box_acc(heat, gt, taus=taus)
    keys = sorted({(int(f), int(l)) for f, l in zip(gt.frame, gt.label)})
    maps = [heat[f, l].numpy() for f, l in keys]
    gts = [
        [
            [*xyxy[i][:2], xyxy[i][2] - 1, xyxy[i][3] - 1]
            for i in range(len(xyxy))
            if (frame[i], label[i]) == key
        ]
        for key in keys
    ]
    ref = _wsol_reference(maps, gts, taus, (0.3, 0.5, 0.7))
    np.testing.assert_allclose(res.box_acc.numpy(), ref, atol=1e-12)
    assert res.value == pytest.approx(ref.max(1).mean())
    assert int(res.n.sum()) == len(keys) and 0 < res.value < 1
    assert torch.equal(max_box_acc(heat, gt, taus=taus, workers=1).correct, res.correct)
    # merging two batches = one batch
    half = gt.frame < 3
    top = max_box_acc(heat[:3], gt[half], taus=taus)
    bottom_gt = gt[~half]
    bottom_gt = Boxes(bottom_gt.xyxy, bottom_gt.frame - 3, bottom_gt.label, bottom_gt.score)
    both = top + max_box_acc(heat[3:], bottom_gt, taus=taus)
    assert torch.equal(both.correct, res.correct)


def test_max_box_acc_hand_case_and_3d_error():
    heat = torch.zeros(1, 1, 20, 20)
    heat[0, 0, 5:10, 5:10] = 1.0
    gt = _gt([[5, 5, 10, 10]], [0], [0])
    res = max_box_acc(heat, gt, taus=[0.5])
    # wsol box [5, 5, 10, 10] inclusive (6x6) vs GT [5, 5, 9, 9] inclusive (5x5): IoU 25 / 36
    assert res.per_delta.tolist() == [1.0, 1.0, 0.0] and res.value == pytest.approx(2 / 3)
    with pytest.raises(LocalizationError, match="2D"):
        max_box_acc(torch.zeros(1, 1, 4, 4, 4), _gt([[0, 0, 0, 1, 1, 1]], [0], [0]))


# --- PxAP ------------------------------------------------------------------------------------
def _wsol_pxap(maps, masks, taus):
    edges = np.append(taus, [1.0, 2.0, 3.0])
    t = np.histogram(maps[masks], bins=edges)[0].astype(float)
    f = np.histogram(maps[~masks], bins=edges)[0].astype(float)
    tp = t[::-1].cumsum()
    fn = t.sum() - tp
    fp = f[::-1].cumsum()
    nz = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = tp / (tp + fp)
    rec = tp / (tp + fn)
    return (prec[1:] * np.diff(rec))[nz[1:]].sum()


@pytest.mark.parametrize("spatial", [(24, 30), (6, 10, 12)])
def test_pxap_matches_wsol_and_hand_case(spatial):
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(5, *spatial, generator=g)
    masks = torch.rand(5, *spatial, generator=g) < 0.3
    maps = torch.where(masks, (maps + 0.3).clamp(max=1), maps)
    taus = np.arange(0, 1, 0.01)
    res = pxap(maps, masks, taus=taus)
    assert res.value == pytest.approx(_wsol_pxap(maps.double().numpy(), masks.numpy(), taus), abs=1e-12)
    # values on the bin edges (0.07 as float32 is above 0.07 as float64) and non-uniform grids
    edge_maps = torch.tensor(np.arange(0, 1.0001, 0.01), dtype=torch.float32)
    edge_maps = edge_maps.repeat(math.prod(spatial) // len(edge_maps) + 1)[: math.prod(spatial)]
    edge_maps = edge_maps.reshape(1, *spatial).expand(5, *spatial)
    for grid in (taus, np.array([0.0, 0.1, 0.15, 0.5, 0.9])):
        got = pxap(edge_maps, masks, taus=grid)
        t_ref = np.histogram(
            edge_maps.double().numpy()[masks.numpy()], bins=np.append(grid, [1.0, 2.0, 3.0])
        )[0]
        assert got.hist_true.tolist() == t_ref.tolist()
        assert got.value == pytest.approx(
            _wsol_pxap(edge_maps.double().numpy(), masks.numpy(), grid), abs=1e-12
        )
    perfect = pxap(masks.float(), masks)
    assert perfect.value == pytest.approx(1.0)
    halves = pxap(maps[:2], masks[:2], taus=taus) + pxap(maps[2:], masks[2:], taus=taus)
    assert halves.value == pytest.approx(res.value)


# --- pointing games --------------------------------------------------------------------------
def test_energy_pointing_game_hand_cases():
    m = torch.zeros(2, 6, 6)
    m[0, 1:3, 1:3] = 1.0  # 4 units of energy, 1 inside the region
    m[1, 0, 0] = 3.0
    m[1, 5, 5] = 1.0
    r = torch.zeros(2, 6, 6, dtype=torch.bool)
    r[0, 2, 2] = True
    r[1, 4:, 4:] = True
    assert energy_pointing_game(m, r).tolist() == pytest.approx([0.25, 0.25])
    v = torch.zeros(1, 3, 4, 4)
    v[0, 0, 0, 0] = 1.0
    v[0, 2, 3, 3] = 1.0
    rv = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    rv[0, 2] = True
    assert energy_pointing_game(v, rv).tolist() == pytest.approx([0.5])
    assert energy_pointing_game(torch.zeros(1, 3, 3), torch.ones(1, 3, 3, dtype=torch.bool)).tolist() == [0.0]


def test_pointing_game_tolerance_hand_cases():
    m = torch.zeros(1, 12, 12)
    m[0, 5, 5] = 1.0
    r = torch.zeros(1, 12, 12, dtype=torch.bool)
    r[0, 5, 9] = True  # 4 px to the right
    assert pointing_game(m, r, 0).tolist() == [False]
    assert pointing_game(m, r, 3.9).tolist() == [False]
    assert pointing_game(m, r, 4).tolist() == [True]
    r2 = torch.zeros(1, 12, 12, dtype=torch.bool)
    r2[0, 8, 9] = True  # (3, 4) away: Euclidean 5, Chebyshev 4
    assert pointing_game(m, r2, 4.5).tolist() == [False] and pointing_game(m, r2, 5).tolist() == [True]
    v = torch.zeros(2, 5, 6, 6)
    v[:, 1, 1, 1] = 1.0
    rv = torch.zeros(2, 5, 6, 6, dtype=torch.bool)
    rv[0, 1, 1, 1] = True
    rv[1, 3, 1, 1] = True  # 2 slices away
    assert pointing_game(v, rv).tolist() == [True, False]
    assert pointing_game(v, rv, 2).tolist() == [True, True]


@pytest.mark.parametrize("spatial,tol", [((20, 24), 3.5), ((20, 24), 15), ((6, 9, 10), 2.2)])
def test_pointing_game_equals_brute_force(spatial, tol):
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(40, *spatial, generator=g)
    regions = torch.rand(40, *spatial, generator=g) > 0.985
    got = pointing_game(maps, regions, tol)
    grid = (
        torch.stack(torch.meshgrid(*[torch.arange(s) for s in spatial], indexing="ij"), -1)
        .reshape(-1, len(spatial))
        .float()
    )
    for i in range(40):
        p = grid[maps[i].flatten().argmax()]
        d = ((grid[regions[i].flatten()] - p) ** 2).sum(1).sqrt()
        assert bool(got[i]) == bool((d <= tol).any()), i
    assert 0 < int(got.sum()) < 40


def test_region_masks_2d_3d():
    gt = _gt([[1, 2, 4, 5], [3, 3, 6, 4]], [0, 0], [1, 1])
    f, l, m = region_masks(gt, (8, 8), num_classes=2)
    ref = torch.zeros(8, 8, dtype=torch.bool)
    ref[2:5, 1:4] = True
    ref[3:4, 3:6] = True
    assert f.tolist() == [0] and l.tolist() == [1] and torch.equal(m[0], ref)
    gt3 = _gt([[1, 0, 2, 3, 2, 4]], [1], [0])
    f, l, m = region_masks(gt3, (4, 4, 5), num_classes=1)
    ref = torch.zeros(4, 4, 5, dtype=torch.bool)
    ref[1:3, 0:2, 2:4] = True
    assert f.tolist() == [1] and torch.equal(m[0], ref)


# --- mean best IoU / hit rate ----------------------------------------------------------------
def test_best_box_iou_equals_threshold_study():
    B, K, H, W = 8, 3, 40, 48
    heat = _cam_like(B, K, H, W, 3)
    pred_all = heatmap_to_boxes(heat, 0.5, min_area=4)
    gtb = gt_boxes(
        [pred_all.xyxy[pred_all.frame == b][:2] + 2 for b in range(B)],
        [pred_all.label[pred_all.frame == b][:2] for b in range(B)],
    )
    df = evaluate_thresholds(
        heat,
        None,
        [gtb.xyxy[gtb.frame == b] for b in range(B)],
        [gtb.label[gtb.frame == b] for b in range(B)],
        [0.3, 0.5],
        min_area=4,
    )
    for T in (0.3, 0.5):
        res = best_box_iou(heatmap_to_boxes(heat, T, min_area=4), gtb, num_classes=K)
        row = df[(df.threshold == T) & (df.class_id == -1)].iloc[0]
        assert res.mean_iou == pytest.approx(row.mean_iou) and res.hit_rate == pytest.approx(row.hit_rate)
        miou, _ = res.per_class()
        for k in range(K):
            r = df[(df.threshold == T) & (df.class_id == k)].iloc[0]
            assert float(miou[k]) == pytest.approx(r.mean_iou, nan_ok=True)
    assert 0 < res.mean_iou < 1


def test_empty_inputs():
    e = Boxes.empty(2)
    g = _gt([[0, 0, 4, 4]], [0], [1])
    r = coco_ap(e, g, 3)  # GT, no detection: AP 0 (COCO), not NaN
    assert float(r.ap[0, 1]) == 0.0 and r.map == 0.0 and math.isnan(float(r.ap[0, 0]))
    assert math.isnan(coco_ap(g, e, 3).map)  # detections, no GT: nothing to score
    assert best_box_iou(e, g).mean_iou == 0.0 and math.isnan(best_box_iou(g, e).mean_iou)
    assert int(max_box_acc(torch.rand(1, 3, 8, 8), e).n.sum()) == 0
