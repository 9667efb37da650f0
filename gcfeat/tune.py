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
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple, Sequence

DEFAULT_DATA = "runs/demo/data"
DEFAULT_CHECKPOINT = "checkpoints/demo_resnet18_best.pt"
DEFAULT_OUT = "runs/demo/tune"
#: ``--method`` names -> gcfeat.cam method names.
METHOD_NAMES = {"gradcam": "gradcam", "gradcampp": "gradcam++", "gradcam++": "gradcam++",
                "xgradcam": "xgradcam", "hirescam": "hirescam", "layercam": "layercam",
                "eigencam": "eigencam", "scorecam": "scorecam", "cam": "cam"}


class TuneError(ValueError):
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
    model, info = load_model(checkpoint, device)
    classes = list(info.classes)
    dataset = load_dataset(data, info, layout=layout, split=split)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.tune",
        description="Threshold study: CAM boxes vs ground-truth boxes for every threshold T and "
                    "class (mean IoU, hit rate at IoU 0.5, box precision/recall, pointing game, "
                    "boxes per frame). The CAM pass runs once; writes a CSV, PNG curves and the "
                    "recommended T per class and overall (JSON).")
    p.add_argument("--data", default=DEFAULT_DATA, help=f"dataset folder (default {DEFAULT_DATA})")
    p.add_argument("--layout", default="auto", choices=("auto", "miccai18", "cholec80"),
                   help="dataset layout (default: detected)")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help=f"classifier checkpoint (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--thresholds", default="0.05:0.95:0.05",
                   help="start:stop:step (stop included) or a comma list (default 0.05:0.95:0.05)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--batch-size", type=int, default=8, help="frames per CAM batch (default 8)")
    p.add_argument("--num-workers", type=int, default=0, help="data loader workers (default 0)")
    p.add_argument("--method", default="gradcam", choices=sorted(METHOD_NAMES),
                   help="CAM method (default gradcam)")
    p.add_argument("--layer", default="layer4", help="target module of the model (default layer4)")
    p.add_argument("--pred-threshold", type=float, default=0.5,
                   help="classes whose sigmoid score exceeds this get boxes (default 0.5)")
    p.add_argument("--mode", default="components", choices=("components", "largest", "union"),
                   help="instrument box mode (tissue always gets one union box; default components)")
    p.add_argument("--min-area", type=float, default=25,
                   help="drop boxes with area <= this many pixels (default 25)")
    p.add_argument("--metric", default="mean_iou",
                   choices=("mean_iou", "hit_rate", "precision", "recall", "f1", "pointing_game"),
                   help="what the recommended T maximises (default mean_iou)")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        table, rec = run_tuning(
            args.data, args.checkpoint, args.thresholds, split=args.split, layout=args.layout,
            out=args.out, batch_size=args.batch_size, method=args.method, layer=args.layer,
            pred_threshold=args.pred_threshold, mode=args.mode, min_area=args.min_area,
            metric=args.metric, device=args.device, num_workers=args.num_workers,
            max_frames=args.max_frames)
    except ValueError as e:  # user-caused: bad path, checkpoint, data, argument
        print(f"gcfeat.tune: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(table, rec))
    files = rec["files"]
    print(f"wrote {files['csv']}, {files['curves']} (+{len(files['class_curves'])} per-class plots), {files['json']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
