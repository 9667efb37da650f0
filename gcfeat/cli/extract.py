"""``python -m gcfeat.extract``: bulk object-level feature dump of a dataset to HDF5.

Example::

    python -m gcfeat.extract --data data/cholec80 --checkpoint runs/best.pt \\
        --methods m2 m3 --threshold 0.3 --out feats.h5 --fps 1 --batch-size 32 --device cuda
    torchrun --nproc_per_node 4 -m gcfeat.extract ... --out feats.h5     # shards videos
    python -m gcfeat.extract --task organ3d --data data/organ3d \
        --checkpoint checkpoints/organ3d_resnet3d_18_slim_best.pt --methods m1 m2 m3 --out o.h5

The file layout is documented in :mod:`gcfeat.io.features`; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from gcfeat import config
from gcfeat.cli.common import add_debug, debugging, run
from gcfeat.extract.pooling import parse_layout
from gcfeat.extract.roi import AREA_THRESHOLDS
from gcfeat.tasks import TASK_NAMES
from gcfeat.workflows.extract import extract


def _size(text: str):
    try:
        size = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        size = ()
    if len(size) not in (2, 3) or min(size) < 1:
        raise argparse.ArgumentTypeError(
            f"got {text!r}, expected HxW such as 224x224 (volumes: DxHxW such as 28x28x28)"
        )
    return size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.extract",
        description="Dump object-level features of every frame of a dataset to one HDF5 file: "
        "one CAM pass per batch, boxes from the heatmaps, then the chosen "
        "extractors (m1: crop + re-forward, m2: ROI align on layer2/3/4, m3: "
        "heatmap-weighted pooling). Resumable; runs under torchrun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = p.add_argument_group("data and model")
    d.add_argument(
        "--task",
        default="surgical",
        choices=TASK_NAMES,
        help="surgical (multi-label frames) or an MRI task (single-label: each "
        "image's top class gets the heatmap, boxes and the m3 row; organ3d "
        "boxes are 3D: z1, y1, x1, z2, y2, x2)",
    )
    d.add_argument(
        "--data",
        required=True,
        help="dataset folder (surgical: MICCAI 2018 or Cholec80 layout; MRI: the "
        "task's folder, organ3d also an .npz)",
    )
    d.add_argument(
        "--layout", default="auto", choices=("auto", "miccai18", "cholec80"), help="surgical dataset layout"
    )
    d.add_argument(
        "--split",
        default="all",
        choices=("train", "val", "test", "all"),
        help="which part of the dataset (test: MRI tasks)",
    )
    d.add_argument(
        "--checkpoint",
        required=True,
        help="classifier checkpoint (surgical: gcfeat or original; MRI: from gcfeat.tasks.train)",
    )
    d.add_argument(
        "--fps", type=float, default=1.0, help="Cholec80: frames per second to extract (labels are at 1 fps)"
    )
    m = p.add_argument_group("features")
    m.add_argument(
        "--methods", nargs="+", default=["m2", "m3"], choices=("m1", "m2", "m3"), help="extractors"
    )
    m.add_argument("--threshold", type=float, default=config.BOX_THRESHOLD, help="box / mask threshold T")
    m.add_argument(
        "--thresholds",
        default=None,
        metavar="FILE",
        help="per-class box T from a thresholds JSON file (thresholds.json written by "
        "`gcfeat tune --calibrate-split val --score-split test`) for the boxes "
        "of m1 / m2; m3 keeps --threshold; the file's box maps are used unless "
        "--box-maps says otherwise (then an error)",
    )
    m.add_argument(
        "--box-maps",
        default=None,
        choices=("cam", "fused"),
        help="maps the boxes of m1 / m2 are cut from: cam (the target layer's "
        "heatmap, default) or fused (product of the layer2..layer4 maps: one "
        "backward more per batch); m2 / m3 keep their maps",
    )
    m.add_argument(
        "--pred-threshold",
        type=float,
        default=config.PRED_THRESHOLD,
        help="sigmoid score a class needs to get a heatmap, boxes and an m3 row "
        "(multi-label; single-label tasks use each image's top class)",
    )
    m.add_argument(
        "--boxes",
        default="cam",
        choices=("cam", "gt"),
        help="boxes of m1 / m2: from the heatmaps, or the dataset's annotated "
        "boxes (MICCAI 2018 gt_bbox / the synthetic ground truth)",
    )
    m.add_argument(
        "--min-area", type=float, default=config.MIN_AREA, help="boxes of area <= this are dropped"
    )
    m.add_argument(
        "--pooling",
        default="auto",
        help="feature layout P0xP1xP2 (512x1x1, 128x2x2, 32x4x4) or 'raw'; auto "
        "(default): 512x1x1 for ResNet50, 32x4x4 for ResNet18/34 (their layer2 "
        "has 128 channels) and any backbone whose levels' channels 32 divides "
        "(ConvNeXt-T 192/384/768), all 512-d; otherwise P0x4x4 with P0 the "
        "largest power of two (<= 32) dividing every level's channels "
        "(EfficientNet-B0 40/112/1280, MobileNetV3-L 40/112/960: 8x4x4, "
        "128-d); 'raw' keeps each map's channels",
    )
    m.add_argument(
        "--weighting",
        default="heat",
        choices=("heat", "mask"),
        help="m3: weight positions by heat (inside the mask) or by the binary mask",
    )
    m.add_argument(
        "--crop-size",
        type=_size,
        default=None,
        help="m1: crop size HxW (volumes DxHxW); default 224x224 for surgical, the task's input size for MRI",
    )
    m.add_argument("--crop-batch-size", type=int, default=64, help="m1: crops per forward")
    m.add_argument(
        "--area-thresholds",
        type=float,
        nargs=2,
        default=list(AREA_THRESHOLDS),
        metavar=("T2", "T3"),
        help="m2: box area (256x320-frame pixels, scaled to the input size) below "
        "which layer2 / layer3 is used; above: layer4",
    )
    m.add_argument(
        "--single-layer",
        default=None,
        metavar="LEVEL",
        help="m2: use this map for every box (layer2, layer3, layer4, last_conv, or one of --levels)",
    )
    m.add_argument(
        "--levels",
        nargs="+",
        default=None,
        metavar="MODULE",
        help="feature maps by module name, finest first, the last one is the CAM "
        "target (e.g. features.5 features.6 features.7); default: found by "
        "stride 8 / 16 / 32 (ResNets layer2..layer4, ConvNeXt / EfficientNet "
        "features.3 / .5 / .7, a ViT its last block's norm)",
    )
    m.add_argument(
        "--recipe",
        default="default",
        choices=("default", "paper"),
        help="default: gcfeat's corrected rules; paper: the original scripts' "
        "features (per-frame BatchNorm maps for m2/m3, their extraction "
        "normalisation, PIL resizing, RETR_LIST contours, m1 stretched uint8 "
        "crops without normalisation, m2 rounded slices, spatial-first "
        "flattening, m3 broadcast group means with the binary mask; surgical "
        "task only; see the README's recipe table)",
    )
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="output HDF5 file (resumed when it exists)")
    r.add_argument("--batch-size", type=int, default=32, help="frames per batch")
    r.add_argument("--workers", type=int, default=2, help="DataLoader decoding workers")
    r.add_argument("--device", default=config.DEVICE, help="cpu, cuda, cuda:1 (torchrun: cuda:LOCAL_RANK)")
    r.add_argument("--amp", choices=("bf16",), default=None, help="autocast dtype")
    r.add_argument(
        "--channels-last",
        action="store_true",
        help="channels-last memory format (2D models; faster on CPU and GPU)",
    )
    r.add_argument(
        "--no-fold-bn",
        action="store_true",
        help="run the model as loaded instead of an inference copy with the batch "
        "norms folded into the convs (same numbers up to float rounding)",
    )
    r.add_argument(
        "--compression",
        choices=("gzip", "lzf"),
        default=None,
        help="compress the file when the run completes",
    )
    r.add_argument(
        "--no-resume", action="store_true", help="refuse to touch an existing --out instead of resuming it"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return add_debug(p)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        layout = "auto" if args.pooling == "auto" else parse_layout(args.pooling)
    except ValueError as e:
        print(f"error: --pooling: {e}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: CUDA is not available here", file=sys.stderr)
        return 2
    return run(lambda: _extract(args, layout), debugging(args))


def _extract(args: argparse.Namespace, layout) -> int:
    r = extract(
        args.task,
        args.data,
        args.checkpoint,
        args.out,
        split=args.split,
        data_layout=args.layout,
        fps=args.fps,
        boxes=args.boxes,
        crop_size=args.crop_size,
        device=args.device,
        compression=args.compression,
        methods=args.methods,
        threshold=args.threshold,
        batch_size=args.batch_size,
        num_workers=args.workers,
        resume=not args.no_resume,
        progress=not args.no_progress,
        pred_threshold=args.pred_threshold,
        layout=layout,
        weighting=args.weighting,
        crop_batch_size=args.crop_batch_size,
        area_thresholds=args.area_thresholds,
        single_layer=args.single_layer,
        min_area=args.min_area,
        amp=args.amp,
        channels_last=args.channels_last,
        fold_bn=not args.no_fold_bn,
        recipe=args.recipe,
        thresholds_file=args.thresholds,
        box_maps=args.box_maps,
        levels=args.levels,
    )
    stats = r.stats
    rows = ", ".join(f"{m}: {n}" for m, n in stats["rows"].items())
    prefix = f"[rank {r.rank}] " if r.world > 1 else ""
    print(
        f"{prefix}{stats['frames']} frames extracted ({stats['skipped']} already done), "
        f"{stats['frames_per_s']:.1f} frames/s; rows {rows} -> {args.out}"
    )
    return 0
