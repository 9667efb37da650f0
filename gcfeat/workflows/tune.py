"""The threshold study (`gcfeat tune`, CLI :mod:`gcfeat.cli.tune`): box quality against ground
truth as the threshold T moves. :func:`tune` runs it for any task.

One CAM pass over the split (a progress bar over frames); every batch's heatmaps are turned into
boxes at every T and scored against the ground-truth boxes (see :mod:`gcfeat.boxes.evaluate`
for the metrics). Writes, under ``--out``:

* ``tune_thresholds.csv``: tidy, one row per T x class, plus aggregate rows (``class_id`` -1,
  ``all_instruments`` for the surgical classes: every class but tissue);
* ``tune_curves.png`` (mean IoU and hit rate vs T, every class, best T starred) and one
  ``tune_<class>.png`` per class;
* ``tune_recommendation.json``: the best T per class and overall, with the settings used.

From Python (the demo does this)::

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

    table, rec = run_task_tuning("organ3d", "runs/demo_organ3d/data", "ck.pt", "0.1:0.9:0.1")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from gcfeat import config
from gcfeat.boxes.evaluate import ThresholdSweep, parse_thresholds, recommend_thresholds
from gcfeat.boxes.masks import mask_boxes
from gcfeat.cam import get_method
from gcfeat.config import METHOD_NAMES
from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, build_dataset, make_loader
from gcfeat.data.subsets import balanced_subset
from gcfeat.errors import GcfeatError
from gcfeat.io.paths import writable_dir
from gcfeat.metrics.pointing import pointing_game
from gcfeat.models import check_dataset_classes, find_levels, load_checkpoint
from gcfeat.models.levels import probe_shape
from gcfeat.tasks import Task, get_task
from gcfeat.training.single_label import collate
from gcfeat.viz.plots import plot_class_curves, plot_threshold_curves

DEFAULT_DATA = "runs/demo/data"
DEFAULT_CHECKPOINT = "checkpoints/demo_resnet18_best.pt"
DEFAULT_OUT = "runs/demo/tune"


class TuneError(GcfeatError):
    """A user-caused problem with the tuning / bbox command's inputs."""


@dataclass
class Recommendation:
    """The best threshold per class and overall, the study's settings and the files it wrote:
    the content of ``tune_recommendation.json`` (:meth:`to_dict`). ``per_class`` maps a class
    name to its best row (``threshold``, ``mean_iou``, ``hit_rate``, ...); ``overall`` is the
    aggregate's (``name`` added), None without ground truth. ``rec["overall"]`` reads a field."""

    metric: str
    per_class: dict[str, dict[str, Any]]
    overall: dict[str, Any] | None
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key in self.__dataclass_fields__:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.__dataclass_fields__ else default

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class TuningResult:
    """What the threshold study returns: the tidy table (a pandas DataFrame, one row per
    T x class plus the aggregate rows) and the recommendation (``metric``, ``per_class``,
    ``overall``, ``settings``, ``files``: the content of ``tune_recommendation.json``).
    Unpacks as ``table, rec = result``."""

    table: Any
    recommendation: Recommendation

    def __iter__(self):
        return iter((self.table, self.recommendation))

    @property
    def best_threshold(self) -> float | None:
        """The recommended T overall (None without ground truth)."""
        return (self.recommendation.get("overall") or {}).get("threshold")


# --------------------------------------------------------------------------------------------
# shared by gcfeat.bbox and gcfeat.tune


def load_model(checkpoint: str | Path, device: str = "cpu"):
    """``(model, info)`` in eval mode on ``device``; a missing file says how to make one."""
    path = Path(checkpoint)
    if not path.exists():
        raise TuneError(
            f"checkpoint {path}: no such file; run scripts/demo first (it trains "
            f"{DEFAULT_CHECKPOINT}) or pass --checkpoint PATH"
        )
    model, info = load_checkpoint(path, map_location=device)
    return model.eval(), info


def load_dataset(data: str | Path, info, *, layout: str = "auto", split: str = "val"):
    """The Dataset of ``split`` at the checkpoint's input size and normalisation."""
    path = Path(data)
    if not path.exists():
        raise TuneError(
            f"data {path}: no such folder; run scripts/demo first (it writes "
            f"{DEFAULT_DATA}) or pass --data DIR"
        )
    return build_dataset(
        path,
        layout=layout,
        split=split,
        size=tuple(info.input_size or (256, 320)),
        mean=tuple(info.mean or SURGICAL_MEAN),
        std=tuple(info.std or SURGICAL_STD),
    )


def make_cam(
    model, method: str = "gradcam", layer: str | None = None, input_size: Sequence[int] | None = None
):
    """A gcfeat.cam method instance on ``model.<layer>`` (``--method`` / ``--layer``); ``layer``
    None: :func:`default_layer`."""
    key = METHOD_NAMES.get(method.lower())
    if key is None:
        raise TuneError(f"--method {method!r}: expected one of {sorted(METHOD_NAMES)}")
    layer = default_layer(model, input_size) if layer is None else layer
    try:
        target = model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise TuneError(
            f"--layer {layer!r}: the model has no such module; top-level modules: {names}"
        ) from None
    return get_method(key)(model, target_layers=[target])


def default_layer(model, input_size: Sequence[int] | None = None) -> str:
    """The CAM target of a box-ground-truth (surgical) run: ``layer4`` for a ResNet, else the
    model's last feature level (:func:`gcfeat.models.find_levels`, probed at ``input_size``;
    ConvNeXt / EfficientNet ``features.7``, a ViT its last block's norm); token outputs are
    reshaped by the CAM engine's automatic ``reshape_transform``."""
    shape = None if input_size is None else (probe_shape(model)[0], *input_size)
    return find_levels(model, input_shape=shape)[-1].name


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
    res = cam.explain(images.to(device))
    return res.heatmap, torch.sigmoid(res.logits.float())


# --------------------------------------------------------------------------------------------


def run_tuning(
    data: str | Path = DEFAULT_DATA,
    checkpoint: str | Path = DEFAULT_CHECKPOINT,
    thresholds: str | Sequence[float] = config.THRESHOLD_SWEEP,
    *,
    split: str = "val",
    layout: str = "auto",
    out: str | Path | None = None,
    batch_size: int = 8,
    method: str = "gradcam",
    layer: str | None = None,
    pred_threshold: float = config.PRED_THRESHOLD,
    mode: str = "components",
    min_area: float = config.MIN_AREA,
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
        method, layer: CAM method (``--method`` names) and target module (None:
            :func:`default_layer`, ``layer4`` for a ResNet).
        pred_threshold: classes with sigmoid score above it get boxes (as the original).
        mode, min_area: as :func:`gcfeat.boxes.heatmap_to_boxes`; tissue always uses ``union``.
        metric: what "best" means for the recommendation.
        max_frames: evaluate only the first N frames (quick looks).
        progress: tqdm bar (None: only on a terminal).

    Returns:
        ``TuningResult(table, recommendation)``: the tidy DataFrame and
        ``{"metric", "per_class", "overall", "settings", "files"}``.
    """
    ts = parse_thresholds(thresholds)
    if out is not None:
        writable_dir(out, create=False)  # a file or a read-only folder: said now
    model, info = load_model(checkpoint, device)
    classes = list(info.classes)
    dataset = load_dataset(data, info, layout=layout, split=split)
    check_dataset_classes(classes, getattr(dataset, "classes", SURGICAL_CLASSES), checkpoint, data, "tune")
    try:
        n_total = len(dataset)
    except TypeError:  # an iterable dataset without a length
        n_total = None
    if max_frames is not None:
        n_total = int(max_frames) if n_total is None else min(n_total, int(max_frames))
    if n_total == 0:
        raise TuneError(f"data {data}: split {split!r} has no frames")
    layer = default_layer(model, info.input_size) if layer is None else layer
    cam = make_cam(model, method, layer)
    sweep = ThresholdSweep(
        ts,
        range(len(classes)),
        class_names=classes,
        mode=mode,
        class_modes=class_modes_for(classes),
        min_area=min_area,
        pred_threshold=pred_threshold,
        aggregate=aggregate_for(classes),
    )
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    disable = None if progress or progress is None else True  # None: only on a terminal
    with tqdm(total=n_total, unit="frame", desc="tune (CAM + sweep)", disable=disable) as bar:
        for batch in loader:
            if "gt_boxes" not in batch:
                raise TuneError(
                    f"data {data}: the {split!r} frames carry no ground-truth boxes; "
                    "expected groundtruth/<video>/*.json or gt_bbox/seq_N.txt files"
                )
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
    rec = Recommendation(**recommend_thresholds(table, metric))
    rec.settings = dict(
        data=str(data),
        checkpoint=str(checkpoint),
        split=split,
        method=method,
        layer=layer,
        pred_threshold=pred_threshold,
        mode=mode,
        min_area=min_area,
        thresholds=ts,
        frames=sweep.n_frames,
        arch=info.arch,
        classes=classes,
    )
    if out is not None:
        rec.files = write_outputs(table, rec, out)
    return TuningResult(table, rec)


def write_outputs(table, rec: Recommendation | dict, out: str | Path) -> dict[str, Any]:
    """CSV, PNG curves (overview + one per class) and the JSON recommendation under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {"csv": str(out / "tune_thresholds.csv")}  # paths; class_curves a list
    table.to_csv(files["csv"], index=False, float_format="%.6g")
    s = rec.get("settings", {})
    title = (
        f"{s.get('method', '')} {s.get('layer', '')}, {s.get('frames', '?')} frames ({s.get('split', '')})"
    )
    files["curves"] = str(plot_threshold_curves(table, out / "tune_curves.png", title=title))
    files["class_curves"] = [str(p) for p in plot_class_curves(table, out)]
    files["json"] = str(out / "tune_recommendation.json")
    rec = dict(rec.to_dict() if isinstance(rec, Recommendation) else rec, files=files)
    Path(files["json"]).write_text(json.dumps(rec, indent=2, default=float))
    return files


def format_summary(table, rec: Recommendation | dict) -> str:
    """The printed summary: aggregate metrics per T, then the best T per class and overall."""
    metric = rec["metric"]
    agg = table[table["class_id"] < 0]
    lines = []
    if len(agg):
        name = agg["class_name"].iloc[0]
        lines.append(f"{name} by threshold:")
        lines.append(
            f"  {'T':>5} {'mIoU':>6} {'hit@.5':>6} {'prec':>6} {'recall':>6} {'point':>6} {'box/fr':>6}"
        )
        for _, r in agg[agg["class_name"] == name].iterrows():
            lines.append(
                f"  {r.threshold:5.2f} {r.mean_iou:6.3f} {r.hit_rate:6.3f} {r.precision:6.3f} "
                f"{r.recall:6.3f} {r.pointing_game:6.3f} {r.boxes_per_frame:6.2f}"
            )
    lines.append(f"best T per class (by {metric}):")
    lines.append(f"  {'class':<26} {'T':>5} {'mIoU':>6} {'hit@.5':>6} {'prec':>6} {'recall':>6} {'n_gt':>5}")
    n_gt = table.drop_duplicates("class_name").set_index("class_name")["n_gt"]
    for name, r in rec["per_class"].items():
        f = lambda v: float("nan") if v is None else v  # noqa: E731
        lines.append(
            f"  {name:<26} {r['threshold']:5.2f} {f(r['mean_iou']):6.3f} {f(r['hit_rate']):6.3f} "
            f"{f(r['precision']):6.3f} {f(r['recall']):6.3f} {int(n_gt.get(name, 0)):5d}"
        )
    ov = rec.get("overall")
    if ov:
        lines.append(
            f"recommended T overall ({ov['name']}, by {metric}): {ov['threshold']:.2f} "
            f"(mean IoU {ov['mean_iou']:.3f}, hit rate {ov['hit_rate']:.3f})"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# MRI tasks (--task prostate | organ3d | alzheimer); shared by gcfeat.bbox and gcfeat.tune


def task_demo_paths(task: str | Task) -> dict[str, str]:
    """What ``scripts/demo --task <task>`` writes: ``{"data", "checkpoint", "out"}`` (defaults)."""
    return get_task(task).demo_paths()


def load_task_model(task, checkpoint: str | Path, device: str = "cpu"):
    """``(model, info)`` of a task checkpoint (:meth:`gcfeat.tasks.Task.load_checkpoint`), eval mode, on
    ``device``; a missing file says how to make one."""
    path = Path(checkpoint)
    if not path.is_file():
        raise TuneError(
            f"checkpoint {path}: no such file; run `scripts/demo --task {task.name}` "
            f"(or python -m gcfeat.train --task {task.name}) first or pass "
            "--checkpoint PATH"
        )
    model, info = task.load_checkpoint(path, map_location=device)
    return model.to(device).eval(), info


def load_task_dataset(task, data: str | Path, info, split: str = "test"):
    """The task's Dataset of ``split``; 2D tasks at the checkpoint's input size."""
    path = Path(data)
    if not path.exists():
        raise TuneError(
            f"data {path}: no such file or folder; run `scripts/demo --task "
            f"{task.name}` first or pass --data DIR"
        )
    kw = {}
    size = getattr(info, "input_size", None)
    if task.spatial_dims == 2 and size:
        kw["size"] = int(size[-1])
    return task.build_dataset(path, split, **kw)


def make_task_cam(model, task, method: str = "gradcam", layer: str | None = None):
    """A gcfeat.cam method on ``task.target_layer(model)`` (or ``model.<layer>``)."""
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
    x = images.to(device)
    sel = classes if isinstance(classes, str) else torch.as_tensor(classes).reshape(-1, 1).to(device)
    res = cam.explain(x, sel)
    cls = res.classes.reshape(len(x), -1)[:, 0]
    return res.heatmap[:, 0], res.logits.float().softmax(1), cls


def run_task_tuning(
    task: str | Task,
    data: str | Path | None = None,
    checkpoint: str | Path | None = None,
    thresholds: str | Sequence[float] = config.THRESHOLD_SWEEP,
    *,
    split: str = "test",
    limit: int | None = None,
    target: str = "true",
    out: str | Path | None = None,
    batch_size: int = 8,
    method: str = "gradcam",
    layer: str | None = None,
    mode: str = "components",
    min_area: float = config.MIN_AREA,
    metric: str = "mean_iou",
    device: str = "cpu",
    progress: bool | None = None,
) -> TuningResult:
    """The threshold study of an MRI task (metrics in the module docstring).

    Args:
        task: a task whose ground truth is a mask (``prostate``, ``organ3d``, ``alzheimer``, or
            a registered :class:`~gcfeat.tasks.Task`).
        data, checkpoint: dataset and task checkpoint (default: what ``scripts/demo --task``
            writes).
        thresholds: ``"start:stop:step"`` (stop included), ``"a,b,c"`` or a list.
        split: dataset split; limit: N samples of it, class-balanced
            (:func:`gcfeat.data.subsets.balanced_subset`, seed 0).
        target: ``"true"`` (the label) or ``"pred"`` (the prediction): the class explained.
        out: folder for the CSV, PNGs and JSON (None: write nothing).
        batch_size, device: the CAM pass; method, layer: CAM method and target module (default
            the task's target layer).
        mode, min_area: as :func:`gcfeat.boxes.heatmap_to_boxes` (area = pixels or voxels).
        metric: what "best" means for the recommendation.

    Returns:
        ``TuningResult(table, recommendation)`` as :func:`run_tuning`; the aggregate is ``all``.
    """
    t = get_task(task)
    if t.ground_truth != "mask":
        raise TuneError(f"run_task_tuning: --task {t.name} tunes with run_tuning (box ground truth)")
    if target not in ("true", "pred"):
        raise TuneError(f"--target {target!r}: expected 'true' or 'pred'")
    paths = task_demo_paths(t.name)
    data = paths["data"] if data is None else data
    checkpoint = paths["checkpoint"] if checkpoint is None else checkpoint
    ts = parse_thresholds(thresholds)
    if out is not None:
        writable_dir(out, create=False)  # a file or a read-only folder: said now
    model, info = load_task_model(t, checkpoint, device)
    ds = load_task_dataset(t, data, info, split)
    if limit is None:
        chosen = list(range(len(ds)))
    else:  # class-balanced as gcfeat.evaluate's --limit: the first N can all be lesion-free
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
    sweep = ThresholdSweep(
        ts,
        range(K),
        class_names=classes,
        mode=mode,
        min_area=min_area,
        pred_threshold=config.PRED_THRESHOLD,
        aggregate={"all": list(range(K))},
    )
    point_hits = torch.zeros(K, dtype=torch.int64)
    per_class = torch.zeros(K, dtype=torch.int64)
    seen = 0
    loader = DataLoader(Subset(ds, chosen), batch_size=batch_size, shuffle=False, collate_fn=collate)
    disable = None if progress or progress is None else True
    with tqdm(total=n, unit="sample", desc=f"tune {t.name} (CAM + sweep)", disable=disable) as bar:
        for batch in loader:
            gt = batch.get("gt_mask")
            if not torch.is_tensor(gt):
                raise TuneError(
                    f"data {data}: the {split!r} samples carry no ground-truth masks "
                    f"(gt_mask); expected the mask files the {t.name} synthetic "
                    "writer puts beside the data"
                )
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
        raise TuneError(
            f"data {data}: none of the {seen} {split!r} samples has a ground-truth "
            "mask (gt_mask is empty everywhere); nothing to score"
        )
    table = _mask_metrics(sweep.result(), point_hits.numpy(), per_class.numpy())
    rec = Recommendation(**recommend_thresholds(table, metric, overall="all"))
    rec.settings = dict(
        task=t.name,
        data=str(data),
        checkpoint=str(checkpoint),
        split=split,
        method=method,
        layer=layer or "task default",
        target=target,
        mode=mode,
        min_area=min_area,
        thresholds=ts,
        frames=sweep.n_frames,
        samples=seen,
        samples_without_gt=seen - sweep.n_frames,
        selection="all" if limit is None else f"balanced_subset(limit={limit}, seed=0)",
        arch=info.get("arch"),
        classes=classes,
    )
    if out is not None:
        rec.files = write_outputs(table, rec, out)
    return TuningResult(table, rec)


def _mask_metrics(table, point_hits, per_class):
    """The sweep table with the MRI definitions: ``pointing_game`` from the GT mask (the sweep's
    box-based value kept as ``pointing_game_box``), per-class ``n_frames`` / ``boxes_per_frame``
    over the samples of that class (the sweep divides by all samples)."""
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


def tune(
    task: str | Task = "surgical",
    data: str | Path | None = None,
    checkpoint: str | Path | None = None,
    thresholds: str | Sequence[float] | None = None,
    **kwargs,
) -> TuningResult:
    """The threshold study of any task (one entry point for all of them).

    Tasks with box ground truth (surgical) run :func:`run_tuning` (boxes of every predicted
    class against the frame's GT boxes); tasks with a ``gt_mask`` run :func:`run_task_tuning`
    (one CAM per sample against the box around its mask). ``data`` / ``checkpoint`` default to
    what the task's demo writes; ``thresholds`` to :data:`gcfeat.config.THRESHOLD_SWEEP`;
    ``kwargs`` go to the function that runs.
    """
    t = get_task(task)
    thresholds = config.THRESHOLD_SWEEP if thresholds is None else thresholds
    if t.ground_truth == "boxes":
        return run_tuning(
            DEFAULT_DATA if data is None else data,
            DEFAULT_CHECKPOINT if checkpoint is None else checkpoint,
            thresholds,
            **kwargs,
        )
    return run_task_tuning(t, data, checkpoint, thresholds, **kwargs)
