"""The main job on the embedded default: `scripts/demo` (or `python -m gcfeat.demo`).

Stages, each printed with its time:

1. **data**     synthetic surgical scenes written in the MICCAI 2018 layout (`<out>/data`);
2. **train**    multi-label classifier from scratch, validation mAP + per-class AP;
3. **tune**     the threshold study on the validation split (box IoU vs T, best T);
4. **bbox**     one validation frame: heatmap + predicted and ground-truth boxes (PNG);
5. **extract**  M1 / M2 / M3 features of the validation split into one HDF5 file;
6. **export**   the captioning and interaction exports (:mod:`gcfeat.io.exports`);
7. **report**   `<out>/report.md` and `<out>/summary.json`.

The defaults are sized to finish in about 6 minutes on 2 CPU cores: 128x160 frames (layer4
is then 4x5 cells, so boxes are coarser than at the original 256x320), 10 videos x 150 frames
(1,200 train / 300 val), ResNet18 for 5 epochs of AdamW with a one-cycle schedule. ResNet50, the
product's default classifier, needs about 4,800 image passes (4 epochs) to pass 0.9 mAP here and
trains about 3x slower per image on a CPU: ``--arch resnet50 --epochs 4 --batch-size 16 --lr 1e-3``
takes about 15 minutes on 2 cores. ``--size 256x320`` is the original resolution (4x the pixels).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

DEFAULT_OUT = "runs/demo"
DEFAULT_CHECKPOINT_DIR = "checkpoints"


def stage(name: str):
    """Print a stage header and return a function that prints its elapsed time."""
    t0 = time.perf_counter()
    print(f"\n=== {name} ===", flush=True)

    def done() -> float:
        dt = time.perf_counter() - t0
        print(f"--- {name}: {dt:.1f} s", flush=True)
        return dt

    return done


def _dataset_matches(root: Path, videos: int, frames: int, size: tuple[int, int], seed: int) -> bool:
    meta = root / "dataset.json"
    if not meta.exists():
        return False
    try:
        d = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False
    return (d.get("layout") == "miccai18" and d.get("seed") == seed
            and list(d.get("size", [])) == list(size)
            and len(d.get("videos", [])) == videos and d.get("frames_per_video") == frames
            and (root / "seq_1" / "xml").is_dir())        # older data: no scene graphs


def run_demo(out: str | Path = DEFAULT_OUT, *, videos: int = 10, frames: int = 150,
             size: Sequence[int] = (128, 160), arch: str = "resnet18", epochs: int = 5,
             batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
             checkpoint_dir: str | Path = DEFAULT_CHECKPOINT_DIR, methods: Sequence[str] = ("m1", "m2", "m3"),
             thresholds: str = "0.05:0.95:0.05", device: str = "cpu", skip_train: bool = False,
             workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Run every stage; returns the summary that is also written to ``<out>/summary.json``."""
    import torch

    from gcfeat.data import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD, TISSUE, build_dataset
    from gcfeat.data.synthetic import write_miccai18
    from gcfeat.extract.pipeline import extract_dataset
    from gcfeat.io.exports import export_captioning, export_interaction
    from gcfeat.io import FeatureFile
    from gcfeat.models import build_classifier, load_checkpoint
    from gcfeat.training import fit
    from gcfeat.tune import format_summary, run_tuning, write_outputs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = (int(size[0]), int(size[1]))
    data = out / "data"
    ckpt_dir = Path(checkpoint_dir)
    name = f"demo_{arch}"
    checkpoint = ckpt_dir / f"{name}_best.pt"
    summary: dict[str, Any] = {"out": str(out), "data": str(data), "checkpoint": str(checkpoint),
                               "size": list(size), "arch": arch, "epochs": epochs, "seed": seed,
                               "seconds": {}}
    t_all = time.perf_counter()
    torch.manual_seed(seed)

    # 1. data ------------------------------------------------------------------------------
    done = stage("1/7 data: synthetic surgical scenes, MICCAI 2018 layout")
    if _dataset_matches(data, videos, frames, size, seed):
        print(f"reusing {data} (same videos, frames, size and seed)")
    else:
        if data.exists():  # the demo's own folder: stale sequences of another run would be loaded
            import shutil

            print(f"{data} holds another configuration: rewriting it")
            shutil.rmtree(data)
        write_miccai18(data, num_videos=videos, num_frames=frames, size=size, seed=seed,
                       progress=progress)
    norm = dict(mean=SURGICAL_MEAN, std=SURGICAL_STD)
    train_set = build_dataset(data, layout="miccai18", split="train", size=size, **norm)
    val_set = build_dataset(data, layout="miccai18", split="val", size=size, **norm)
    print(f"{data}: {len(train_set)} train frames, {len(val_set)} val frames at {size[0]}x{size[1]}")
    summary.update(train_frames=len(train_set), val_frames=len(val_set))
    summary["seconds"]["data"] = done()

    # 2. train -----------------------------------------------------------------------------
    done = stage(f"2/7 train: {arch} multi-label classifier, {epochs} epochs")
    if skip_train and checkpoint.exists():
        print(f"--skip-train: reusing {checkpoint}")
    else:
        model = build_classifier(arch, num_classes=len(SURGICAL_CLASSES))
        fit(model, train_set, val_set, epochs=epochs, batch_size=batch_size, lr=lr,
                     optimizer="adamw", schedule="onecycle", weight_decay=1e-4,
                     num_workers=workers, device=device, seed=seed, out_dir=ckpt_dir,
                     name=name, classes=list(SURGICAL_CLASSES), arch=arch, input_size=size,
                     mean=SURGICAL_MEAN, std=SURGICAL_STD, augment_flip=True,
                     meta={"data": str(data), "demo": True}, log_csv=out / "train_log.csv",
                     progress=progress)
        summary["train_log"] = str(out / "train_log.csv")
    model, info = load_checkpoint(checkpoint, map_location=device)
    model.eval()
    meta = dict(info.meta or {})
    summary["val_mAP"] = meta.get("best_mAP")
    summary["best_epoch"] = meta.get("epoch")
    summary["per_class_ap"] = meta.get("per_class_AP")
    print(f"best validation mAP {summary['val_mAP']:.3f} (epoch {summary['best_epoch']}), "
          f"checkpoint {checkpoint}")
    summary["seconds"]["train"] = done()

    # 3. tune ------------------------------------------------------------------------------
    done = stage("3/7 tune: box quality against ground truth as T varies (val split)")
    tune_dir = out / "tune"
    tuning = run_tuning(data, checkpoint, thresholds, split="val", out=tune_dir,
                        device=device, progress=progress)
    rec = tuning.recommendation
    print(format_summary(tuning.table, rec))
    overall = rec.get("overall", {})
    summary["best_threshold"] = overall.get("threshold")
    summary["best_mean_iou"] = overall.get("mean_iou")
    summary["tune_dir"] = str(tune_dir)
    summary["seconds"]["tune"] = done()
    threshold = float(summary["best_threshold"] if summary["best_threshold"] is not None else 0.3)

    # 4. bbox figure -----------------------------------------------------------------------
    done = stage("4/7 bbox: one frame, one class (heatmap + boxes figure)")
    from gcfeat import bbox

    labels = val_set.labels if hasattr(val_set, "labels") else None
    bidx, tclass = 0, 0
    if labels is not None:  # a frame with an instrument, so the figure shows something
        import numpy as np

        inst = np.asarray(labels)[:, :TISSUE]
        rows = np.nonzero(inst.sum(1) > 0)[0]
        if len(rows):
            bidx = int(rows[len(rows) // 2])
            tclass = int(np.nonzero(inst[bidx])[0][0])
    figure = out / f"bbox_{bidx}_{SURGICAL_CLASSES[tclass]}.png"
    bbox.main(["--bidx", str(bidx), "--tclass", str(tclass), "--threshold", f"{threshold:g}",
               "--data", str(data), "--checkpoint", str(checkpoint), "--device", device,
               "--out", str(figure)])
    summary["bbox_figure"] = str(figure)
    summary["seconds"]["bbox"] = done()

    # 5. extract ---------------------------------------------------------------------------
    done = stage(f"5/7 extract: {', '.join(methods)} features of the val split -> HDF5")
    features = out / "features.h5"
    if features.exists():
        features.unlink()  # the demo's settings may differ from the last run's
    # 512-d vectors as the original; ResNet18/34's layer2 has 128 channels, so (512, 1, 1)
    # cannot pool it: use the (32, 4, 4) layout there (also 512-d).
    layout = (512, 1, 1) if arch == "resnet50" else (32, 4, 4)
    stats = extract_dataset(val_set, model, info, methods=list(methods), threshold=threshold,
                            layout=layout,
                            out=str(features), batch_size=16, device=device, num_workers=workers,
                            progress=progress, checkpoint_sha256=_sha256(checkpoint))
    with FeatureFile(features) as ff:
        print(ff.summary())
        rows = {m: int(sum(len(v.rows(m)["label"]) for v in ff if m in v.methods)) for m in ff.methods}
    print(f"{stats.get('frames_per_s', 0):.1f} frames/s end to end (decode, CAM, boxes, features, write)")
    summary["features"] = str(features)
    summary["feature_rows"] = rows
    summary["extract_frames_per_s"] = stats.get("frames_per_s")
    summary["seconds"]["extract"] = done()

    # 6. export ----------------------------------------------------------------------------
    done = stage("6/7 export: captioning (M2, tissue first) and interaction inputs")
    cap_dir, int_dir = out / "captioning", out / "interaction"
    cap = export_captioning(str(features), "m2" if "m2" in methods else methods[0], str(cap_dir),
                            progress=progress, data=data)
    print(cap.summary())
    inter = export_interaction(str(features), str(int_dir), methods, progress=progress, data=data)
    print(inter.summary())
    summary["captioning"] = str(cap_dir)
    summary["interaction"] = str(int_dir)
    summary["exports"] = {"captioning": {"frames": cap.frames, "train": cap.train, "val": cap.val,
                                         "skipped_no_caption": cap.skipped_no_caption},
                          "interaction": {"frames": inter.frames, "edges": inter.edges,
                                          "skipped_few_nodes": inter.skipped_few_nodes,
                                          "skipped_no_xml": inter.skipped_no_xml}}
    summary["seconds"]["export"] = done()

    # 7. report ----------------------------------------------------------------------------
    done = stage("7/7 report")
    summary["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    report = out / "report.md"
    report.write_text(_report_markdown(summary, tuning.table, rec, list(SURGICAL_CLASSES)))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
    summary["seconds"]["report"] = done()
    _print_where(summary, report)
    return summary


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _jsonable(o):
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def _report_markdown(s: dict, table, rec: dict, classes: list[str]) -> str:
    lines = ["# gcfeat demo report", "",
             f"- data: `{s['data']}` ({s['train_frames']} train / {s['val_frames']} val frames, "
             f"{s['size'][0]}x{s['size'][1]})",
             f"- model: {s['arch']}, {s['epochs']} epochs, checkpoint `{s['checkpoint']}`",
             f"- validation mAP (classes with a positive): **{s['val_mAP']:.3f}**",
             f"- best threshold T = **{s['best_threshold']}**, mean IoU (instruments, Grad-CAM "
             f"layer4) = **{s['best_mean_iou']:.3f}**" if s.get("best_mean_iou") is not None else
             "- threshold study: no ground truth",
             f"- features: `{s['features']}` rows per method {s['feature_rows']}",
             *([f"- exports: captioning `{s['captioning']}` {s['exports']['captioning']}; "
                f"interaction `{s['interaction']}` {s['exports']['interaction']}"]
               if s.get("exports") else []),
             f"- figure: `{s['bbox_figure']}`; threshold plots in `{s['tune_dir']}`",
             f"- total time {s['seconds']['total']} s", ""]
    ap = s.get("per_class_ap")
    if ap:
        lines += ["## Per-class AP (validation)", "", "| class | AP |", "|---|---|"]
        for c, v in zip(classes, ap):
            lines.append(f"| {c} | {'n/a' if v is None or v != v else f'{v:.3f}'} |")
        lines.append("")
    per_class = rec.get("per_class") or {}
    if per_class:
        lines += ["## Recommended threshold per class", "", "| class | T | mean IoU |", "|---|---|---|"]
        for c, r in per_class.items():
            miou = r.get("mean_iou")
            lines.append(f"| {c} | {r.get('threshold')} | {'n/a' if miou is None else f'{miou:.3f}'} |")
        lines.append("")
    return "\n".join(lines)


def _print_where(s: dict, report: Path) -> None:
    print("\n=== where everything is ===")
    rows = [("dataset", s["data"]), ("checkpoint", s["checkpoint"]),
            ("training log", s.get("train_log", "(reused checkpoint)")),
            ("threshold study", s["tune_dir"]), ("bbox figure", s["bbox_figure"]),
            ("features (HDF5)", s["features"]), ("captioning export", s["captioning"]),
            ("interaction export", s["interaction"]),
            ("report", str(report))]
    for k, v in rows:
        print(f"  {k:<18} {v}")
    miou = s.get("best_mean_iou")
    print(f"\nvalidation mAP {s['val_mAP']:.3f} | best T {s['best_threshold']} "
          f"mean IoU {miou if miou is None else round(miou, 3)} | total {s['seconds']['total']} s")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.demo",
        description="The main job on synthetic data: generate scenes, train the classifier, "
                    "study the box threshold, draw one frame, extract features, export, report. "
                    "Defaults finish within 10 minutes on 2 CPU cores. --task organ3d|prostate|"
                    "alzheimer runs the MRI demo instead: synthetic data in the real format, "
                    "train, Grad-CAM / Score-CAM vs a random map (localisation, deletion / "
                    "insertion AUC), features of the test split into HDF5, report "
                    "(gcfeat.tasks.demo).")
    p.add_argument("--task", default="surgical",
                   choices=("surgical", "organ3d", "prostate", "alzheimer"),
                   help="demo to run (default surgical, the main job)")
    p.add_argument("--out", default=None,
                   help=f"output folder (default {DEFAULT_OUT}; MRI tasks: runs/demo_<task>)")
    p.add_argument("--videos", type=int, default=10, help="synthetic videos (default 10; seq 1 and 5 are val)")
    p.add_argument("--frames", type=int, default=150, help="frames per video (default 150)")
    p.add_argument("--size", default="128x160", help="frame size HxW (default 128x160; the original is 256x320)")
    p.add_argument("--arch", default=None,
                   help="classifier (surgical: resnet18 | resnet34 | resnet50, default resnet18: "
                        "ResNet50, the product default, needs about 3x the training time, see the "
                        "README; MRI tasks: any of the task's archs, default in "
                        "gcfeat.tasks.demo.DEMO_DEFAULTS)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 5; MRI: 4)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="training batch size (default 32; MRI: per task)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate, AdamW one-cycle (default 2e-3; MRI: per task)")
    p.add_argument("--n", type=int, default=None,
                   help="MRI tasks: synthetic training volumes / cases / images (per-task default)")
    p.add_argument("--limit", type=int, default=None,
                   help="MRI tasks: test samples for CAMs and deletion / insertion curves, a "
                        "class-balanced subset (gcfeat.evaluate.balanced_subset)")
    p.add_argument("--n-steps", type=int, default=None,
                   help="MRI tasks: deletion / insertion steps, points = steps + 1 (per-task "
                        "default: organ3d 32, prostate 64, alzheimer 129)")
    p.add_argument("--exports", type=int, default=2,
                   help="MRI tasks: test samples with CAM exports and curve figures (default 2)")
    p.add_argument("--cams", nargs="+", default=["gradcam", "scorecam"],
                   help="MRI tasks: CAM methods evaluated beside the random map "
                        "(default gradcam scorecam)")
    p.add_argument("--seed", type=int, default=0, help="seed for data and training (default 0)")
    p.add_argument("--methods", nargs="+", default=["m1", "m2", "m3"], choices=("m1", "m2", "m3"),
                   help="feature extractors (default m1 m2 m3)")
    p.add_argument("--thresholds", default="0.05:0.95:0.05", help="threshold sweep start:stop:step")
    p.add_argument("--checkpoint-dir", default=None,
                   help=f"where the checkpoint goes (default {DEFAULT_CHECKPOINT_DIR}; MRI: --out)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    p.add_argument("--skip-train", action="store_true",
                   help="reuse checkpoints/demo_<arch>_best.pt if it exists (MRI: "
                        "<checkpoint-dir>/<task>_<arch>_best.pt)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.task != "surgical":
        from gcfeat.tasks.demo import run_task_demo

        run_task_demo(args.task, args.out, n=args.n, arch=args.arch, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, limit=args.limit,
                      n_steps=args.n_steps, methods=args.cams, exports=args.exports,
                      checkpoint_dir=args.checkpoint_dir, skip_train=args.skip_train,
                      seed=args.seed, device=args.device, progress=not args.no_progress)
        return 0
    from gcfeat.data import parse_size

    arch = args.arch or "resnet18"
    if arch not in ("resnet18", "resnet34", "resnet50"):
        parser.error(f"--arch {arch!r}: the surgical demo takes resnet18, resnet34 or resnet50")
    run_demo(args.out or DEFAULT_OUT, videos=args.videos, frames=args.frames,
             size=parse_size(args.size), arch=arch,
             epochs=5 if args.epochs is None else args.epochs,
             batch_size=args.batch_size or 32, lr=args.lr or 2e-3,
             seed=args.seed, checkpoint_dir=args.checkpoint_dir or DEFAULT_CHECKPOINT_DIR,
             methods=args.methods,
             thresholds=args.thresholds, device=args.device, skip_train=args.skip_train,
             workers=args.workers, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
