"""The threshold study with the field's figures: one pass over a split's maps, every metric.

:class:`LocalizationStudy` extends :class:`gcfeat.boxes.evaluate.ThresholdSweep` (mean best
IoU, hit rate, precision / recall, pointing game, boxes per frame per T and class): the boxes
it makes at each T are also ranked for COCO AP (:func:`gcfeat.metrics.localization.coco_ap`),
and each batch's maps are scored GT-known by MaxBoxAccV2 (its tau grid = the study's T grid by
default), PxAP, the energy-based pointing game and the pointing game with a tolerance, against
the union of each (frame, class)'s GT boxes (or GT masks when given). Boxes are made once per
T; nothing runs the model.

Example::

    >>> study = LocalizationStudy(parse_thresholds("0.05:0.95:0.05"), classes=range(11))
    >>> for heat, probs, gt_b, gt_l in batches:
    ...     study.update(heat, probs, gt_b, gt_l)
    >>> df = study.result()                 # the sweep table + ap, ap50, ap75 per T x class
    >>> rep = study.report()                # LocalizationReport (MaxBoxAccV2, PxAP, ...)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gcfeat.boxes.evaluate import ThresholdSweep
from gcfeat.boxes.structures import Boxes

from .localization import (
    COCO_IOU_THRESHOLDS,
    DetectionAP,
    DetectionMatches,
    LocalizationError,
    MaxBoxAcc,
    PxAP,
    average_precision,
    energy_pointing_game,
    match_detections,
    max_box_acc,
    pointing_game,
    pxap,
    region_masks,
)

__all__ = ["LocalizationReport", "LocalizationStudy"]


@dataclass
class LocalizationReport:
    """Split-level figures that do not depend on T (or choose their own).

    Attributes:
        ap: one :class:`DetectionAP` per threshold T of the study (None before any batch);
        max_box_acc: MaxBoxAccV2 counts (GT-known; None for 3D maps or before any batch);
        pxap: pixel AP vs the GT regions (None before any batch);
        energy: ``(K,)`` mean energy-based pointing game per class (NaN without GT);
        pointing: ``(K,)`` pointing game with ``tolerance`` per class; tolerance: in pixels;
        thresholds: the study's T values; classes: class id per column.
    """

    ap: list[DetectionAP | None]
    max_box_acc: MaxBoxAcc | None
    pxap: PxAP | None
    energy: Tensor
    pointing: Tensor
    tolerance: float
    thresholds: list[float]
    classes: list[int]

    def ap_at(self, i: int) -> DetectionAP:
        """The :class:`DetectionAP` of threshold index ``i``; an error before any batch."""
        a = self.ap[i]
        if a is None:
            raise LocalizationError(
                "LocalizationStudy: no batch scored yet; call update() before result() / best_ap50()"
            )
        return a

    def best_ap50(self) -> tuple[float, float]:
        """(T, mAP50) at the T with the best mAP50 (an oracle on this split)."""
        vals = [self.ap_at(i).map50 for i in range(len(self.ap))]
        i = int(np.nanargmax(vals))
        return self.thresholds[i], vals[i]


class LocalizationStudy(ThresholdSweep):
    """:class:`ThresholdSweep` + COCO AP per T + MaxBoxAccV2 / PxAP / pointing games.

    Args:
        thresholds, classes: as :class:`ThresholdSweep` (other keywords go to it).
        tolerance: pointing-game tolerance in pixels (Zhang et al.: 15).
        taus: MaxBoxAccV2's CAM thresholds (default: ``thresholds``).
        iou_thresholds, max_dets: COCO AP settings.
    """

    def __init__(
        self,
        thresholds: Sequence[float],
        classes: Sequence[int],
        *,
        tolerance: float = 15.0,
        taus: Sequence[float] | None = None,
        iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
        max_dets: int = 100,
        **kwargs,
    ):
        super().__init__(thresholds, classes, **kwargs)
        self.tolerance = float(tolerance)
        self.taus = list(self.thresholds if taus is None else taus)
        self.iou_thresholds = tuple(iou_thresholds)
        self.max_dets = int(max_dets)
        K = len(self.classes)
        self._matches: list[list[DetectionMatches]] = [[] for _ in self.thresholds]
        self._mba: MaxBoxAcc | None = None
        self._pxap: PxAP | None = None
        self._energy = torch.zeros(K, dtype=torch.float64)
        self._hits = torch.zeros(K, dtype=torch.float64)
        self._units = torch.zeros(K, dtype=torch.float64)
        self._gt: Boxes | None = None
        self._report: LocalizationReport | None = None
        self._col_of = torch.full((max(self.classes) + 1,), -1, dtype=torch.int64)
        self._col_of[torch.tensor(self.classes)] = torch.arange(K)

    def update(
        self,
        heatmaps: Tensor,
        probs: Tensor | None,
        gt_boxes: Sequence,
        gt_labels: Sequence,
        gt_masks: Tensor | None = None,
    ) -> None:
        """Add one batch (as :meth:`ThresholdSweep.update`); ``gt_masks`` ``(B, K, *S)`` bool
        replaces the GT box regions for PxAP and the pointing games."""
        self._report = None
        d = heatmaps.ndim - 2
        gt = Boxes.from_list([{"boxes": b, "labels": lab} for b, lab in zip(gt_boxes, gt_labels)], ndim=d)
        col = self._col_of[gt.label.clamp(max=len(self._col_of) - 1)]
        keep = (gt.label < len(self._col_of)) & (col >= 0)
        self._gt = Boxes(gt.xyxy[keep], gt.frame[keep], col[keep], gt.score[keep]).to(heatmaps.device)
        super().update(heatmaps, probs, gt_boxes, gt_labels)  # calls _on_boxes per T
        self._map_metrics(heatmaps, self._gt, gt_masks)
        self._gt = None

    def _on_boxes(self, t: int, boxes: Boxes) -> None:
        cols = self._col_of.to(boxes.label.device)[boxes.label]
        b = Boxes(boxes.xyxy, boxes.frame, cols, boxes.score)
        assert self._gt is not None  # set by update() around the sweep that calls this
        self._matches[t].append(
            match_detections(
                b, self._gt, len(self.classes), iou_thresholds=self.iou_thresholds, max_dets=self.max_dets
            )
        )

    def _map_metrics(self, heatmaps: Tensor, gt: Boxes, gt_masks: Tensor | None) -> None:
        K = len(self.classes)
        if heatmaps.ndim == 4:
            # box_kwargs (boxes.evaluate.ThresholdSweep) is an unannotated mixed dict; workers
            # is the sweep's ``int | None`` argument
            workers = self.box_kwargs["workers"]
            mba = max_box_acc(heatmaps, gt, taus=self.taus, workers=workers)  # type: ignore[arg-type]
            self._mba = mba if self._mba is None else self._mba + mba
        frame, label, masks = region_masks(gt, heatmaps.shape[2:], K)
        if gt_masks is not None:
            masks = gt_masks.to(heatmaps.device)[frame, label].bool()
        maps = heatmaps[frame, label]
        px = pxap(maps, masks)
        self._pxap = px if self._pxap is None else self._pxap + px
        lab = label.cpu()
        self._energy.index_add_(0, lab, energy_pointing_game(maps, masks).double().cpu())
        self._hits.index_add_(0, lab, pointing_game(maps, masks, self.tolerance).double().cpu())
        self._units.index_add_(0, lab, torch.ones(len(lab), dtype=torch.float64))

    def report(self) -> LocalizationReport:
        """The split-level figures so far (cached until the next :meth:`update`)."""
        if self._report is not None:
            return self._report
        K = len(self.classes)
        ap = [average_precision(DetectionMatches.cat(m), K) if m else None for m in self._matches]
        nan = torch.full((K,), math.nan, dtype=torch.float64)
        n = self._units
        self._report = LocalizationReport(
            ap=ap,
            max_box_acc=self._mba,
            pxap=self._pxap,
            energy=torch.where(n > 0, self._energy / n.clamp(min=1), nan),
            pointing=torch.where(n > 0, self._hits / n.clamp(min=1), nan),
            tolerance=self.tolerance,
            thresholds=list(self.thresholds),
            classes=list(self.classes),
        )
        return self._report

    def result(self) -> pd.DataFrame:
        """The sweep table plus ``ap`` (AP@[.5:.95]), ``ap50``, ``ap75`` per T and class
        (aggregate rows: the mean over their classes with GT, COCO's mAP)."""
        df = super().result()
        rep = self.report()
        col = {c: i for i, c in enumerate(self.classes)}
        extra: dict[str, list[float]] = {"ap": [], "ap50": [], "ap75": []}
        for _, row in df.iterrows():
            a = rep.ap_at(self.thresholds.index(row["threshold"]))
            cols = (
                [col[int(row["class_id"])]]
                if row["class_id"] >= 0
                else [col[int(c)] for c in self.aggregate[row["class_name"]]]
            )
            for name, v in (("ap", a.per_class), ("ap50", a.ap50), ("ap75", a.ap75)):
                sel = v[cols]
                sel = sel[~torch.isnan(sel)]
                extra[name].append(float(sel.mean()) if sel.numel() else math.nan)
        return df.assign(**extra)
