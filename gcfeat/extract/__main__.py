"""``python -m gcfeat.extract``: bulk object-level feature dump of a dataset to HDF5.

Example::

    python -m gcfeat.extract --data data/cholec80 --checkpoint runs/best.pt \\
        --methods m2 m3 --threshold 0.3 --out feats.h5 --fps 1 --batch-size 32 --device cuda
    torchrun --nproc_per_node 4 -m gcfeat.extract ... --out feats.h5     # shards videos

The file layout is documented in :mod:`gcfeat.io.features`; rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .pooling import parse_layout
from .roi import AREA_THRESHOLDS


def _size(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected HxW such as 224x224") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.extract",
        description="Dump object-level features of every frame of a dataset to one HDF5 file: "
                    "one CAM pass per batch, boxes from the heatmaps, then the chosen "
                    "extractors (m1: crop + re-forward, m2: ROI align on layer2/3/4, m3: "
                    "heatmap-weighted pooling). Resumable; runs under torchrun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data and model")
    d.add_argument("--data", required=True, help="dataset folder (MICCAI 2018 or Cholec80 layout)")
    d.add_argument("--layout", default="auto", choices=("auto", "miccai18", "cholec80"),
                   help="dataset layout")
    d.add_argument("--split", default="all", choices=("train", "val", "all"),
                   help="which part of the dataset")
    d.add_argument("--checkpoint", required=True, help="classifier checkpoint (gcfeat or original)")
    d.add_argument("--fps", type=float, default=1.0,
                   help="Cholec80: frames per second to extract (labels are at 1 fps)")
    m = p.add_argument_group("features")
    m.add_argument("--methods", nargs="+", default=["m2", "m3"], choices=("m1", "m2", "m3"),
                   help="extractors")
    m.add_argument("--threshold", type=float, default=0.3, help="box / mask threshold T")
    m.add_argument("--pred-threshold", type=float, default=0.5,
                   help="sigmoid score a class needs to get a heatmap, boxes and an m3 row")
    m.add_argument("--min-area", type=float, default=25, help="boxes of area <= this are dropped")
    m.add_argument("--pooling", default="auto",
                   help="feature layout P0xP1xP2 (512x1x1, 128x2x2, 32x4x4) or 'raw'; auto "
                        "(default): 512x1x1 for ResNet50, 32x4x4 for ResNet18/34 (their layer2 "
                        "has 128 channels), both 512-d")
    m.add_argument("--weighting", default="heat", choices=("heat", "mask"),
                   help="m3: weight positions by heat (inside the mask) or by the binary mask")
    m.add_argument("--crop-size", type=_size, default=(224, 224), help="m1: crop size HxW")
    m.add_argument("--crop-batch-size", type=int, default=64, help="m1: crops per forward")
    m.add_argument("--area-thresholds", type=float, nargs=2, default=list(AREA_THRESHOLDS),
                   metavar=("T2", "T3"),
                   help="m2: box area (256x320-frame pixels, scaled to the input size) below "
                        "which layer2 / layer3 is used; above: layer4")
    m.add_argument("--single-layer", choices=("layer2", "layer3", "layer4"), default=None,
                   help="m2: use this map for every box")
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="output HDF5 file (resumed when it exists)")
    r.add_argument("--batch-size", type=int, default=32, help="frames per batch")
    r.add_argument("--workers", type=int, default=2, help="DataLoader decoding workers")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (torchrun: cuda:LOCAL_RANK)")
    r.add_argument("--amp", choices=("bf16",), default=None, help="autocast dtype")
    r.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    r.add_argument("--compression", choices=("gzip", "lzf"), default=None,
                   help="compress the file when the run completes")
    r.add_argument("--no-resume", action="store_true",
                   help="refuse to touch an existing --out instead of resuming it")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from gcfeat.data import build_dataset
    from gcfeat.models import load_checkpoint

    from .pipeline import dist_env, extract_distributed, file_sha256

    try:
        layout = "auto" if args.pooling == "auto" else parse_layout(args.pooling)
    except ValueError as e:
        raise SystemExit(f"error: --pooling: {e}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: CUDA is not available here")
    try:
        model, info = load_checkpoint(args.checkpoint)
        if layout == "auto":  # 512-d either way; (512, 1, 1) cannot pool a 128-channel layer2
            layout = (512, 1, 1) if info.arch == "resnet50" else (32, 4, 4)
        size = tuple(info.input_size) if info.input_size else (256, 320)
        kw = dict(mean=info.mean, std=info.std) if info.mean else {}
        layout_name = args.layout
        if layout_name == "auto":
            from gcfeat.data import detect_layout
            layout_name = detect_layout(args.data)
        if layout_name == "cholec80":
            kw["fps"] = args.fps
        dataset = build_dataset(args.data, layout_name, split=args.split, size=size,
                                with_gt=False, **kw)
        if info.input_size is None:
            info.input_size = size
        rank, world, _ = dist_env()
        stats = extract_distributed(
            dataset, model, info, args.out, device=args.device, compression=args.compression,
            methods=args.methods, threshold=args.threshold, batch_size=args.batch_size,
            fps=args.fps if layout_name == "cholec80" else None, num_workers=args.workers,
            resume=not args.no_resume, progress=not args.no_progress,
            pred_threshold=args.pred_threshold, layout=layout, weighting=args.weighting,
            crop_size=args.crop_size, crop_batch_size=args.crop_batch_size,
            area_thresholds=args.area_thresholds, single_layer=args.single_layer,
            min_area=args.min_area, amp=args.amp, channels_last=args.channels_last,
            checkpoint_sha256=file_sha256(args.checkpoint))
    except ValueError as e:          # user-caused: bad data folder, checkpoint, settings
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = ", ".join(f"{m}: {n}" for m, n in stats["rows"].items())
    prefix = f"[rank {rank}] " if world > 1 else ""
    print(f"{prefix}{stats['frames']} frames extracted ({stats['skipped']} already done), "
          f"{stats['frames_per_s']:.1f} frames/s; rows {rows} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
