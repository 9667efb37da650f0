"""Thresholds that transfer: choose T on one split (calibration), apply it on another.

The threshold study picks the T that maximises a box metric on the split it scores, an oracle
(an upper bound in the WSOL literature: Choe et al., CVPR 2020, "Evaluating Weakly Supervised
Object Localization Methods Right", Sec. 4, choose tau on a held-out split). Here T is chosen on
a calibration split and written to a JSON file that other runs read back:

* ``global_threshold``: the T with the best pooled ``objective`` (the aggregate row);
* ``per_class[c]``: the T with the best ``objective`` on class c alone; a class with fewer than
  ``min_gt`` GT boxes on the calibration split (too few to choose from) takes the global T.

Modes: ``"pred"`` (boxes only for the classes the classifier predicts, ``probs > 0.5``: what
``extract`` does) and ``"gt_known"`` (boxes for the classes present in the frame's GT, WSOL's
"GT-known" protocol: localisation without classification errors).

Example::

    >>> cal = calibrate_thresholds(heat_val, probs_val, gt_b_val, gt_l_val, "0.05:0.95:0.05",
    ...                            class_names=names)
    >>> cal.save("thresholds.json")
    >>> T = ThresholdCalibration.load("thresholds.json").per_channel(range(11))   # (11,)
    >>> boxes = heatmap_to_boxes(heat_test, T, probs=probs_test)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gcfeat.errors import GcfeatError

from .evaluate import METRICS, ThresholdSweep, parse_thresholds

__all__ = [
    "CALIBRATION_MODES",
    "FORMAT",
    "ThresholdCalibration",
    "ThresholdFileError",
    "calibrate_thresholds",
    "calibration_from_table",
    "gt_known_probs",
]

CALIBRATION_MODES = ("pred", "gt_known")
FORMAT = "gcfeat-thresholds/1"


class ThresholdFileError(GcfeatError):
    """A thresholds JSON file (or calibration argument) that cannot be used."""


@dataclass
class ThresholdCalibration:
    """Per-class and global thresholds chosen on a calibration split.

    Attributes:
        classes: class id of each entry; class_names: their names.
        per_class: chosen T per class (the global T where the class had too few GT boxes).
        per_class_score: the objective at that T on the calibration split (None: no GT).
        per_class_source: ``"class"`` (chosen on the class) or ``"global"`` (fallback).
        n_gt: GT boxes per class on the calibration split.
        global_threshold, global_score: the pooled choice and its objective.
        objective: the metric maximised (a :data:`gcfeat.boxes.evaluate.METRICS` column).
        mode: ``"pred"`` or ``"gt_known"``; grid: the T values tried.
        meta: free-form provenance (layer, method, split, checkpoint ...).
    """

    classes: list[int]
    class_names: list[str]
    per_class: list[float]
    per_class_score: list[float | None]
    per_class_source: list[str]
    n_gt: list[int]
    global_threshold: float
    global_score: float | None
    objective: str
    mode: str
    grid: list[float]
    meta: dict = field(default_factory=dict)

    def per_channel(self, classes: Sequence[int] | Tensor | None = None) -> Tensor:
        """``(K,)`` float64 T for heatmap channels holding ``classes`` (default: all, in order),
        for :func:`gcfeat.boxes.heatmap_to_boxes`."""
        ids = (
            self.classes
            if classes is None
            else [int(c) for c in torch.as_tensor(classes).reshape(-1).tolist()]
        )
        table = dict(zip(self.classes, self.per_class))
        missing = [c for c in ids if c not in table]
        if missing:
            raise ThresholdFileError(
                f"thresholds: no T for class ids {missing}; the file holds "
                f"{self.classes} ({self.class_names})"
            )
        return torch.tensor([table[c] for c in ids], dtype=torch.float64)

    def to_json(self) -> dict:
        d = asdict(self)
        return {"format": FORMAT, **d}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ThresholdCalibration:
        """Read a file written by :meth:`save`; a bad file raises :class:`ThresholdFileError`
        naming it."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ThresholdFileError(f"{path}: thresholds file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ThresholdFileError(f"{path}: not a readable JSON thresholds file ({e})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ThresholdFileError(
                f"{path}: format {found!r}, expected {FORMAT!r} (written by "
                f"ThresholdCalibration.save / gcfeat tune)"
            )
        d.pop("format")
        names = {f for f in cls.__dataclass_fields__}
        if set(d) != names:
            raise ThresholdFileError(f"{path}: fields {sorted(d)}, expected {sorted(names)}")
        cal = cls(**d)
        K = len(cal.classes)
        if not all(
            len(getattr(cal, f)) == K
            for f in ("class_names", "per_class", "per_class_score", "per_class_source", "n_gt")
        ):
            raise ThresholdFileError(f"{path}: per-class lists of different lengths (expected {K})")
        bad = [
            t
            for t in cal.per_class + [cal.global_threshold]
            if not isinstance(t, (int, float)) or not 0 <= t <= 1
        ]
        if bad:
            raise ThresholdFileError(f"{path}: thresholds {bad} outside [0, 1]")
        return cal

    def table(self) -> pd.DataFrame:
        """One row per class: id, name, threshold, score, source, n_gt."""
        return pd.DataFrame(
            {
                "class_id": self.classes,
                "class_name": self.class_names,
                "threshold": self.per_class,
                self.objective: self.per_class_score,
                "source": self.per_class_source,
                "n_gt": self.n_gt,
            }
        )


def gt_known_probs(gt_labels: Sequence, classes: Sequence[int], device=None) -> Tensor:
    """``(B, K)`` 1 where channel k's class has a GT box in frame b (the GT-known mode's
    "prediction"), else 0."""
    col = {int(c): i for i, c in enumerate(classes)}
    p = torch.zeros(len(gt_labels), len(col), device=device)
    for b, lab in enumerate(gt_labels):  # per frame: the GT lists are Python lists already
        idx = [col[int(c)] for c in torch.as_tensor(np.asarray(lab)).reshape(-1).tolist() if int(c) in col]
        p[b, idx] = 1.0
    return p


def calibrate_thresholds(
    heatmaps: Tensor,
    probs: Tensor | None,
    gt_boxes: Sequence,
    gt_labels: Sequence,
    thresholds: Sequence[float] | str = "0.05:0.95:0.05",
    *,
    classes: Sequence[int] | None = None,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    mode: str = "pred",
    objective: str = "mean_iou",
    aggregate: Sequence[int] | None = None,
    min_gt: int = 10,
    meta: Mapping | None = None,
    **sweep_kwargs,
) -> ThresholdCalibration:
    """Choose per-class and global T on one split's maps and GT (see the module docstring).

    Args:
        heatmaps: ``(N, K, *S)``; probs: ``(N, K)`` (mode ``"pred"``; None = every map).
        gt_boxes / gt_labels: per frame ``(n, 2d)`` / ``(n,)``.
        thresholds: the grid; classes: class id per channel (default ``0..K-1``).
        mode: ``"pred"`` or ``"gt_known"``; objective: the metric maximised.
        aggregate: class ids pooled for the global T (default all; the surgical callers pass
            the instruments, leaving tissue out as the study does).
        min_gt: classes with fewer GT boxes fall back to the global T.
        meta: provenance stored in the file; other keywords go to :class:`ThresholdSweep`.

    For splits that do not fit in memory, run :class:`ThresholdSweep` over batches and call
    :func:`calibration_from_table` on ``sweep.result()``.
    """
    if mode not in CALIBRATION_MODES:
        raise ThresholdFileError(f"mode: expected one of {CALIBRATION_MODES}, got {mode!r}")
    classes = list(range(heatmaps.shape[1])) if classes is None else [int(c) for c in classes]
    if mode == "gt_known":
        probs = gt_known_probs(gt_labels, classes, heatmaps.device)
        sweep_kwargs["pred_threshold"] = 0.5
    agg = {"calibration": list(classes) if aggregate is None else [int(c) for c in aggregate]}
    sweep = ThresholdSweep(
        parse_thresholds(thresholds), classes, class_names=class_names, aggregate=agg, **sweep_kwargs
    )
    sweep.update(heatmaps, probs, gt_boxes, gt_labels)
    return calibration_from_table(sweep.result(), objective=objective, mode=mode, min_gt=min_gt, meta=meta)


def calibration_from_table(
    df: pd.DataFrame,
    *,
    objective: str = "mean_iou",
    mode: str = "pred",
    min_gt: int = 10,
    overall: str | None = None,
    meta: Mapping | None = None,
) -> ThresholdCalibration:
    """A :class:`ThresholdCalibration` from a threshold-study table (``ThresholdSweep.result()``):
    per class the best T (ties: the smallest), the aggregate row ``overall`` (default the
    first) for the global T."""
    if objective not in METRICS or objective == "boxes_per_frame":
        raise ThresholdFileError(
            f"objective: expected one of {[m for m in METRICS if m != 'boxes_per_frame']}, got {objective!r}"
        )
    if mode not in CALIBRATION_MODES:
        raise ThresholdFileError(f"mode: expected one of {CALIBRATION_MODES}, got {mode!r}")
    agg = df[df["class_id"] < 0]
    names = list(dict.fromkeys(agg["class_name"]))
    if not names:
        raise ThresholdFileError("table: no aggregate rows (class_id -1) to choose the global T from")
    overall = names[0] if overall is None else overall
    g_T, g_score = _best(agg[agg["class_name"] == overall], objective)
    if g_T is None:
        raise ThresholdFileError(f"table: the aggregate {overall!r} has no GT box (objective NaN at every T)")
    cls_rows = df[df["class_id"] >= 0]
    ids: list[int] = []
    cnames: list[str] = []
    Ts: list[float] = []
    scores: list[float | None] = []
    sources: list[str] = []
    n_gt: list[int] = []
    for cid, sub in cls_rows.groupby("class_id", sort=True):
        T, score = _best(sub, objective)
        n = int(sub["n_gt"].iloc[0])
        use = T is not None and n >= min_gt
        ids.append(int(cid))
        cnames.append(str(sub["class_name"].iloc[0]))
        n_gt.append(n)
        Ts.append(T if use and T is not None else g_T)
        scores.append(score)
        sources.append("class" if use else "global")
    grid = sorted(float(t) for t in df["threshold"].unique())
    return ThresholdCalibration(
        ids, cnames, Ts, scores, sources, n_gt, g_T, g_score, objective, mode, grid, dict(meta or {})
    )


def _best(sub: pd.DataFrame, metric: str) -> tuple[float | None, float | None]:
    sub = sub.dropna(subset=[metric]).sort_values("threshold", kind="stable")
    if sub.empty:
        return None, None
    row = sub.loc[sub[metric].idxmax()]
    return float(row["threshold"]), float(row[metric])
