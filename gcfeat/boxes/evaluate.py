"""Box quality against ground truth as the threshold T moves (the threshold-tuning study).

The heatmaps of a batch are made once; :class:`ThresholdSweep` turns them into boxes at every T
and accumulates counts, so the CAM pass never runs again and memory stays at one batch.

Definitions (per threshold T and class c; "frame" is one image, boxes are compared only with
boxes of the same class in the same frame):

* ``mean_iou``: for every ground-truth (GT) box, the best IoU with any predicted box; 0 when
  there is none (also when the class was not predicted at all). Mean over GT boxes.
* ``hit_rate``: fraction of GT boxes whose best IoU is ``>= iou_threshold`` (0.5).
* ``precision`` / ``recall``: one-to-one greedy matching: all (pred, GT) pairs with IoU
  ``>= iou_threshold`` taken in descending IoU order, each box used once; ``tp`` matches;
  precision = tp / predicted boxes (NaN with no predictions), recall = tp / GT boxes.
  ``f1`` = 2 p r / (p + r).
* ``pointing_game``: over frames with at least one GT box of c, the fraction where the argmax of
  c's heatmap lies inside one of them (exclusive end). It does not depend on T (nor on whether
  c was predicted); the same value repeats in every T row.
* ``boxes_per_frame``: predicted boxes of c / number of frames evaluated.

Aggregate rows (``class_id = -1``, ``class_name`` = the aggregate's name, e.g.
``"all_instruments"``) pool the counts of their classes (micro-average): mean IoU over all their
GT boxes, hit rate / precision / recall from the pooled counts, pointing game over all
(frame, class) pairs, boxes per frame summed over the classes. Metrics with no denominator
(e.g. no GT box of a class) are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gcfeat import config

from .ops import pairwise_box_iou, points_in_boxes
from .threshold import HeatmapError, heatmap_to_boxes

__all__ = ["ThresholdSweep", "evaluate_thresholds", "recommend_thresholds", "parse_thresholds", "METRICS"]

#: Metric columns of the sweep table (all "higher is better" except ``boxes_per_frame``).
METRICS: tuple[str, ...] = (
    "mean_iou",
    "hit_rate",
    "precision",
    "recall",
    "f1",
    "pointing_game",
    "boxes_per_frame",
)


def parse_thresholds(spec: str | Sequence[float]) -> list[float]:
    """``"0.05:0.95:0.05"`` (start:stop:step, stop included) or ``"0.2,0.3"`` or a list -> sorted
    unique thresholds rounded to 6 decimals, each in [0, 1]."""
    if isinstance(spec, str):
        try:
            if ":" in spec:
                parts = [float(p) for p in spec.split(":")]
                if len(parts) != 3 or parts[2] <= 0:
                    raise ValueError
                start, stop, step = parts
                n = int(math.floor((stop - start) / step + 1e-9)) + 1
                values = [start + i * step for i in range(max(n, 0))]
            else:
                values = [float(p) for p in spec.split(",") if p.strip()]
        except ValueError:
            raise HeatmapError(
                f"thresholds: cannot parse {spec!r}; expected start:stop:step "
                "(e.g. 0.05:0.95:0.05) or a comma-separated list"
            ) from None
    else:
        values = [float(v) for v in spec]
    values = sorted({round(v, 6) for v in values})
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if not values or bad:
        raise HeatmapError(f"thresholds: expected values in [0, 1], got {spec!r}")
    return values


class ThresholdSweep:
    """Accumulate box-vs-ground-truth counts over batches for a list of thresholds.

    Args:
        thresholds: the T values.
        classes: class id of each heatmap channel (``CAMResult.classes``), e.g. ``range(11)``.
        class_names: name per class id (indexable by id); default ``"class_<id>"``.
        mode, class_modes, min_area, pred_threshold: as :func:`heatmap_to_boxes`.
        iou_threshold: IoU for hits and matches (0.5).
        aggregate: ``{name: class ids}`` pooled rows; default ``{"all": classes}``.

    Example:
        >>> sweep = ThresholdSweep([0.2, 0.4], classes=range(3))
        >>> sweep.update(heat, probs, gt_boxes, gt_labels)   # per batch
        >>> df = sweep.result()
    """

    def __init__(
        self,
        thresholds: Sequence[float],
        classes: Sequence[int],
        *,
        class_names: Sequence[str] | Mapping[int, str] | None = None,
        mode: str = "components",
        class_modes: Mapping[int, str] | None = None,
        min_area: float = config.MIN_AREA,
        pred_threshold: float = config.PRED_THRESHOLD,
        iou_threshold: float = config.IOU_HIT,
        aggregate: Mapping[str, Sequence[int]] | None = None,
        workers: int | None = None,
    ):
        self.thresholds = parse_thresholds(list(thresholds))
        self.classes = [int(c) for c in classes]
        self.col = {c: i for i, c in enumerate(self.classes)}
        if class_names is None:
            self.names = [f"class_{c}" for c in self.classes]
        else:
            self.names = [str(class_names[c]) for c in self.classes]
        self.aggregate = dict(aggregate) if aggregate is not None else {"all": list(self.classes)}
        for name, ids in self.aggregate.items():
            missing = [int(i) for i in ids if int(i) not in self.col]
            if missing:
                raise HeatmapError(f"aggregate {name!r}: class ids {missing} are not among {self.classes}")
        self.box_kwargs: dict[str, Any] = dict(
            mode=mode,
            class_modes=class_modes,
            min_area=min_area,
            pred_threshold=pred_threshold,
            workers=workers,
        )
        self.iou_threshold = float(iou_threshold)
        T, C = len(self.thresholds), len(self.classes)
        self.sum_iou = np.zeros((T, C))
        self.hits = np.zeros((T, C), np.int64)
        self.n_pred = np.zeros((T, C), np.int64)
        self.tp = np.zeros((T, C), np.int64)
        self.n_gt = np.zeros(C, np.int64)
        self.point_hits = np.zeros(C, np.int64)
        self.point_n = np.zeros(C, np.int64)
        self.n_frames = 0

    # ------------------------------------------------------------------------------------------
    def update(
        self,
        heatmaps: Tensor,
        probs: Tensor | None,
        gt_boxes: Sequence,
        gt_labels: Sequence,
    ) -> None:
        """Add one batch.

        Args:
            heatmaps: ``(B, K, *S)`` in [0, 1], channels in the order of ``classes``.
            probs: ``(B, K)`` class probabilities (only classes above ``pred_threshold`` get
                boxes) or ``None`` for boxes on every map.
            gt_boxes: per frame ``(n, 2d)`` exclusive-end boxes (arrays, tensors or lists).
            gt_labels: per frame ``(n,)`` class ids; ids outside ``classes`` are ignored.
        """
        B, K = heatmaps.shape[:2]
        d = heatmaps.ndim - 2
        if K != len(self.classes):
            raise HeatmapError(f"heatmaps: {K} channels, but the sweep has {len(self.classes)} classes")
        if len(gt_boxes) != B or len(gt_labels) != B:
            raise HeatmapError(
                f"ground truth: {len(gt_boxes)} box lists / {len(gt_labels)} label "
                f"lists for a batch of {B} frames"
            )
        g_frame, g_col, g_box = _flatten_gt(gt_boxes, gt_labels, self.col, d)
        C = len(self.classes)
        self.n_frames += B
        self.n_gt += np.bincount(g_col, minlength=C)
        self._pointing(heatmaps, g_frame, g_col, g_box)
        key_g = g_frame * C + g_col
        for t, T in enumerate(self.thresholds):
            boxes = heatmap_to_boxes(heatmaps, T, probs=probs, classes=self.classes, **self.box_kwargs)
            self._on_boxes(t, boxes)
            p_frame = boxes.frame.cpu().numpy()
            p_col = np.array([self.col[int(c)] for c in boxes.label.tolist()], dtype=np.int64)
            p_box = boxes.xyxy.cpu()
            self.n_pred[t] += np.bincount(p_col, minlength=C)
            key_p = p_frame * C + p_col  # sorted: boxes are sorted by frame, then label
            gi, pi = _same_key_pairs(key_g, key_p)
            iou = pairwise_box_iou(g_box[gi], p_box[pi]).numpy().astype(np.float64)
            best = np.zeros(len(key_g))
            np.maximum.at(best, gi, iou)
            self.sum_iou[t] += np.bincount(g_col, weights=best, minlength=C)
            self.hits[t] += np.bincount(g_col, weights=best >= self.iou_threshold, minlength=C).astype(
                np.int64
            )
            matched = _greedy_match(gi, pi, iou, self.iou_threshold, len(key_g), len(key_p))
            self.tp[t] += np.bincount(g_col[matched], minlength=C)

    def _on_boxes(self, t: int, boxes) -> None:
        """Called with the boxes of threshold index ``t`` of the current batch (subclasses
        score them further, e.g. :class:`gcfeat.metrics.study.LocalizationStudy`)."""

    def _pointing(self, heatmaps: Tensor, g_frame, g_col, g_box) -> None:
        if len(g_frame) == 0:
            return
        spatial = heatmaps.shape[2:]
        flat_arg = heatmaps.flatten(2).argmax(-1).cpu()  # (B, K)
        coords = torch.stack(torch.unravel_index(flat_arg, spatial), -1)  # (B, K, d): (y, x) / (z, y, x)
        if len(spatial) == 2:
            coords = coords.flip(-1)  # box order x, y
        pts = coords[torch.from_numpy(g_frame), torch.from_numpy(g_col)]
        inside = points_in_boxes(pts, g_box).numpy()
        C = len(self.classes)
        keys, inv = np.unique(g_frame * C + g_col, return_inverse=True)
        any_in = np.zeros(len(keys), bool)
        np.logical_or.at(any_in, inv, inside)
        self.point_n += np.bincount(keys % C, minlength=C)
        self.point_hits += np.bincount(keys % C, weights=any_in, minlength=C).astype(np.int64)

    # ------------------------------------------------------------------------------------------
    def result(self) -> pd.DataFrame:
        """Tidy table: one row per threshold x class, then the aggregate rows per threshold.

        Columns: ``threshold, class_id, class_name, n_frames, n_gt, n_pred, tp, mean_iou,
        hit_rate, precision, recall, f1, pointing_game, boxes_per_frame``.
        """
        rows = []
        groups = [(c, self.names[i], [i]) for i, c in enumerate(self.classes)]
        groups += [(-1, name, [self.col[int(c)] for c in ids]) for name, ids in self.aggregate.items()]
        for t, T in enumerate(self.thresholds):
            for cid, name, cols in groups:
                n_gt = int(self.n_gt[cols].sum())
                n_pred = int(self.n_pred[t, cols].sum())
                tp = int(self.tp[t, cols].sum())
                p_n = int(self.point_n[cols].sum())
                prec = tp / n_pred if n_pred else math.nan
                rec = tp / n_gt if n_gt else math.nan
                f1 = (
                    2 * prec * rec / (prec + rec)
                    if n_pred and n_gt and (prec + rec) > 0
                    else (0.0 if n_pred and n_gt else math.nan)
                )
                rows.append(
                    dict(
                        threshold=T,
                        class_id=cid,
                        class_name=name,
                        n_frames=self.n_frames,
                        n_gt=n_gt,
                        n_pred=n_pred,
                        tp=tp,
                        mean_iou=float(self.sum_iou[t, cols].sum()) / n_gt if n_gt else math.nan,
                        hit_rate=int(self.hits[t, cols].sum()) / n_gt if n_gt else math.nan,
                        precision=prec,
                        recall=rec,
                        f1=f1,
                        pointing_game=int(self.point_hits[cols].sum()) / p_n if p_n else math.nan,
                        boxes_per_frame=n_pred / self.n_frames if self.n_frames else math.nan,
                    )
                )
        return pd.DataFrame(rows)


def evaluate_thresholds(
    heatmaps: Tensor,
    probs: Tensor | None,
    gt_boxes: Sequence,
    gt_labels: Sequence,
    thresholds: Sequence[float] | str,
    *,
    classes: Sequence[int] | None = None,
    **kwargs,
) -> pd.DataFrame:
    """One-shot sweep over heatmaps already in memory (see the module docstring for metrics).

    Args:
        heatmaps: ``(N, K, *S)``; probs: ``(N, K)`` or None; gt_boxes / gt_labels: per frame.
        thresholds: list or ``"start:stop:step"``.
        classes: class id per channel (default ``0..K-1``); other keywords go to
            :class:`ThresholdSweep`.

    Returns:
        The tidy DataFrame of :meth:`ThresholdSweep.result`.
    """
    if classes is None:
        classes = range(heatmaps.shape[1])
    sweep = ThresholdSweep(parse_thresholds(thresholds), classes, **kwargs)
    sweep.update(heatmaps, probs, gt_boxes, gt_labels)
    return sweep.result()


def recommend_thresholds(df: pd.DataFrame, metric: str = "mean_iou", overall: str | None = None) -> dict:
    """Best T per class and overall by ``metric`` (ties: the smallest T).

    Args:
        df: the sweep table.
        metric: a column of :data:`METRICS` except ``boxes_per_frame``.
        overall: the aggregate row to use for the overall T (default: the first aggregate).

    Returns:
        ``{"metric": m, "per_class": {name: {"class_id", "threshold", m, "hit_rate", ...}},
        "overall": {"name", "threshold", m, ...}}``; classes whose metric is NaN at every T
        (no ground truth) are left out; ``overall`` is None without aggregate rows.
    """
    if metric not in METRICS or metric == "boxes_per_frame":
        raise HeatmapError(
            f"metric: expected one of {[m for m in METRICS if m != 'boxes_per_frame']}, got {metric!r}"
        )

    def best(sub: pd.DataFrame) -> dict | None:
        sub = sub.dropna(subset=[metric]).sort_values("threshold", kind="stable")
        if sub.empty:
            return None
        row = sub.loc[sub[metric].idxmax()]
        out: dict[str, float | None] = {
            "class_id": int(row["class_id"]),
            "threshold": float(row["threshold"]),
        }
        out.update({m: (None if pd.isna(row[m]) else float(row[m])) for m in METRICS})
        return out

    per_class = {}
    for name, sub in df[df["class_id"] >= 0].groupby("class_name", sort=False):
        b = best(sub)
        if b is not None:
            per_class[str(name)] = b
    agg = df[df["class_id"] < 0]
    names = list(dict.fromkeys(agg["class_name"]))
    if overall is None and names:
        overall = names[0]
    ov = None
    if overall is not None:
        if overall not in names:
            raise HeatmapError(f"overall: no aggregate rows named {overall!r}; the table has {names}")
        ov = best(agg[agg["class_name"] == overall])
        if ov is not None:
            ov = {"name": overall, **ov}
    return {"metric": metric, "per_class": per_class, "overall": ov}


# --------------------------------------------------------------------------------------------
def _flatten_gt(gt_boxes, gt_labels, col: Mapping[int, int], d: int):
    """Per-frame GT -> ``frame (G,)``, ``column (G,)`` int64 and ``boxes (G, 2d)`` float tensor,
    keeping only labels among the evaluated classes; sorted by (frame, column)."""
    frames, cols, boxes = [], [], []
    for f, (b, lab) in enumerate(zip(gt_boxes, gt_labels)):
        b = np.asarray(b.cpu() if isinstance(b, Tensor) else b, dtype=np.float32).reshape(-1, 2 * d)
        lab = np.asarray(lab.cpu() if isinstance(lab, Tensor) else lab, dtype=np.int64).reshape(-1)
        if len(b) != len(lab):
            raise HeatmapError(f"ground truth: frame {f} has {len(b)} boxes but {len(lab)} labels")
        keep = np.array([int(c) in col for c in lab], dtype=bool)
        frames.append(np.full(int(keep.sum()), f, np.int64))
        cols.append(np.array([col[int(c)] for c in lab[keep]], dtype=np.int64))
        boxes.append(b[keep])
    frame = np.concatenate(frames) if frames else np.zeros(0, np.int64)
    column = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    box = np.concatenate(boxes) if boxes else np.zeros((0, 2 * d), np.float32)
    order = np.lexsort([column, frame])
    return frame[order], column[order], torch.from_numpy(box[order])


def _same_key_pairs(key_g: np.ndarray, key_p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (gt, pred) index pairs with equal keys; ``key_p`` must be sorted."""
    lo = np.searchsorted(key_p, key_g, "left")
    cnt = np.searchsorted(key_p, key_g, "right") - lo
    gi = np.repeat(np.arange(len(key_g)), cnt)
    start = np.repeat(np.cumsum(cnt) - cnt, cnt)
    pi = np.repeat(lo, cnt) + (np.arange(len(gi)) - start)
    return gi, pi


def _greedy_match(gi, pi, iou, thr: float, n_gt: int, n_pred: int) -> np.ndarray:
    """Indices of GT boxes matched one-to-one, pairs taken in descending IoU (>= thr) order."""
    cand = np.flatnonzero(iou >= thr)
    order = cand[np.lexsort([pi[cand], gi[cand], -iou[cand]])]
    used_g = np.zeros(n_gt, bool)
    used_p = np.zeros(n_pred, bool)
    for j in order:  # only candidate pairs above thr: a handful per GT box
        g, p = gi[j], pi[j]
        if not used_g[g] and not used_p[p]:
            used_g[g] = used_p[p] = True
    return np.flatnonzero(used_g)
