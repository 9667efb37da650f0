"""The threshold study as a protocol (``gcfeat tune --calibrate-split val --score-split test``):
choose T on one split, report the boxes it gives on another, beside the oracle.

The threshold study (:mod:`gcfeat.workflows.tune`) picks the T that scores best on the split it
scores: an upper bound (Choe et al., CVPR 2020, "Evaluating WSOL Right", Sec. 4). Here, for every
map source (CAM method x layer choice, and the baselines), one pass over each split feeds a
:class:`gcfeat.metrics.study.LocalizationStudy` per mode, then:

* **calibrate** on ``calibrate_split``: the global T (instruments pooled) and per-class T
  (:func:`gcfeat.boxes.calibration.calibration_from_table`; classes with fewer than ``min_gt``
  GT boxes take the global T), objective mean best IoU;
* **score** on ``score_split`` at those T: ``transfer`` (one global T, today's ``extract``),
  ``transfer_per_class`` (per-class T), and ``oracle`` (the best T on the scored split);
* **modes** ``pred`` (boxes for the classes the classifier predicts, ``probs > 0.5``: what
  ``extract`` does; a missed class scores IoU 0) and ``gt_known`` (boxes for the classes in the
  frame's GT: localisation without classification errors; WSOL's GT-known protocol).

Figures per row (instruments; tissue is left out as in the study): ``mean_iou`` and
``hit_rate`` (per GT box the best IoU with a box of its class, its rate at >= 0.5), COCO ``ap``
(AP@[.5:.95]), ``ap50``, ``ap75`` (mean over classes with GT), ``max_box_acc_v2`` (GT-known by
definition; ``transfer`` rows use the tau of each delta chosen on the calibration split, the
oracle rows the best tau on the scored split), ``pointing_game`` (the map's peak inside a GT box
of its class), ``pointing_game_tol`` (within 15 px) and ``energy_pointing_game`` (the map's
energy inside the GT boxes; both macro means over classes, threshold-free).

Map sources: ``<method>/<layer>`` for each ``--methods`` x ``--layers`` entry, where a layer is a
module name (``layer4``, ``layer3``) or ``fused`` (the product of the maps of ``layer2..layer4``,
:func:`gcfeat.cam.fusion.fuse_maps`; the rule that won the first sweep). One CAM call per method
gives every layer's map. Baselines on the first source's maps: ``otsu`` (each map cut at its
Otsu level), ``max20`` (cut at 20 % of its max: WSOL's CAM rule) (both fixed rules, scored at
T = 0, so transfer = oracle), and ``random`` (seeded maps at the first source's grid, calibrated
like a CAM).

The chosen source is the CAM source (not a baseline) with the best calibration-split mean IoU
in ``pred`` mode: chosen without looking at the scored split. Its per-class thresholds are
written as ``thresholds.json`` (:class:`~gcfeat.boxes.calibration.ThresholdCalibration`, with
``meta.box_maps`` / ``meta.method`` / ``meta.layer``) for ``extract --thresholds``.

Outputs under ``out``: ``tune_transfer.csv`` (one row per source x mode x protocol),
``tune_transfer.json`` (settings, the chosen source, the rows, per-class transferred IoU),
``thresholds.json`` (+ ``thresholds_<source>.json`` per CAM source) and ``tune_transfer.png``
(mean IoU vs T on the scored split per source, calibrated T marked; the summary bars; per-class
bars of the chosen source vs the first).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gcfeat import config
from gcfeat.boxes.calibration import ThresholdCalibration, calibration_from_table, gt_known_probs
from gcfeat.boxes.evaluate import ThresholdSweep, parse_thresholds
from gcfeat.cam import get_method
from gcfeat.cam.baselines import fraction_of_max_maps, otsu_maps, random_maps
from gcfeat.cam.fusion import fuse_maps, needed_classes, scatter_classes
from gcfeat.config import METHOD_NAMES
from gcfeat.data import make_loader
from gcfeat.metrics.localization import MaxBoxAcc
from gcfeat.metrics.study import LocalizationStudy
from gcfeat.viz.plots import plot_transfer
from gcfeat.workflows.tune import (
    TuneError,
    aggregate_for,
    class_modes_for,
    default_layer,
    load_dataset,
    load_model,
)

__all__ = ["FUSED", "BASELINES", "TransferResult", "run_transfer", "parse_source"]

#: The ``--layers`` name of the fused maps: the product of the layer2..layer4 maps.
FUSED = "fused"
FUSED_LAYERS = ("layer2", "layer3", "layer4")
FUSION = "product"
#: Baseline map sources scored beside the CAMs.
BASELINES = ("otsu", "max20", "random")
MODES = ("pred", "gt_known")
PROTOCOLS = ("transfer", "transfer_per_class", "oracle")
FIGURES = (
    "mean_iou",
    "hit_rate",
    "ap",
    "ap50",
    "ap75",
    "max_box_acc_v2",
    "pointing_game",
    "pointing_game_tol",
    "energy_pointing_game",
)


@dataclass
class TransferResult:
    """What :func:`run_transfer` returns.

    Attributes:
        table: one row per source x mode x protocol (columns: ``source``, ``method``, ``layer``,
            ``mode``, ``protocol``, ``threshold`` (NaN for per-class T), then :data:`FIGURES`).
        chosen: the CAM source chosen on the calibration split (``"gradcam/fused"``).
        calibrations: per CAM source its pred-mode :class:`ThresholdCalibration`.
        per_class: per-class transferred mean IoU (rows: class, columns: source), pred mode.
        curves: mean IoU vs T on the scored split per source (pred mode), a DataFrame.
        settings, files: as the threshold study's recommendation.
    """

    table: pd.DataFrame
    chosen: str
    calibrations: dict[str, ThresholdCalibration]
    per_class: pd.DataFrame
    curves: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def row(self, source: str, mode: str = "pred", protocol: str = "transfer") -> dict:
        """One row of :attr:`table` as a dict (KeyError when absent)."""
        t = self.table
        sel = t[(t["source"] == source) & (t["mode"] == mode) & (t["protocol"] == protocol)]
        if sel.empty:
            raise KeyError((source, mode, protocol))
        return sel.iloc[0].to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The content of ``tune_transfer.json``."""
        nan_free = lambda d: {  # noqa: E731
            k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()
        }  # strict JSON: null, not NaN
        return {
            "chosen": self.chosen,
            "settings": self.settings,
            "files": self.files,
            "rows": [nan_free(r) for r in self.table.to_dict("records")],
            "per_class_transfer_mean_iou": {s: nan_free(v) for s, v in self.per_class.to_dict().items()},
            "thresholds": {s: c.per_class for s, c in self.calibrations.items()},
        }


def parse_source(source: str) -> tuple[str, str]:
    """``"gradcam/fused"`` -> ``("gradcam", "fused")``; a bare layer means Grad-CAM."""
    method, _, layer = source.rpartition("/")
    return (method or config.CAM_METHOD), layer


class _MapMaker:
    """Per batch, the maps of every source: one CAM call per method over every layer needed."""

    def __init__(self, model, methods: Sequence[str], layers: Sequence[str], seed: int = 0):
        self.model, self.layers, self.seed = model, list(layers), seed
        need = [ly for ly in self.layers if ly != FUSED]
        if FUSED in self.layers:
            need += [ly for ly in FUSED_LAYERS if ly not in need]
        self.targets = need
        self.cams = {}
        for m in methods:
            key = METHOD_NAMES.get(m.lower())
            if key is None:
                raise TuneError(f"--methods {m!r}: expected one of {sorted(METHOD_NAMES)}")
            try:
                mods = [model.get_submodule(ly) for ly in need]
            except AttributeError:
                names = [n for n, _ in model.named_children()]
                raise TuneError(
                    f"--layers {need}: the model has no such module; top-level modules: {names}"
                ) from None
            self.cams[m] = get_method(key)(model, target_layers=mods)
        self.cam_sources = [f"{m}/{ly}" for m in methods for ly in self.layers]
        self.sources = self.cam_sources + list(BASELINES)
        self._batch = 0

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` sigmoid scores (one forward, no gradients)."""
        with torch.no_grad():
            return torch.sigmoid(self.model(images).float())

    def __call__(self, images: torch.Tensor, needed: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{source: (B, K, H, W)}`` for one normalised batch. Only the maps of ``needed``
        ``(B, K)`` bool (the predicted and the GT classes: every map a box, AP, MaxBoxAcc or
        pointing figure reads) are computed, per image (the batched backward costs one pass
        per explained class); the others are zeros, which give no box."""
        size = images.shape[2:]
        sel = needed_classes(needed)
        maps, grid = {}, None
        for m, cam in self.cams.items():
            res = cam.explain(images, sel)
            by_layer = dict(zip(self.targets, res.layer_heatmaps))
            for ly in self.layers:
                parts = [by_layer[x] for x in FUSED_LAYERS] if ly == FUSED else [by_layer[ly]]
                some = fuse_maps(parts, size, FUSION if ly == FUSED else "mean")  # (B, k, H, W)
                maps[f"{m}/{ly}"] = scatter_classes(some, sel, needed.shape[1])
                grid = grid or tuple(by_layer[ly if ly != FUSED else FUSED_LAYERS[-1]].shape[2:])
        first = maps[self.cam_sources[0]]
        maps["otsu"] = otsu_maps(first)
        maps["max20"] = fraction_of_max_maps(first, 0.2)
        maps["random"] = random_maps(
            first.shape, seed=self.seed * 100003 + self._batch, cells=grid, device=first.device
        )
        self._batch += 1
        return maps


class _BoxStudy(LocalizationStudy):
    """The study without its map-level figures (MaxBoxAccV2, PxAP, pointing games): they do
    not depend on the mode, so the GT-known study reads them from the pred study's report."""

    def _map_metrics(self, heatmaps, gt, gt_masks) -> None:
        return None


class _CalibrationStudy(LocalizationStudy):
    """The calibration split's study: the sweep and the map-level figures (MaxBoxAccV2's tau is
    chosen there), no COCO AP (nothing reads it on that split)."""

    def _on_boxes(self, t, boxes) -> None:
        return None

    def result(self) -> pd.DataFrame:
        return ThresholdSweep.result(self)


def _studies(sources, thresholds, classes, *, fixed=("otsu", "max20"), calibration=False, **kw):
    """``{(source, mode): study}``; the fixed-rule baselines at T = 0 only. The pred study
    carries the map-level figures; on the calibration split no AP is ranked."""
    out = {}
    for s in sources:
        ts = [0.0] if s in fixed else thresholds
        for mode in MODES:
            if calibration:
                cls = _CalibrationStudy if mode == "pred" else ThresholdSweep
            else:
                cls = LocalizationStudy if mode == "pred" else _BoxStudy
            out[s, mode] = cls(ts, range(len(classes)), class_names=classes, **kw)
    return out


def _run_split(
    maker: _MapMaker,
    dataset,
    studies,
    *,
    batch_size,
    num_workers,
    device,
    desc,
    progress,
    pred_threshold,
    max_frames=None,
) -> int:
    """One pass over a split: every source's maps into its studies (both modes)."""
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    n_total = len(dataset) if max_frames is None else min(len(dataset), int(max_frames))
    seen = 0
    with tqdm(
        total=n_total, unit="frame", desc=desc, disable=None if progress or progress is None else True
    ) as bar:
        for batch in loader:
            if "gt_boxes" not in batch:
                raise TuneError(f"{desc}: the frames carry no ground-truth boxes")
            keep = n_total - seen
            if keep <= 0:
                break
            images = batch["image"][:keep].to(device)
            gtb, gtl = batch["gt_boxes"][:keep], batch["gt_labels"][:keep]
            probs = maker.probs(images)
            known = gt_known_probs(gtl, range(probs.shape[1]), probs.device)
            maps = maker(images, (probs > pred_threshold) | (known > 0))
            for (s, mode), st in studies.items():
                st.update(maps[s], probs if mode == "pred" else known, gtb, gtl)
            seen += len(gtb)
            bar.update(len(gtb))
    return seen


def _instrument_mba(mba: MaxBoxAcc | None, cols: Sequence[int]) -> MaxBoxAcc | None:
    if mba is None:
        return None
    c = torch.as_tensor(list(cols))
    return MaxBoxAcc(mba.correct[c], mba.n[c], mba.deltas, mba.taus)


def _map_figures(study: LocalizationStudy, cols: Sequence[int]) -> dict[str, float]:
    """The threshold-free figures of one study, macro over ``cols`` with GT."""
    rep = study.report()
    c = torch.as_tensor(list(cols))
    mean = lambda v: float(v[~torch.isnan(v)].mean()) if (~torch.isnan(v)).any() else math.nan  # noqa: E731
    return {"pointing_game_tol": mean(rep.pointing[c]), "energy_pointing_game": mean(rep.energy[c])}


def _rows(
    source, cal_study, score_study, cal, agg_name, cols, mode, maps_cal=None, maps_score=None
) -> tuple[list[dict], pd.Series]:
    """The transfer / per-class / oracle rows of one source and mode, and the per-class
    transferred mean IoU (``maps_cal`` / ``maps_score``: the studies whose map-level figures
    count, default the same studies)."""
    score = score_study.result()
    cal_study = maps_cal or cal_study
    score_study = maps_score or score_study
    agg = score[score["class_name"] == agg_name].set_index("threshold")
    per = score[score["class_id"].isin(cols)]
    method, layer = parse_source(source) if "/" in source else (source, "")
    base = {"source": source, "method": method, "layer": layer, "mode": mode}
    mb_val = _instrument_mba(cal_study.report().max_box_acc, cols)
    mb_test = _instrument_mba(score_study.report().max_box_acc, cols)
    extra = _map_figures(score_study, cols)
    fig = lambda r: {  # noqa: E731
        k: float(r[k])
        for k in (
            "mean_iou",
            "hit_rate",
            "ap",
            "ap50",
            "ap75",  # noqa: E731
            "pointing_game",
        )
    }
    rows = []
    g = cal.global_threshold
    mba_t = math.nan
    if mb_val is not None and mb_test is not None:
        idx = mb_val.box_acc.argmax(-1)  # tau per delta chosen on calibration
        mba_t = float(mb_test.box_acc[torch.arange(len(idx)), idx].mean())
    rows.append(
        {**base, "protocol": "transfer", "threshold": g, **fig(agg.loc[g]), "max_box_acc_v2": mba_t, **extra}
    )
    T = dict(zip(cal.classes, cal.per_class))
    picked = pd.concat([sub[sub["threshold"] == T[int(cid)]] for cid, sub in per.groupby("class_id")])
    w = picked["n_gt"].to_numpy(float)
    wm = lambda v: float(np.nansum(v * w) / w[~np.isnan(v)].sum()) if w[~np.isnan(v)].sum() else math.nan  # noqa: E731
    apm = lambda v: float(np.nanmean(v[w > 0])) if (w > 0).any() else math.nan  # noqa: E731
    rows.append(
        {
            **base,
            "protocol": "transfer_per_class",
            "threshold": math.nan,
            "mean_iou": wm(picked["mean_iou"].to_numpy(float)),
            "hit_rate": wm(picked["hit_rate"].to_numpy(float)),
            "ap": apm(picked["ap"].to_numpy(float)),
            "ap50": apm(picked["ap50"].to_numpy(float)),
            "ap75": apm(picked["ap75"].to_numpy(float)),
            "pointing_game": float(agg.iloc[0]["pointing_game"]),
            "max_box_acc_v2": mba_t,
            **extra,
        }
    )
    best = agg["mean_iou"].astype(float).idxmax()
    rows.append(
        {
            **base,
            "protocol": "oracle",
            "threshold": float(best),
            **fig(agg.loc[best]),
            "max_box_acc_v2": mb_test.value if mb_test is not None else math.nan,
            **extra,
        }
    )
    per_class_iou = picked.set_index("class_name")["mean_iou"].astype(float)
    return rows, per_class_iou


def run_transfer(
    data: str | Path,
    checkpoint: str | Path,
    thresholds: str | Sequence[float] = config.THRESHOLD_SWEEP,
    *,
    calibrate_split: str = "val",
    score_split: str = "test",
    methods: Sequence[str] = ("gradcam",),
    layers: Sequence[str | None] = (None,),
    layout: str = "auto",
    out: str | Path | None = None,
    batch_size: int = 8,
    pred_threshold: float = config.PRED_THRESHOLD,
    mode: str = "components",
    min_area: float = config.MIN_AREA,
    min_gt: int = 10,
    device: str = "cpu",
    num_workers: int = 0,
    max_frames: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> TransferResult:
    """Calibrate T on ``calibrate_split``, score on ``score_split`` (module docstring).

    Args:
        data, checkpoint, layout: as :func:`gcfeat.workflows.tune.run_tuning`.
        thresholds: the T grid (``"start:stop:step"``, ``"a,b,c"`` or a list).
        calibrate_split, score_split: e.g. ``"val"`` and ``"test"`` (they must differ).
        methods: CAM methods (``--method`` names); layers: module names or ``"fused"``.
        pred_threshold, mode, min_area: box settings (tissue: one union box, as always).
        min_gt: classes with fewer calibration GT boxes take the global T.
        max_frames: the first N frames of each split (quick looks).
        seed: the random baseline's maps.

    Returns:
        :class:`TransferResult` (files written when ``out`` is given).
    """
    if calibrate_split == score_split:
        raise TuneError(
            f"--calibrate-split and --score-split are both {score_split!r}: the "
            "protocol scores on a split the thresholds were not chosen on"
        )
    ts = parse_thresholds(thresholds)
    model, info = load_model(checkpoint, device)
    classes = list(info.classes)
    agg = aggregate_for(classes)
    agg_name, cols = next(iter(agg.items()))
    # None: the model's own CAM layer (layer4 of a ResNet, else its last feature level)
    own = default_layer(model, info.input_size)
    names: list[str] = [own if lay is None else lay for lay in layers]
    maker = _MapMaker(model, list(methods), names, seed)
    kw = dict(
        mode=mode,
        class_modes=class_modes_for(classes),
        min_area=min_area,
        pred_threshold=pred_threshold,
        aggregate=agg,
    )
    runs, frames = {}, {}
    for split in (calibrate_split, score_split):
        ds = load_dataset(data, info, layout=layout, split=split)
        fixed = () if split == calibrate_split else ("otsu", "max20")
        srcs = [s for s in maker.sources if split == score_split or s not in ("otsu", "max20")]
        runs[split] = _studies(srcs, ts, classes, fixed=fixed, calibration=split == calibrate_split, **kw)
        frames[split] = _run_split(
            maker,
            ds,
            runs[split],
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            progress=progress,
            desc=f"tune {split} ({len(srcs)} map sources)",
            pred_threshold=pred_threshold,
            max_frames=max_frames,
        )
    meta = dict(checkpoint=str(checkpoint), split=calibrate_split, arch=info.arch, thresholds=ts)
    rows, per_class, cals, curves = _collect(
        maker.sources,
        maker.cam_sources,
        runs[calibrate_split],
        runs[score_split],
        agg_name,
        cols,
        min_gt,
        meta,
    )
    table = pd.DataFrame(rows)
    chosen = max(maker.cam_sources, key=lambda s: cals[s].global_score or -1.0)
    result = TransferResult(table, chosen, cals, pd.DataFrame(per_class), pd.DataFrame(curves))
    result.settings = dict(
        data=str(data),
        checkpoint=str(checkpoint),
        calibrate_split=calibrate_split,
        score_split=score_split,
        methods=list(methods),
        layers=names,
        fusion=FUSION,
        fused_layers=list(FUSED_LAYERS),
        thresholds=ts,
        pred_threshold=pred_threshold,
        mode=mode,
        min_area=min_area,
        min_gt=min_gt,
        frames=frames,
        arch=info.arch,
        classes=classes,
        aggregate=agg_name,
        objective="mean_iou",
        seed=seed,
        chosen_by=f"calibration-split ({calibrate_split}) mean IoU, pred mode",
    )
    if out is not None:
        result.files = write_transfer(result, out)
    return result


def _collect(sources, cam_sources, cal_runs, score_runs, agg_name, cols, min_gt, meta):
    """Per source and mode: the calibration (from the calibration split; the fixed-rule
    baselines from the scored one: they have one T), the rows, the per-class transferred mean
    IoU and the scored split's mean IoU curve (pred mode)."""
    rows, per_class, cals, curves = [], {}, {}, {}
    for s in sources:
        for m in MODES:
            sc = score_runs[s, m]
            if s in ("otsu", "max20"):
                cal_study, cal = sc, calibration_from_table(sc.result(), mode=m, min_gt=min_gt)
            else:
                cal_study = cal_runs[s, m]
                method, layer = parse_source(s) if "/" in s else (s, "")
                cal = calibration_from_table(
                    cal_study.result(),
                    mode=m,
                    min_gt=min_gt,
                    meta={
                        **meta,
                        "source": s,
                        "method": method,
                        "layer": layer,
                        "box_maps": _box_maps(layer),
                        "fusion": FUSION if layer == FUSED else None,
                        "mode": m,
                    },
                )
            fixed = s in ("otsu", "max20")
            maps = (score_runs[s, "pred"] if fixed else cal_runs[s, "pred"], score_runs[s, "pred"])
            r, pc = _rows(s, cal_study, sc, cal, agg_name, cols, m, *maps)
            rows += r
            if m == "pred":
                per_class[s] = pc
                res = sc.result()
                curves[s] = res[res["class_name"] == agg_name].set_index("threshold")["mean_iou"]
                if s in cam_sources or s == "random":
                    cals[s] = cal
    return rows, per_class, cals, curves


def _box_maps(layer: str) -> str:
    """The ``extract --box-maps`` value that makes the boxes of a source's layer."""
    return "fused" if layer == FUSED else ("cam" if layer == "layer4" else layer)


def write_transfer(result: TransferResult, out: str | Path) -> dict[str, str]:
    """CSV, JSON, the thresholds files and the figure under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "csv": str(out / "tune_transfer.csv"),
        "json": str(out / "tune_transfer.json"),
        "thresholds": str(out / "thresholds.json"),
    }
    result.table.to_csv(files["csv"], index=False, float_format="%.6g")
    result.calibrations[result.chosen].save(files["thresholds"])
    for s, cal in result.calibrations.items():
        if s != "random":
            files[f"thresholds_{s}"] = str(cal.save(out / f"thresholds_{s.replace('/', '_')}.json"))
    st = result.settings
    calibrated = {src: c.global_threshold for src, c in result.calibrations.items()}
    title = (
        f"T calibrated on {st.get('calibrate_split')}, scored on {st.get('score_split')} "
        f"({st.get('aggregate')}); chosen: {result.chosen}"
    )
    files["figure"] = str(
        plot_transfer(
            result.table,
            result.curves,
            result.per_class,
            calibrated,
            result.chosen,
            out / "tune_transfer.png",
            title=title,
        )
    )
    result.files = files
    Path(files["json"]).write_text(json.dumps(result.to_dict(), indent=2, default=_jsonable) + "\n")
    return files


def _jsonable(o):
    try:
        v = float(o)
    except (TypeError, ValueError):
        return str(o)
    return None if math.isnan(v) else v


def format_transfer(result: TransferResult) -> str:
    """The printed table: pred and GT-known, per source, transferred beside the oracle."""
    t = result.table
    s = result.settings
    lines = [
        f"calibrated on {s['calibrate_split']!r} ({s['frames'][s['calibrate_split']]} frames), "
        f"scored on {s['score_split']!r} ({s['frames'][s['score_split']]} frames), "
        f"{s['aggregate']}:",
        f"  {'source':<22} {'mode':<8} {'protocol':<18} {'T':>5} {'mIoU':>6} {'hit':>6} "
        f"{'AP50':>6} {'mAP':>6} {'MBAv2':>6} {'point':>6} {'energy':>6}",
    ]
    for _, r in t.iterrows():
        T = "cls" if r.threshold != r.threshold else f"{r.threshold:.2f}"
        lines.append(
            f"  {r.source:<22} {r['mode']:<8} {r.protocol:<18} {T:>5} {r.mean_iou:6.3f} "
            f"{r.hit_rate:6.3f} {r.ap50:6.3f} {r.ap:6.3f} {r.max_box_acc_v2:6.3f} "
            f"{r.pointing_game:6.3f} {r.energy_pointing_game:6.3f}"
        )
    lines.append(
        f"chosen on {s['calibrate_split']!r}: {result.chosen} (per-class T in "
        f"{result.files.get('thresholds', 'thresholds.json')})"
    )
    return "\n".join(lines)
