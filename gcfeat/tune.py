"""`python -m gcfeat.tune`: box quality against ground truth as the threshold T moves.

One CAM pass over the split (a progress bar over frames); every batch's heatmaps are turned into
boxes at every T and scored against the ground-truth boxes (see :mod:`gcfeat.boxes.evaluate`
for the metrics). Writes, under ``--out``:

* ``tune_thresholds.csv``: tidy, one row per T x class, plus aggregate rows (``class_id`` -1,
  ``all_instruments`` for the surgical classes: every class but tissue);
* ``tune_curves.png`` (mean IoU and hit rate vs T, every class, best T starred) and one
  ``tune_<class>.png`` per class;
* ``tune_recommendation.json``: the best T per class and overall, with the settings used.

From Python (the demo does this)::

    from gcfeat.tune import run_tuning
    table, rec = run_tuning("runs/demo/data", "checkpoints/demo_resnet18_best.pt", out="runs/demo/tune")
    rec["overall"]["threshold"], rec["overall"]["mean_iou"]

MRI tasks (``--task prostate|organ3d|alzheimer``, :func:`run_task_tuning`): the ground truth of
a sample is the bounding box of its ``gt_mask`` (the planted cause: lesion, organ, ventricles);
samples whose mask is empty (a lesion-free prostate slice) are skipped, and only they get a CAM.
The CAM explains one class per sample: the true label (``--target pred``: the prediction). Its
boxes at every T are scored by :class:`gcfeat.boxes.evaluate.ThresholdSweep` (2D and 3D boxes
alike), so the metrics read:

* ``mean_iou``: per sample the best IoU of any of its boxes with the GT box (``--mode
  components``, the default: the best component; ``--mode largest``: the one largest box), 0
  when no box survives; mean over samples. ``hit_rate``: fraction with IoU >= 0.5;
  ``precision`` / ``recall``: one-to-one matching at IoU 0.5 (extra components lower precision);
* ``pointing_game``: the heatmap's arg-max lies inside the GT **mask** (``pointing_game_box``:
  inside the GT box, the surgical definition);
* ``boxes_per_frame``: mean boxes per sample.

Rows group the samples by the explained class (``n_frames`` = its samples); the aggregate row
``all`` pools every sample.

    from gcfeat.tune import run_task_tuning
    table, rec = run_task_tuning("organ3d", "runs/demo_organ3d/data", "ck.pt", "0.1:0.9:0.1")
"""
from __future__ import annotations

from gcfeat.errors import GcfeatError
from gcfeat.io.paths import writable_dir

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

from gcfeat.cli import apply_task_options

DEFAULT_DATA = "runs/demo/data"
DEFAULT_CHECKPOINT = "checkpoints/demo_resnet18_best.pt"
DEFAULT_OUT = "runs/demo/tune"
#: ``--method`` names -> gcfeat.cam method names.
METHOD_NAMES = {"gradcam": "gradcam", "gradcampp": "gradcam++", "gradcam++": "gradcam++",
                "xgradcam": "xgradcam", "hirescam": "hirescam", "layercam": "layercam",
                "eigencam": "eigencam", "scorecam": "scorecam", "cam": "cam"}


class TuneError(GcfeatError):
    """A user-caused problem with the tuning / bbox command's inputs."""


class TuningResult(NamedTuple):
    """What :func:`run_tuning` returns: the tidy table and the recommendation dict."""

    table: "object"  # pandas.DataFrame
    recommendation: dict


# --------------------------------------------------------------------------------------------
# shared by gcfeat.bbox and gcfeat.tune


def load_model(checkpoint: str | Path, device: str = "cpu"):
    """``(model, info)`` in eval mode on ``device``; a missing file says how to make one."""
    path = Path(checkpoint)
    if not path.exists():
        raise TuneError(f"checkpoint {path}: no such file; run scripts/demo first (it trains "
                        f"{DEFAULT_CHECKPOINT}) or pass --checkpoint PATH")
    from gcfeat.models import load_checkpoint

    model, info = load_checkpoint(path, map_location=device)
    return model.eval(), info


def load_dataset(data: str | Path, info, *, layout: str = "auto", split: str = "val"):
    """The Dataset of ``split`` at the checkpoint's input size and normalisation."""
    path = Path(data)
    if not path.exists():
        raise TuneError(f"data {path}: no such folder; run scripts/demo first (it writes "
                        f"{DEFAULT_DATA}) or pass --data DIR")
    from gcfeat.data import SURGICAL_MEAN, SURGICAL_STD, build_dataset

    return build_dataset(path, layout=layout, split=split, size=tuple(info.input_size or (256, 320)),
                         mean=tuple(info.mean or SURGICAL_MEAN), std=tuple(info.std or SURGICAL_STD))


def make_cam(model, method: str = "gradcam", layer: str = "layer4"):
    """A gcfeat.cam method instance on ``model.<layer>`` (``--method`` / ``--layer``)."""
    from gcfeat.cam import get_method

    key = METHOD_NAMES.get(method.lower())
    if key is None:
        raise TuneError(f"--method {method!r}: expected one of {sorted(METHOD_NAMES)}")
    try:
        target = model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise TuneError(f"--layer {layer!r}: the model has no such module; top-level modules: {names}") from None
    return get_method(key)(model, target_layers=[target])


def class_modes_for(classes: Sequence[str]) -> dict[int, str]:
    """The surgical default: the tissue class gets one union box (as the original)."""
    return {i: "union" for i, name in enumerate(classes) if name == "tissue"}


def aggregate_for(classes: Sequence[str]) -> dict[str, list[int]]:
    """``all_instruments`` (every class but tissue) when there is a tissue class, else ``all``."""
    if "tissue" in classes:
        return {"all_instruments": [i for i, n in enumerate(classes) if n != "tissue"]}
    return {"all": list(range(len(classes)))}


def cam_batch(cam, images, device: str = "cpu"):
    """``(heatmap (B, K, H, W), probs (B, K))`` from one CAM pass over a normalised batch."""
    import torch

    res = cam.explain(images.to(device))
    return res.heatmap, torch.sigmoid(res.logits.float())


# --------------------------------------------------------------------------------------------


def run_tuning(
    data: str | Path = DEFAULT_DATA,
    checkpoint: str | Path = DEFAULT_CHECKPOINT,
    thresholds: str | Sequence[float] = "0.05:0.95:0.05",
    *,
    split: str = "val",
    layout: str = "auto",
    out: str | Path | None = None,
    batch_size: int = 8,
    method: str = "gradcam",
    layer: str = "layer4",
    pred_threshold: float = 0.5,
    mode: str = "components",
    min_area: float = 25,
    metric: str = "mean_iou",
    device: str = "cpu",
    num_workers: int = 0,
    max_frames: int | None = None,
    progress: bool | None = None,
) -> TuningResult:
    """The threshold study: one CAM pass, boxes at every T, metrics against ground truth.

    Args:
        data: dataset folder (MICCAI 2018 or Cholec80 layout with ground-truth boxes).
        checkpoint: gcfeat checkpoint (classes, input size and normalisation come from it).
        thresholds: ``"start:stop:step"`` (stop included), ``"a,b,c"`` or a list.
        split: dataset split; layout: ``"auto"``, ``"miccai18"`` or ``"cholec80"``.
        out: folder for the CSV, PNGs and JSON (None: write nothing).
        batch_size, num_workers, device: the CAM pass.
        method, layer: CAM method (``--method`` names) and target module.
        pred_threshold: classes with sigmoid score above it get boxes (as the original).
        mode, min_area: as :func:`gcfeat.boxes.heatmap_to_boxes`; tissue always uses ``union``.
        metric: what "best" means for the recommendation.
        max_frames: evaluate only the first N frames (quick looks).
        progress: tqdm bar (None: only on a terminal).

    Returns:
        ``TuningResult(table, recommendation)``: the tidy DataFrame and
        ``{"metric", "per_class", "overall", "settings", "files"}``.
    """
    from tqdm.auto import tqdm

    from gcfeat.boxes.evaluate import ThresholdSweep, parse_thresholds, recommend_thresholds
    from gcfeat.data import make_loader

    ts = parse_thresholds(thresholds)
    if out is not None:
        writable_dir(out, create=False)     # a file or a read-only folder: said now
    model, info = load_model(checkpoint, device)
    classes = list(info.classes)
    dataset = load_dataset(data, info, layout=layout, split=split)
    from gcfeat.data import SURGICAL_CLASSES
    from gcfeat.models import check_dataset_classes

    check_dataset_classes(classes, getattr(dataset, "classes", SURGICAL_CLASSES), checkpoint,
                          data, "tune")
    try:
        n_total = len(dataset)
    except TypeError:  # an iterable dataset without a length
        n_total = None
    if max_frames is not None:
        n_total = int(max_frames) if n_total is None else min(n_total, int(max_frames))
    if n_total == 0:
        raise TuneError(f"data {data}: split {split!r} has no frames")
    cam = make_cam(model, method, layer)
    sweep = ThresholdSweep(ts, range(len(classes)), class_names=classes, mode=mode,
                           class_modes=class_modes_for(classes), min_area=min_area,
                           pred_threshold=pred_threshold, aggregate=aggregate_for(classes))
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    disable = None if progress or progress is None else True  # None: only on a terminal
    with tqdm(total=n_total, unit="frame", desc="tune (CAM + sweep)", disable=disable) as bar:
        for batch in loader:
            if "gt_boxes" not in batch:
                raise TuneError(f"data {data}: the {split!r} frames carry no ground-truth boxes; "
                                "expected groundtruth/<video>/*.json or gt_bbox/seq_N.txt files")
            images, gt_boxes, gt_labels = batch["image"], batch["gt_boxes"], batch["gt_labels"]
            if max_frames is not None:
                keep = max(0, int(max_frames) - sweep.n_frames)
                images, gt_boxes, gt_labels = images[:keep], gt_boxes[:keep], gt_labels[:keep]
                if keep == 0:
                    break
            heat, probs = cam_batch(cam, images, device)
            sweep.update(heat, probs, gt_boxes, gt_labels)
            bar.update(len(gt_boxes))
    if sweep.n_frames == 0:
        raise TuneError(f"data {data}: no frames in split {split!r}")
    table = sweep.result()
    rec = recommend_thresholds(table, metric)
    rec["settings"] = dict(data=str(data), checkpoint=str(checkpoint), split=split, method=method,
                           layer=layer, pred_threshold=pred_threshold, mode=mode,
                           min_area=min_area, thresholds=ts, frames=sweep.n_frames,
                           arch=info.arch, classes=classes)
    rec["files"] = {}
    if out is not None:
        rec["files"] = write_outputs(table, rec, out)
    return TuningResult(table, rec)


def write_outputs(table, rec: dict, out: str | Path) -> dict[str, str]:
    """CSV, PNG curves (overview + one per class) and the JSON recommendation under ``out``."""
    from gcfeat.viz.plots import plot_class_curves, plot_threshold_curves

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": str(out / "tune_thresholds.csv")}
    table.to_csv(files["csv"], index=False, float_format="%.6g")
    s = rec.get("settings", {})
    title = f"{s.get('method', '')} {s.get('layer', '')}, {s.get('frames', '?')} frames ({s.get('split', '')})"
    files["curves"] = str(plot_threshold_curves(table, out / "tune_curves.png", title=title))
    files["class_curves"] = [str(p) for p in plot_class_curves(table, out)]
    files["json"] = str(out / "tune_recommendation.json")
    rec = dict(rec, files=files)
    Path(files["json"]).write_text(json.dumps(rec, indent=2, default=float))
    return files


def format_summary(table, rec: dict) -> str:
    """The printed summary: aggregate metrics per T, then the best T per class and overall."""
    metric = rec["metric"]
    agg = table[table["class_id"] < 0]
    lines = []
    if len(agg):
        name = agg["class_name"].iloc[0]
        lines.append(f"{name} by threshold:")
        lines.append(f"  {'T':>5} {'mIoU':>6} {'hit@.5':>6} {'prec':>6} {'recall':>6} {'point':>6} {'box/fr':>6}")
        for _, r in agg[agg["class_name"] == name].iterrows():
            lines.append(f"  {r.threshold:5.2f} {r.mean_iou:6.3f} {r.hit_rate:6.3f} {r.precision:6.3f} "
                         f"{r.recall:6.3f} {r.pointing_game:6.3f} {r.boxes_per_frame:6.2f}")
    lines.append(f"best T per class (by {metric}):")
    lines.append(f"  {'class':<26} {'T':>5} {'mIoU':>6} {'hit@.5':>6} {'prec':>6} {'recall':>6} {'n_gt':>5}")
    n_gt = table.drop_duplicates("class_name").set_index("class_name")["n_gt"]
    for name, r in rec["per_class"].items():
        f = lambda v: float("nan") if v is None else v  # noqa: E731
        lines.append(f"  {name:<26} {r['threshold']:5.2f} {f(r['mean_iou']):6.3f} {f(r['hit_rate']):6.3f} "
                     f"{f(r['precision']):6.3f} {f(r['recall']):6.3f} {int(n_gt.get(name, 0)):5d}")
    ov = rec.get("overall")
    if ov:
        lines.append(f"recommended T overall ({ov['name']}, by {metric}): {ov['threshold']:.2f} "
                     f"(mean IoU {ov['mean_iou']:.3f}, hit rate {ov['hit_rate']:.3f})")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# MRI tasks (--task prostate | organ3d | alzheimer); shared by gcfeat.bbox and gcfeat.tune

#: Image channel shown under the heatmap (prostate: T2W of [gland, ADC, T2W]; others: 0).
DISPLAY_CHANNEL = {"prostate": 2}


def task_demo_paths(task: str) -> dict[str, str]:
    """What ``scripts/demo --task <task>`` writes: ``{"data", "checkpoint", "out"}`` (defaults)."""
    from gcfeat.tasks.demo import DEMO_DEFAULTS

    root = f"runs/demo_{task}"
    arch = DEMO_DEFAULTS.get(task, {}).get("arch", "model")
    return {"data": f"{root}/data", "checkpoint": f"{root}/{task}_{arch}_best.pt", "out": root}


def load_task_model(task, checkpoint: str | Path, device: str = "cpu"):
    """``(model, info)`` of a task checkpoint (:mod:`gcfeat.tasks.train`), eval mode, on
    ``device``; a missing file says how to make one."""
    path = Path(checkpoint)
    if not path.is_file():
        raise TuneError(f"checkpoint {path}: no such file; run `scripts/demo --task {task.name}` "
                        f"(or python -m gcfeat.train --task {task.name}) first or pass "
                        "--checkpoint PATH")
    model, info = task.load_checkpoint(path, map_location=device)
    return model.to(device).eval(), info


def load_task_dataset(task, data: str | Path, info: dict, split: str = "test"):
    """The task's Dataset of ``split``; 2D tasks at the checkpoint's input size."""
    path = Path(data)
    if not path.exists():
        raise TuneError(f"data {path}: no such file or folder; run `scripts/demo --task "
                        f"{task.name}` first or pass --data DIR")
    kw = {}
    size = info.get("input_size") if isinstance(info, dict) else None
    if task.spatial_dims == 2 and size:
        kw["size"] = int(size[-1])
    return task.build_dataset(path, split, **kw)


def make_task_cam(model, task, method: str = "gradcam", layer: str | None = None):
    """A gcfeat.cam method on ``task.target_layer(model)`` (or ``model.<layer>``)."""
    from gcfeat.cam import get_method

    key = METHOD_NAMES.get(method.lower())
    if key is None:
        raise TuneError(f"--method {method!r}: expected one of {sorted(METHOD_NAMES)}")
    target = task.target_layer(model, layer)
    kw = {"progress": False} if key == "scorecam" else {}
    return get_method(key)(model, target_layers=[target], **kw)


def task_cam_batch(cam, images, classes, device: str = "cpu"):
    """One CAM pass of a single-label task, one class per image.

    Args:
        images: ``(B, C, *S)``; classes: ``(B,)`` int64 class per image or ``"argmax"``.

    Returns:
        ``heatmap (B, *S)`` in [0, 1], ``probs (B, K)`` (softmax), ``classes (B,)`` explained.
    """
    import torch

    x = images.to(device)
    sel = classes if isinstance(classes, str) else torch.as_tensor(classes).reshape(-1, 1).to(device)
    res = cam.explain(x, sel)
    cls = res.classes.reshape(len(x), -1)[:, 0]
    return res.heatmap[:, 0], res.logits.float().softmax(1), cls


def mask_boxes(mask):
    """Bounding box of every mask, batched.

    Args:
        mask: ``(B, *S)`` bool (2D or 3D).

    Returns:
        ``boxes (B, 2d)`` float32, exclusive end, in box column order (2D ``x1, y1, x2, y2``;
        3D ``z1, y1, x1, z2, y2, x2``; zeros for an empty mask) and ``present (B,)`` bool.
    """
    import torch

    m = mask.bool()
    d = m.ndim - 1
    lo, hi = [], []
    for ax in range(1, d + 1):  # project on each axis (2 or 3 of them), all samples at once
        others = [a for a in range(1, d + 1) if a != ax]
        line = m.amax(dim=others) if others else m  # (B, S_ax)
        idx = torch.arange(m.shape[ax], device=m.device)
        lo.append(torch.where(line, idx, m.shape[ax]).amin(1))
        hi.append(torch.where(line, idx, -1).amax(1) + 1)
    order = [1, 0] if d == 2 else [0, 1, 2]  # array axes (y, x) -> box columns (x, y)
    boxes = torch.stack([lo[j] for j in order] + [hi[j] for j in order], 1).float()
    present = m.flatten(1).any(1)
    return torch.where(present[:, None], boxes, torch.zeros_like(boxes)), present


def run_task_tuning(
    task: str,
    data: str | Path | None = None,
    checkpoint: str | Path | None = None,
    thresholds: str | Sequence[float] = "0.05:0.95:0.05",
    *,
    split: str = "test",
    limit: int | None = None,
    target: str = "true",
    out: str | Path | None = None,
    batch_size: int = 8,
    method: str = "gradcam",
    layer: str | None = None,
    mode: str = "components",
    min_area: float = 25,
    metric: str = "mean_iou",
    device: str = "cpu",
    progress: bool | None = None,
) -> TuningResult:
    """The threshold study of an MRI task (metrics in the module docstring).

    Args:
        task: ``prostate``, ``organ3d`` or ``alzheimer``.
        data, checkpoint: dataset and task checkpoint (default: what ``scripts/demo --task``
            writes).
        thresholds: ``"start:stop:step"`` (stop included), ``"a,b,c"`` or a list.
        split: dataset split; limit: N samples of it, class-balanced
            (:func:`gcfeat.evaluate.balanced_subset`, seed 0).
        target: ``"true"`` (the label) or ``"pred"`` (the prediction): the class explained.
        out: folder for the CSV, PNGs and JSON (None: write nothing).
        batch_size, device: the CAM pass; method, layer: CAM method and target module (default
            the task's target layer).
        mode, min_area: as :func:`gcfeat.boxes.heatmap_to_boxes` (area = pixels or voxels).
        metric: what "best" means for the recommendation.

    Returns:
        ``TuningResult(table, recommendation)`` as :func:`run_tuning`; the aggregate is ``all``.
    """
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    from gcfeat.boxes.evaluate import ThresholdSweep, parse_thresholds, recommend_thresholds
    from gcfeat.evaluate import balanced_subset, pointing_game
    from gcfeat.tasks import get_task
    from gcfeat.tasks.train import collate

    t = get_task(task)
    if t.name == "surgical":
        raise TuneError("run_task_tuning: --task surgical tunes with run_tuning (box ground truth)")
    if target not in ("true", "pred"):
        raise TuneError(f"--target {target!r}: expected 'true' or 'pred'")
    paths = task_demo_paths(t.name)
    data = paths["data"] if data is None else data
    checkpoint = paths["checkpoint"] if checkpoint is None else checkpoint
    ts = parse_thresholds(thresholds)
    if out is not None:
        writable_dir(out, create=False)     # a file or a read-only folder: said now
    model, info = load_task_model(t, checkpoint, device)
    ds = load_task_dataset(t, data, info, split)
    if limit is None:
        chosen = list(range(len(ds)))
    else:   # class-balanced as gcfeat.evaluate's --limit: the first N can all be lesion-free
        labels = getattr(ds, "labels", None)
        if labels is None or len(labels) != len(ds):
            labels = [int(ds[i]["label"]) for i in range(len(ds))]
        chosen = balanced_subset(torch.as_tensor(labels), int(limit), seed=0).tolist()
    n = len(chosen)
    if n <= 0:
        raise TuneError(f"data {data}: split {split!r} has no samples (or --limit {limit})")
    cam = make_task_cam(model, t, method, layer)
    K = t.num_classes
    classes = list(t.classes)
    sweep = ThresholdSweep(ts, range(K), class_names=classes, mode=mode, min_area=min_area,
                           pred_threshold=0.5, aggregate={"all": list(range(K))})
    point_hits = torch.zeros(K, dtype=torch.int64)
    per_class = torch.zeros(K, dtype=torch.int64)
    seen = 0
    loader = DataLoader(Subset(ds, chosen), batch_size=batch_size, shuffle=False,
                        collate_fn=collate)
    disable = None if progress or progress is None else True
    with tqdm(total=n, unit="sample", desc=f"tune {t.name} (CAM + sweep)", disable=disable) as bar:
        for batch in loader:
            gt = batch.get("gt_mask")
            if not torch.is_tensor(gt):
                raise TuneError(f"data {data}: the {split!r} samples carry no ground-truth masks "
                                f"(gt_mask); expected the mask files the {t.name} synthetic "
                                "writer puts beside the data")
            seen += len(gt)
            bar.update(len(gt))
            has = gt.flatten(1).any(1)
            if not bool(has.any()):
                continue
            mask = gt[has].to(device)
            cls = batch["label"][has] if target == "true" else "argmax"
            heat, _, cls = task_cam_batch(cam, batch["image"][has], cls, device)
            b = len(heat)
            # the explained map in its class's channel, the others empty: probs one-hot, so
            # only that channel gets boxes and the sweep groups rows by the explained class
            full = heat.new_zeros((b, K, *heat.shape[1:]))
            full[torch.arange(b, device=heat.device), cls] = heat
            onehot = torch.nn.functional.one_hot(cls, K).float()
            gt_box, _ = mask_boxes(mask)
            sweep.update(full, onehot, list(gt_box[:, None].cpu()), list(cls[:, None].cpu()))
            hit = pointing_game(heat, mask).cpu()
            c = cls.cpu()
            point_hits += torch.bincount(c, weights=hit.double(), minlength=K).long()
            per_class += torch.bincount(c, minlength=K)
    if sweep.n_frames == 0:
        raise TuneError(f"data {data}: none of the {seen} {split!r} samples has a ground-truth "
                        "mask (gt_mask is empty everywhere); nothing to score")
    table = _mask_metrics(sweep.result(), point_hits.numpy(), per_class.numpy())
    rec = recommend_thresholds(table, metric, overall="all")
    rec["settings"] = dict(task=t.name, data=str(data), checkpoint=str(checkpoint), split=split,
                           method=method, layer=layer or "task default", target=target,
                           mode=mode, min_area=min_area, thresholds=ts, frames=sweep.n_frames,
                           samples=seen, samples_without_gt=seen - sweep.n_frames,
                           selection="all" if limit is None else
                           f"balanced_subset(limit={limit}, seed=0)",
                           arch=info.get("arch"), classes=classes)
    rec["files"] = {}
    if out is not None:
        rec["files"] = write_outputs(table, rec, out)
    return TuningResult(table, rec)


def _mask_metrics(table, point_hits, per_class):
    """The sweep table with the MRI definitions: ``pointing_game`` from the GT mask (the sweep's
    box-based value kept as ``pointing_game_box``), per-class ``n_frames`` / ``boxes_per_frame``
    over the samples of that class (the sweep divides by all samples)."""
    import numpy as np

    table = table.copy()
    at = list(table.columns).index("pointing_game")
    table.insert(at + 1, "pointing_game_box", table["pointing_game"])
    cls = table["class_id"].to_numpy()
    per = np.where(cls >= 0, per_class[np.clip(cls, 0, None)], per_class.sum())
    hits = np.where(cls >= 0, point_hits[np.clip(cls, 0, None)], point_hits.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        table["pointing_game"] = np.where(per > 0, hits / np.maximum(per, 1), np.nan)
        table["boxes_per_frame"] = np.where(per > 0, table["n_pred"] / np.maximum(per, 1), np.nan)
    table["n_frames"] = per
    return table


#: ``{dest: default}`` per side of ``python -m gcfeat.tune`` (see :func:`apply_task_options`).
_COMMON = {"thresholds": "0.05:0.95:0.05", "batch_size": 8, "method": "gradcam",
           "mode": "components", "min_area": 25, "metric": "mean_iou", "device": "cpu",
           "limit": None}
TUNE_SURGICAL = {"data": DEFAULT_DATA, "checkpoint": DEFAULT_CHECKPOINT, "out": DEFAULT_OUT,
                 "split": "val", "layer": "layer4", **_COMMON, "layout": "auto",
                 "num_workers": 0, "pred_threshold": 0.5, "max_frames": None}
TUNE_MRI = {"data": lambda t: task_demo_paths(t)["data"],
            "checkpoint": lambda t: task_demo_paths(t)["checkpoint"],
            "out": lambda t: task_demo_paths(t)["out"] + "/tune",
            "split": "test", "layer": None, **_COMMON, "target": "true"}


def build_parser() -> argparse.ArgumentParser:
    from gcfeat.tasks import TASK_NAMES

    S = argparse.SUPPRESS  # defaults depend on --task: filled by apply_task_options
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.tune",
        description="Threshold study: CAM boxes vs ground-truth boxes for every threshold T and "
                    "class (mean IoU, hit rate at IoU 0.5, box precision/recall, pointing game, "
                    "boxes per frame). The CAM pass runs once; writes a CSV, PNG curves and the "
                    "recommended T per class and overall (JSON). --task surgical (default): "
                    "ground-truth boxes of the MICCAI 2018 / Cholec80 layouts, boxes for every "
                    "predicted class. --task prostate|organ3d|alzheimer: the ground truth is the "
                    "box around each sample's gt_mask (lesion / organ / ventricles; samples "
                    "without one are skipped), one CAM per sample (the true class, or --target "
                    "pred), 3D boxes for organ3d; pointing game = arg-max inside the mask.",
        epilog="Options of one side only give an error with the other side's --task.")
    p.add_argument("--task", default="surgical", choices=TASK_NAMES,
                   help="surgical (default) or an MRI task")
    g = p.add_argument_group("all tasks")
    g.add_argument("--data", default=S,
                   help=f"dataset folder (default: surgical {DEFAULT_DATA}; MRI "
                        "runs/demo_<task>/data, what scripts/demo --task writes)")
    g.add_argument("--checkpoint", default=S,
                   help=f"classifier checkpoint (default: surgical {DEFAULT_CHECKPOINT}; MRI "
                        "runs/demo_<task>/<task>_<demo arch>_best.pt)")
    g.add_argument("--split", default=S, help="split to evaluate (default: surgical val, MRI test)")
    g.add_argument("--thresholds", default=S,
                   help="start:stop:step (stop included) or a comma list (default 0.05:0.95:0.05)")
    g.add_argument("--out", default=S,
                   help=f"output folder (default: surgical {DEFAULT_OUT}; MRI runs/demo_<task>/tune)")
    g.add_argument("--batch-size", type=int, default=S, help="images per CAM batch (default 8)")
    g.add_argument("--method", default=S, choices=sorted(METHOD_NAMES),
                   help="CAM method (default gradcam)")
    g.add_argument("--layer", default=S,
                   help="target module of the model (default: surgical layer4; MRI the task's "
                        "target layer: layer4[-1] / last_conv)")
    g.add_argument("--mode", default=S, choices=("components", "largest", "union"),
                   help="box mode (default components; surgical: tissue always gets one union "
                        "box; MRI: mean IoU takes a sample's best component)")
    g.add_argument("--min-area", type=float, default=S,
                   help="drop boxes with area (pixels or voxels) <= this (default 25)")
    g.add_argument("--metric", default=S,
                   choices=("mean_iou", "hit_rate", "precision", "recall", "f1", "pointing_game"),
                   help="what the recommended T maximises (default mean_iou)")
    g.add_argument("--limit", type=int, default=S,
                   help="surgical: only the first N frames; MRI: N samples, class-balanced "
                        "(as gcfeat.evaluate --limit)")
    g.add_argument("--device", default=S, help="torch device (default cpu)")
    s = p.add_argument_group("surgical only")
    s.add_argument("--layout", default=S, choices=("auto", "miccai18", "cholec80"),
                   help="dataset layout (default: detected)")
    s.add_argument("--num-workers", type=int, default=S, help="data loader workers (default 0)")
    s.add_argument("--pred-threshold", type=float, default=S,
                   help="classes whose sigmoid score exceeds this get boxes (default 0.5)")
    s.add_argument("--max-frames", type=int, default=S, help="only the first N frames (= --limit)")
    m = p.add_argument_group("MRI tasks only (prostate, organ3d, alzheimer)")
    m.add_argument("--target", default=S, choices=("true", "pred"),
                   help="class whose CAM is scored: the true label (default) or the prediction")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed ``python -m gcfeat.tune`` arguments with the ``--task``'s defaults filled in."""
    p = build_parser()
    args = p.parse_args(argv)
    apply_task_options(p, args, TUNE_SURGICAL, TUNE_MRI)
    if args.task == "surgical" and args.limit is not None:
        if args.max_frames is not None and args.max_frames != args.limit:
            p.error(f"--limit {args.limit} and --max-frames {args.max_frames}: give one")
        args.max_frames = args.limit
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.task == "surgical":
            table, rec = run_tuning(
                args.data, args.checkpoint, args.thresholds, split=args.split, layout=args.layout,
                out=args.out, batch_size=args.batch_size, method=args.method, layer=args.layer,
                pred_threshold=args.pred_threshold, mode=args.mode, min_area=args.min_area,
                metric=args.metric, device=args.device, num_workers=args.num_workers,
                max_frames=args.max_frames)
        else:
            table, rec = run_task_tuning(
                args.task, args.data, args.checkpoint, args.thresholds, split=args.split,
                limit=args.limit, target=args.target, out=args.out, batch_size=args.batch_size,
                method=args.method, layer=args.layer, mode=args.mode, min_area=args.min_area,
                metric=args.metric, device=args.device)
    except ValueError as e:  # user-caused: bad path, checkpoint, data, argument
        print(f"gcfeat.tune: error: {e}", file=sys.stderr)
        return 2
    if args.task != "surgical":
        st = rec["settings"]
        print(f"{args.task}: {st['frames']} of {st['samples']} {st['split']!r} samples have a "
              f"ground-truth mask (the others are skipped); CAM of the "
              f"{'true' if st['target'] == 'true' else 'predicted'} class")
    print(format_summary(table, rec))
    files = rec["files"]
    print(f"wrote {files['csv']}, {files['curves']} (+{len(files['class_curves'])} per-class plots), {files['json']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
