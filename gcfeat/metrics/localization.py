r"""Box and map localisation metrics the way the field reports them, over tensors.

Predicted and ground-truth (GT) boxes are :class:`gcfeat.boxes.Boxes` (flat ``xyxy``, ``frame``,
``label``, ``score``; exclusive-end integer corners, 2D ``(M, 4)`` or 3D ``(M, 6)``); GT boxes
ignore ``score``. Heatmaps are ``(B, K, *S)`` in [0, 1] with channel k = class k. "A unit" below
is a (frame, class) pair with at least one GT box of that class: in multi-label frames each
class's map is scored against that class's boxes.

* :func:`coco_ap` -- COCO box AP (Lin et al., ECCV 2014; ``pycocotools.cocoeval``), crowd-free,
  area range "all": per class, detections are ranked by score; within each frame the
  ``max_dets`` best are matched greedily (descending score) to the unmatched GT box of highest
  IoU >= t; precision is made monotone and read at the 101 recall points ``0, 0.01, ..., 1``;
  AP is their mean. AP@[.5:.95] averages t = 0.50, 0.55, ..., 0.95; mAP averages classes that
  have GT (a class with GT and no detection scores 0). Equal to ``pycocotools`` (tested, 1e-6).
* :func:`max_box_acc` -- MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised Object
  Localization Methods Right", CVPR 2020; ``clovaai/wsolevaluation``): for every tau of a grid
  the map is cut at ``tau * max`` (on its uint8 copy, as wsolevaluation), a box is drawn around
  EVERY contour (``cv2.findContours``; holes' contours included), and a unit is correct when
  its best box reaches IoU >= delta with one of its GT boxes; BoxAcc(delta, tau) is the correct
  fraction, the value at delta is the max over tau (one tau for the whole split) and
  MaxBoxAccV2 is the mean over delta in {0.3, 0.5, 0.7}. 2D only (contours are 2D).
* :func:`pxap` -- PxAP (same paper): pixel precision / recall of ``map >= tau`` against GT masks
  pooled over all pixels of the split, area under the PR curve, from histograms (any dims).
* :func:`energy_pointing_game` -- energy-based pointing game (Wang et al., "Score-CAM", CVPRW
  2020): the share of a map's energy (its sum) that falls inside the GT region (any dims).
* :func:`pointing_game` -- the pointing game (Zhang et al., "Top-down neural attention by
  excitation backprop", ECCV 2016 / IJCV 2018): a hit when the map's arg-max lies within
  ``tolerance`` pixels (Euclidean) of the GT region (15 px in the paper; 0 = inside; any dims).
* :func:`best_box_iou` -- the threshold study's mean best IoU and hit rate
  (:mod:`gcfeat.boxes.evaluate`): per GT box the best IoU with any predicted box of its class
  in its frame, 0 when there is none.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor

from gcfeat.boxes.structures import Boxes
from gcfeat.errors import GcfeatError

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "WSOL_DELTAS",
    "WSOL_TAUS",
    "BoxIoU",
    "DetectionAP",
    "DetectionMatches",
    "LocalizationError",
    "MaxBoxAcc",
    "PxAP",
    "average_precision",
    "best_box_iou",
    "coco_ap",
    "energy_pointing_game",
    "gt_boxes",
    "match_detections",
    "max_box_acc",
    "pointing_game",
    "pxap",
    "region_masks",
]

#: COCO's IoU thresholds 0.50:0.05:0.95, computed as pycocotools does.
COCO_IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1).tolist())
#: MaxBoxAccV2's IoU thresholds delta.
WSOL_DELTAS = (0.3, 0.5, 0.7)
#: wsolevaluation's default CAM thresholds: ``np.arange(0, 1, 0.01)``.
WSOL_TAUS = tuple(np.arange(0, 1, 0.01).tolist())


class LocalizationError(GcfeatError):
    """Inputs a localisation metric cannot use (shapes, dims, thresholds)."""


def gt_boxes(boxes_per_frame: Sequence, labels_per_frame: Sequence, ndim: int = 2) -> Boxes:
    """Per-frame GT lists (``(n, 2d)`` boxes, ``(n,)`` labels) -> one flat :class:`Boxes`."""
    return Boxes.from_list(
        [{"boxes": b, "labels": lab} for b, lab in zip(boxes_per_frame, labels_per_frame)], ndim=ndim
    )


# ---------------------------------------------------------------------------------------------
# COCO AP


@dataclass
class DetectionMatches:
    """Detections after per-frame matching, ready to rank (concatenate batches in frame order).

    Attributes:
        score: ``(M,)`` detection scores; label: ``(M,)`` class ids; matched: ``(T, M)`` bool,
        the detection matched a GT box at IoU threshold t; n_gt: ``(K,)`` GT boxes per class;
        iou_thresholds: ``(T,)`` float64.
    """

    score: Tensor
    label: Tensor
    matched: Tensor
    n_gt: Tensor
    iou_thresholds: Tensor

    @classmethod
    def cat(cls, parts: Sequence[DetectionMatches]) -> DetectionMatches:
        """Join batches (their frames must come in order: COCO breaks score ties by frame)."""
        return cls(
            torch.cat([p.score for p in parts]),
            torch.cat([p.label for p in parts]),
            torch.cat([p.matched for p in parts], 1),
            torch.stack([p.n_gt for p in parts]).sum(0),
            parts[0].iou_thresholds,
        )


@dataclass
class DetectionAP:
    """COCO AP per IoU threshold and class.

    Attributes:
        ap: ``(T, K)`` float64, NaN for classes without GT; iou_thresholds: ``(T,)``;
        n_gt: ``(K,)``; n_det: ``(K,)`` detections ranked.
    """

    ap: Tensor
    iou_thresholds: Tensor
    n_gt: Tensor
    n_det: Tensor

    def at(self, iou: float) -> Tensor:
        """``(K,)`` AP at the IoU threshold closest to ``iou`` (0.5 -> AP50)."""
        return self.ap[int((self.iou_thresholds - iou).abs().argmin())]

    @property
    def per_class(self) -> Tensor:
        """``(K,)`` AP@[.5:.95] (mean over thresholds), NaN without GT."""
        return self.ap.mean(0)

    @property
    def ap50(self) -> Tensor:
        return self.at(0.5)

    @property
    def ap75(self) -> Tensor:
        return self.at(0.75)

    @property
    def map(self) -> float:
        """COCO's headline AP: mean over classes with GT of AP@[.5:.95]."""
        return _nanmean(self.per_class)

    @property
    def map50(self) -> float:
        return _nanmean(self.ap50)

    @property
    def map75(self) -> float:
        return _nanmean(self.ap75)


def _nanmean(v: Tensor) -> float:
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else math.nan


def _group_ranks(keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For sorted ``keys (M,)``: unique keys, group index ``(M,)`` and rank within the group."""
    uniq, inv, cnt = torch.unique_consecutive(keys, return_inverse=True, return_counts=True)
    start = cnt.cumsum(0) - cnt
    return uniq, inv, torch.arange(len(keys), device=keys.device) - start[inv]


def match_detections(
    pred: Boxes,
    gt: Boxes,
    num_classes: int,
    *,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_dets: int = 100,
) -> DetectionMatches:
    """COCO's per-frame greedy matching (``COCOeval.evaluateImg``), batched over all frames,
    classes and thresholds; the only loop runs over the detection rank within a frame.

    Per (frame, class) the detections are sorted by descending score (stable) and cut to
    ``max_dets``; detection r (in that order) takes the still unmatched GT box with the highest
    IoU >= t (ties: the last GT box, as pycocotools). IoUs in float64.

    Args:
        pred: detections (any order; ``score`` ranks them); gt: GT boxes; num_classes: K.
        iou_thresholds: t values; max_dets: detections kept per frame and class.

    Returns:
        :class:`DetectionMatches` with detections in (frame, class, descending score) order.
    """
    dev = pred.device
    K = int(num_classes)
    thr = torch.tensor(iou_thresholds, dtype=torch.float64, device=dev)
    thr = torch.minimum(thr, torch.tensor(1 - 1e-10, dtype=torch.float64, device=dev))
    T = len(thr)
    n_gt = torch.bincount(gt.label.to(dev), minlength=K)[:K]
    # detections: group by (frame, class), descending score within the group, cut to max_dets
    kp = pred.frame * K + pred.label
    o = torch.argsort(-pred.score, stable=True)
    o = o[torch.argsort(kp[o], stable=True)]
    _, _, rank = _group_ranks(kp[o])
    o = o[rank < max_dets]
    kp, rank = kp[o], rank[rank < max_dets]
    det_box = pred.xyxy[o].double()
    matched = torch.zeros(T, len(o), dtype=torch.bool, device=dev)
    if len(o) and len(gt):
        kg = (gt.frame * K + gt.label).to(dev)
        og = torch.argsort(kg, stable=True)
        ug, ig, rg = _group_ranks(kg[og])
        G = int(rg.max()) + 1
        g_box = torch.zeros(len(ug), G, gt.xyxy.shape[1], dtype=torch.float64, device=dev)
        g_ok = torch.zeros(len(ug), G, dtype=torch.bool, device=dev)
        g_box[ig, rg] = gt.xyxy[og].to(dev).double()
        g_ok[ig, rg] = True
        pos = torch.searchsorted(ug, kp).clamp(max=len(ug) - 1)
        has = ug[pos] == kp
        # IoU of each detection with the (padded) GT boxes of its group: (M, G), -1 on padding
        d = det_box.shape[1] // 2
        gb = g_box[pos]
        lo = torch.maximum(det_box[:, None, :d], gb[..., :d])
        hi = torch.minimum(det_box[:, None, d:], gb[..., d:])
        inter = (hi - lo).clamp(min=0).prod(-1)
        area_d = (det_box[:, d:] - det_box[:, :d]).clamp(min=0).prod(-1)
        area_g = (gb[..., d:] - gb[..., :d]).clamp(min=0).prod(-1)
        union = area_d[:, None] + area_g - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(inter))
        iou = torch.where(g_ok[pos] & has[:, None], iou, torch.full_like(iou, -1.0))
        taken = torch.zeros(T, len(ug), G, dtype=torch.bool, device=dev)
        for r in range(int(rank.max()) + 1):
            sel = (rank == r).nonzero(as_tuple=True)[0]
            cur = iou[sel][None].expand(T, -1, -1)  # (T, n, G)
            cand = (cur >= thr[:, None, None]) & ~taken[:, pos[sel]]
            val = torch.where(cand, cur, torch.full_like(cur, -1.0))
            best = G - 1 - val.flip(-1).argmax(-1)  # ties: the last GT box
            ok = cand.any(-1)  # (T, n)
            matched[:, sel] = ok
            t_i, n_i = ok.nonzero(as_tuple=True)
            taken[t_i, pos[sel][n_i], best[t_i, n_i]] = True
    return DetectionMatches(pred.score[o].to(torch.float64), pred.label[o], matched, n_gt, thr)


def average_precision(matches: DetectionMatches, num_classes: int, recall_points: int = 101) -> DetectionAP:
    """COCO's ``accumulate``: rank each class's detections by score (stable), cumulate true /
    false positives, make precision monotone (``p_i = max_{j >= i} p_j``) and average it at
    ``recall_points`` recall levels (101: 0, 0.01, ..., 1; a level beyond the last recall reads
    0). Batched over classes and thresholds by padding each class's ranking to the longest."""
    m, K = matches, int(num_classes)
    dev = m.score.device
    T = m.matched.shape[0]
    o = torch.argsort(-m.score, stable=True)
    o = o[torch.argsort(m.label[o], stable=True)]
    lab = m.label[o]
    n_det = torch.bincount(lab, minlength=K)[:K]
    N = max(1, int(n_det.max()) if len(lab) else 1)
    _, _, rank = _group_ranks(lab)
    tp = torch.zeros(T, K, N, dtype=torch.float64, device=dev)
    fp = torch.zeros_like(tp)
    tp[:, lab, rank] = m.matched[:, o].double()
    fp[:, lab, rank] = 1 - m.matched[:, o].double()
    valid = torch.arange(N, device=dev)[None] < n_det[:, None]  # (K, N)
    tpc, fpc = tp.cumsum(-1), fp.cumsum(-1)
    n_gt = m.n_gt.to(dev).double()
    rc = torch.where(valid, tpc / n_gt.clamp(min=1)[:, None], torch.full_like(tpc, math.inf))
    pr = torch.where(valid, tpc / (tpc + fpc + np.spacing(1)), torch.zeros_like(tpc))
    pr = pr.flip(-1).cummax(-1).values.flip(-1)
    levels = torch.tensor(np.linspace(0.0, 1.00, recall_points), dtype=torch.float64, device=dev)
    idx = torch.searchsorted(rc.contiguous(), levels.expand(T, K, -1).contiguous(), side="left")
    q = pr.gather(-1, idx.clamp(max=N - 1)) * (idx < n_det[None, :, None])
    ap = q.mean(-1)
    ap = torch.where(n_gt[None] > 0, ap, torch.full_like(ap, math.nan))
    return DetectionAP(ap, m.iou_thresholds, m.n_gt, n_det)


def coco_ap(
    pred: Boxes,
    gt: Boxes,
    num_classes: int,
    *,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_dets: int = 100,
) -> DetectionAP:
    """COCO box AP per class and threshold (module docstring); ``.map``, ``.map50``, ``.map75``.

    Example:
        >>> res = coco_ap(heatmap_to_boxes(heat, 0.4), gt_boxes(gt_b, gt_l), num_classes=11)
        >>> res.map, res.map50, res.ap50            # AP@[.5:.95], AP50, per-class AP50 (11,)
    """
    if pred.ndim != gt.ndim and len(pred) and len(gt):
        raise LocalizationError(f"pred boxes are {pred.ndim}D, GT boxes {gt.ndim}D")
    return average_precision(
        match_detections(pred, gt, num_classes, iou_thresholds=iou_thresholds, max_dets=max_dets), num_classes
    )


# ---------------------------------------------------------------------------------------------
# units: (frame, class) pairs with GT


def _units(gt: Boxes, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Unique (frame, class) pairs of the GT (sorted): ``frame (U,)``, ``label (U,)`` and the
    unit index of every GT box ``(G,)``."""
    key = gt.frame * num_classes + gt.label
    uniq, inv = torch.unique(key, return_inverse=True)
    return uniq // num_classes, uniq % num_classes, inv


def region_masks(gt: Boxes, spatial: Sequence[int], num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Union of each unit's GT boxes as a mask: ``frame (U,)``, ``label (U,)``,
    ``mask (U, *spatial)`` bool (2D boxes x, y; 3D z, y, x; exclusive end)."""
    frame, label, inv = _units(gt, num_classes)
    d = len(spatial)
    dev = gt.device
    # box columns in array-axis order: 2D (y, x), 3D (z, y, x)
    axes = [1, 0] if d == 2 else [0, 1, 2]
    inside = torch.ones((), dtype=torch.bool, device=dev)  # broadcasts to the first axis' mask
    for j, col in enumerate(axes):
        c = torch.arange(spatial[j], device=dev)
        lo, hi = gt.xyxy[:, col, None], gt.xyxy[:, col + d, None]
        m = ((c >= lo) & (c < hi)).reshape(len(gt), *[spatial[j] if i == j else 1 for i in range(d)])
        inside = inside & m
    mask = torch.zeros(len(frame), *spatial, dtype=torch.bool, device=dev)
    if len(gt):
        mask.index_put_((inv,), inside.expand(len(gt), *spatial), accumulate=True)
    return frame, label, mask


# ---------------------------------------------------------------------------------------------
# MaxBoxAccV2


@dataclass
class MaxBoxAcc:
    """BoxAcc counts per class, delta and tau; mergeable over batches with ``+``.

    Attributes:
        correct: ``(K, D, T)`` units whose best box reaches IoU >= delta at tau;
        n: ``(K,)`` units; deltas: ``(D,)``; taus: ``(T,)``.
    """

    correct: Tensor
    n: Tensor
    deltas: Tensor
    taus: Tensor

    def __add__(self, other: MaxBoxAcc) -> MaxBoxAcc:
        return MaxBoxAcc(self.correct + other.correct, self.n + other.n, self.deltas, self.taus)

    @property
    def box_acc(self) -> Tensor:
        """``(D, T)`` BoxAcc over all classes' units."""
        return self.correct.sum(0).double() / max(1, int(self.n.sum()))

    @property
    def per_delta(self) -> Tensor:
        """``(D,)`` MaxBoxAcc at each delta (max over tau): the three terms of MaxBoxAccV2."""
        return self.box_acc.max(-1).values

    @property
    def best_tau(self) -> Tensor:
        """``(D,)`` the tau of each maximum (the first, i.e. the smallest, on ties)."""
        return self.taus[self.box_acc.argmax(-1)]

    @property
    def value(self) -> float:
        """MaxBoxAccV2: mean of :attr:`per_delta`."""
        return float(self.per_delta.mean())

    @property
    def per_class(self) -> Tensor:
        """``(K,)`` MaxBoxAccV2 per class (its own best tau per delta; NaN without units)."""
        acc = self.correct.double() / self.n.clamp(min=1)[:, None, None]
        v = acc.max(-1).values.mean(-1)
        return torch.where(self.n > 0, v, torch.full_like(v, math.nan))


def _wsol_contour_boxes(on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of ALL contours (outer and holes, ``RETR_LIST`` = ``RETR_TREE``'s set) of the
    stacked masks ``on (c, H + 1, W)`` uint8 (zero last row per map): map index ``(L,)`` and
    ``x, y, x + w, y + h`` ``(L, 4)`` from ``cv2.boundingRect``'s extremes."""
    c, hp, W = on.shape
    contours, _ = cv2.findContours(on.reshape(c * hp, W), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.int64)
    lens = np.fromiter((len(x) for x in contours), np.int64, len(contours))
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    lo = np.minimum.reduceat(pts, starts)
    hi = np.maximum.reduceat(pts, starts) + 1
    m = lo[:, 1] // hp
    lo[:, 1] -= m * hp
    hi[:, 1] -= m * hp
    return m, np.concatenate([lo, hi], 1)


def max_box_acc(
    heatmaps: Tensor,
    gt: Boxes,
    *,
    taus: Sequence[float] = WSOL_TAUS,
    deltas: Sequence[float] = WSOL_DELTAS,
    workers: int | None = None,
) -> MaxBoxAcc:
    """MaxBoxAccV2 counts of one batch (module docstring), as ``wsolevaluation``'s
    ``BoxEvaluator`` with ``multi_contour_eval=True``, GT-known: every unit's map is scored.

    Per unit and tau: ``s = uint8(map * 255)``; on = ``s > int(tau * max(s))``; a box
    ``x0, y0, min(x0 + w, W - 1), min(y0 + h, H - 1)`` per contour (``[0, 0, 0, 0]`` when there is
    none) compared, with wsolevaluation's inclusive IoU (``+ 1`` per side), to the unit's GT
    boxes given to it inclusive (``x2 - 1, y2 - 1``). One ``cv2.findContours`` call per tau for
    the whole batch (maps stacked with a zero row between them); the IoUs are batched.

    Args:
        heatmaps: ``(B, K, H, W)`` in [0, 1] (2D only: contours are 2D).
        gt: GT boxes (frames index ``heatmaps``' rows, labels its channels).
        taus: CAM thresholds (default ``np.arange(0, 1, 0.01)``); deltas: IoU thresholds.
        workers: threads over taus (default ``min(4, os.cpu_count())``; 1 runs inline).

    Returns:
        :class:`MaxBoxAcc` (add batches with ``+``; ``.value`` is MaxBoxAccV2 in [0, 1]).
    """
    if heatmaps.ndim != 4:
        raise LocalizationError(
            f"heatmaps: MaxBoxAccV2 is defined on 2D maps (B, K, H, W) (its "
            f"boxes come from 2D contours), got shape {tuple(heatmaps.shape)}"
        )
    _, K, H, W = heatmaps.shape
    taus_t = torch.tensor(list(taus), dtype=torch.float64)
    deltas_t = torch.tensor(list(deltas), dtype=torch.float64)
    frame, label, inv = _units(gt.to("cpu"), K)
    U = len(frame)
    correct = torch.zeros(K, len(deltas_t), len(taus_t), dtype=torch.int64)
    n = torch.bincount(label, minlength=K)[:K]
    if U == 0:
        return MaxBoxAcc(correct, n, deltas_t, taus_t)
    maps = heatmaps.detach()[frame.to(heatmaps.device), label.to(heatmaps.device)].float().cpu().numpy()
    s = (maps * 255).astype(np.uint8)  # (U, H, W)
    smax = s.reshape(U, -1).max(1).astype(np.float64)
    g = gt.xyxy.cpu().numpy().astype(np.float64) - np.array([0, 0, 1, 1])  # inclusive corners
    g_unit = inv.numpy()

    def best_at(tau: float) -> np.ndarray:  # one tau, all units: one findContours call
        on = np.zeros((U, H + 1, W), np.uint8)
        thr = np.clip(np.trunc(tau * smax), 0, 255).astype(np.uint8)  # int(tau * max)
        np.greater(s, thr[:, None, None], out=on[:, :H].view(bool))
        m, box = _wsol_contour_boxes(on)
        none = np.setdiff1d(np.arange(U), m)  # no contour: [0,0,0,0]
        m = np.concatenate([m, none])
        box = np.concatenate([box, np.zeros((len(none), 4), np.int64)]).astype(np.float64)
        box[:, 2] = np.minimum(box[:, 2], W - 1)
        box[:, 3] = np.minimum(box[:, 3], H - 1)
        return _best_inclusive_iou(m, box, g_unit, g, U)

    tau_list = taus_t.tolist()
    workers = min(4, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    if workers == 1 or len(tau_list) == 1:
        cols = [best_at(t) for t in tau_list]
    else:  # OpenCV releases the GIL: taus in parallel threads, as heatmap_to_boxes does
        with ThreadPoolExecutor(workers) as pool:
            cols = list(pool.map(best_at, tau_list))
    best = np.stack(cols, 1)  # (U, T)
    hit = torch.from_numpy(best)[None] >= deltas_t[:, None, None]  # (D, U, T)
    correct.index_add_(0, label, hit.permute(1, 0, 2).long())
    return MaxBoxAcc(correct, n, deltas_t, taus_t)


def _best_inclusive_iou(
    m: np.ndarray, box: np.ndarray, g_unit: np.ndarray, g: np.ndarray, U: int
) -> np.ndarray:
    """Per unit the max inclusive IoU (``calculate_multiple_iou``) over its boxes x its GT."""
    order = np.argsort(g_unit, kind="stable")
    gu = g_unit[order]
    lo = np.searchsorted(gu, m, "left")
    cnt = np.searchsorted(gu, m, "right") - lo
    bi = np.repeat(np.arange(len(m)), cnt)
    start = np.repeat(np.cumsum(cnt) - cnt, cnt)
    gi = order[np.repeat(lo, cnt) + (np.arange(len(bi)) - start)]
    a, b = box[bi], g[gi]
    wh = np.maximum(np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2]) + 1, 0)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    iou = inter / (area_a + area_b - inter)
    out = np.zeros(U)
    np.maximum.at(out, m[bi], iou)
    return out


# ---------------------------------------------------------------------------------------------
# PxAP


@dataclass
class PxAP:
    """Pixel histograms of map values inside / outside the GT masks; mergeable with ``+``.

    Attributes:
        hist_true, hist_false: ``(n_bins,)`` float64 counts over the bins ``[e_i, e_{i+1})``
        of ``edges`` (the last bin closed); edges: ``(n_bins + 1,)``.
    """

    hist_true: Tensor
    hist_false: Tensor
    edges: Tensor

    def __add__(self, other: PxAP) -> PxAP:
        return PxAP(self.hist_true + other.hist_true, self.hist_false + other.hist_false, self.edges)

    def curve(self) -> tuple[Tensor, Tensor]:
        """Precision and recall of ``map >= e_i`` for descending thresholds (``(n_bins,)`` each)."""
        tp = self.hist_true.flip(0).cumsum(0)
        fp = self.hist_false.flip(0).cumsum(0)
        fn = self.hist_true.sum() - tp
        prec = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1e-300), torch.full_like(tp, math.nan))
        return prec, tp / (tp + fn).clamp(min=1e-300)

    @property
    def value(self) -> float:
        """PxAP in [0, 1]: ``sum_i p_i (r_i - r_{i-1})`` over thresholds with predictions
        (wsolevaluation's ``MaskEvaluator.compute`` / 100)."""
        prec, rec = self.curve()
        ok = ~torch.isnan(prec[1:])
        return float((prec[1:] * rec.diff())[ok].sum())


def pxap(maps: Tensor, masks: Tensor, *, taus: Sequence[float] = WSOL_TAUS) -> PxAP:
    """PxAP histograms of ``maps (N, *S)`` in [0, 1] against ``masks (N, *S)`` (bool), 2D / 3D.

    Bins as wsolevaluation: the right edges ``taus + [1, 2, 3]`` (so a pixel at 1.0 is in
    ``[1, 2)``); ``.value`` is the area under the pooled PR curve (Choe et al., CVPR 2020)."""
    if maps.shape != masks.shape:
        raise LocalizationError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ")
    edges = torch.tensor(list(taus) + [1.0, 2.0, 3.0], dtype=torch.float64, device=maps.device)
    v = maps.detach().reshape(-1)
    if v.dtype == torch.float64:
        e = edges
    else:  # compare in float32 against the smallest float32 >= each edge: the same bins, exactly
        v = v.float()
        e = edges.float()
        e = torch.where(
            e.double() < edges, torch.nextafter(e, torch.tensor(float("inf"), device=e.device)), e
        )
    nb = len(edges) - 1
    b = (torch.bucketize(v, e, right=True) - 1).clamp(0, nb - 1)
    t = masks.reshape(-1).to(maps.device).bool()
    h = torch.bincount(b + nb * t, minlength=2 * nb).double()
    return PxAP(h[nb:], h[:nb], edges)


# ---------------------------------------------------------------------------------------------
# pointing games


def energy_pointing_game(maps: Tensor, regions: Tensor) -> Tensor:
    r"""Energy-based pointing game of ``maps (N, *S)`` (non-negative) against ``regions (N, *S)``:

    .. math:: \mathrm{Proportion} = \frac{\sum_{i \in R} L_i}{\sum_i L_i}

    (Wang et al., Score-CAM, CVPRW 2020, Sec. 4.2.1); ``(N,)`` float, 0 for an all-zero map."""
    m = maps.detach().flatten(1).float()
    r = regions.to(m.device).flatten(1).bool()
    total = m.sum(1, dtype=torch.float64)
    inside = torch.where(r, m, torch.zeros_like(m)).sum(1, dtype=torch.float64)
    return torch.where(total > 0, inside / total.clamp(min=1e-300), torch.zeros_like(total)).float()


def pointing_game(maps: Tensor, regions: Tensor, tolerance: float = 0.0) -> Tensor:
    """Hit (``(N,)`` bool) when the arg-max of ``maps (N, *S)`` lies within ``tolerance`` pixels
    (Euclidean distance to the nearest pixel of ``regions (N, *S)``) -- Zhang et al. 2018 use
    15 px; 0 asks for the peak inside the region. A unit with an empty region never hits.

    Only the ``(2 r + 1)^d`` window around each peak (``r = floor(tolerance)``) can hold a pixel
    that close, so the search reads that window, not the whole map."""
    S = tuple(maps.shape[1:])
    dev = maps.device
    arg = maps.detach().flatten(1).argmax(1)
    r = regions.to(dev).flatten(1).bool()
    inside = r.gather(1, arg[:, None])[:, 0]
    if tolerance < 1 or bool(inside.all()):  # on the pixel grid, a distance below 1 is 0
        return inside
    return inside | _near(r, arg, S, tolerance, int(math.floor(tolerance)))


def _near(r: Tensor, arg: Tensor, S: tuple, tolerance: float, rad: int) -> Tensor:
    """Whether a pixel of ``r (N, P)`` lies within ``tolerance`` of the flat index ``arg``."""
    dev = r.device
    d = len(S)
    off = torch.stack(
        torch.meshgrid(*[torch.arange(-rad, rad + 1, device=dev)] * d, indexing="ij"), -1
    ).reshape(-1, d)
    off = off[(off.float() ** 2).sum(1) <= tolerance**2]  # (O, d) inside the ball
    p = torch.stack(torch.unravel_index(arg, S), -1)  # (N, d)
    q = p[:, None] + off[None]  # (N, O, d)
    size = torch.tensor(S, device=dev)
    ok = ((q >= 0) & (q < size)).all(-1)
    strides = torch.tensor([math.prod(S[i + 1 :]) for i in range(d)], device=dev)
    flat = (q.clamp(min=0) * strides).sum(-1).clamp(max=r.shape[1] - 1)
    return (r.gather(1, flat) & ok).any(1)


# ---------------------------------------------------------------------------------------------
# mean best IoU / hit rate (the threshold study's definitions)


@dataclass
class BoxIoU:
    """Best IoU of every GT box with a predicted box of its class in its frame.

    Attributes:
        best: ``(G,)`` float (0 when the class has no box there); label: ``(G,)``;
        iou_threshold: for the hit rate.
    """

    best: Tensor
    label: Tensor
    iou_threshold: float = 0.5
    num_classes: int = field(default=0)

    @property
    def mean_iou(self) -> float:
        return float(self.best.double().mean()) if len(self.best) else math.nan

    @property
    def hit_rate(self) -> float:
        return float((self.best >= self.iou_threshold).double().mean()) if len(self.best) else math.nan

    def per_class(self) -> tuple[Tensor, Tensor]:
        """``(K,)`` mean IoU and hit rate per class (NaN without GT)."""
        K = max(self.num_classes, int(self.label.max()) + 1 if len(self.label) else 0)
        n = torch.bincount(self.label, minlength=K).double()
        s = torch.bincount(self.label, weights=self.best.double(), minlength=K)
        h = torch.bincount(self.label, weights=(self.best >= self.iou_threshold).double(), minlength=K)
        nan = torch.full_like(n, math.nan)
        return torch.where(n > 0, s / n.clamp(min=1), nan), torch.where(n > 0, h / n.clamp(min=1), nan)


def best_box_iou(pred: Boxes, gt: Boxes, *, iou_threshold: float = 0.5, num_classes: int = 0) -> BoxIoU:
    """Mean best IoU and hit rate as :mod:`gcfeat.boxes.evaluate` defines them (2D / 3D)."""
    dev = gt.device
    K = max(int(num_classes), int(torch.cat([pred.label, gt.label]).max()) + 1 if len(pred) + len(gt) else 1)
    kp = (pred.frame * K + pred.label).to(dev)
    kg = gt.frame * K + gt.label
    op = torch.argsort(kp, stable=True)
    ks = kp[op]
    lo = torch.searchsorted(ks, kg, side="left")
    cnt = torch.searchsorted(ks, kg, side="right") - lo
    gi = torch.repeat_interleave(torch.arange(len(kg), device=dev), cnt)
    start = torch.repeat_interleave(cnt.cumsum(0) - cnt, cnt)
    pi = op[torch.repeat_interleave(lo, cnt) + (torch.arange(len(gi), device=dev) - start)]
    a, b = gt.xyxy[gi].double(), pred.xyxy.to(dev)[pi].double()
    d = a.shape[1] // 2
    inter = (torch.minimum(a[:, d:], b[:, d:]) - torch.maximum(a[:, :d], b[:, :d])).clamp(min=0).prod(-1)
    union = (a[:, d:] - a[:, :d]).prod(-1) + (b[:, d:] - b[:, :d]).prod(-1) - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(inter))
    best = torch.zeros(len(kg), dtype=torch.float64, device=dev).scatter_reduce(0, gi, iou, "amax")
    return BoxIoU(best.float(), gt.label, float(iou_threshold), K)
