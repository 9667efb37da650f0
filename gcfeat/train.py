"""`python -m gcfeat.train`: train the multi-label surgical instrument classifier.

A thin layer over :func:`gcfeat.training.fit`; see ``--help``. Example::

    python -m gcfeat.train --data data/demo --arch resnet50 --size 256x320 --epochs 8 \\
        --batch-size 16 --lr 1e-3 --out checkpoints --name demo_resnet50
"""
from __future__ import annotations

import argparse
import sys

from gcfeat.data.classes import SURGICAL_CLASSES, SURGICAL_MEAN, SURGICAL_STD
from gcfeat.models.resnet import ARCHS
from gcfeat.training import OPTIMIZERS, SCHEDULES


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected H x W such as 256x320") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected two positive integers H x W such as 256x320")
    return size  # type: ignore[return-value]


def _floats3(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three comma-separated numbers") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected three comma-separated numbers (R,G,B)")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.train",
        description="Train a ResNet multi-label instrument classifier (BCE-with-logits) on a "
        "dataset in the MICCAI 2018 or Cholec80 layout. Validates every epoch (mAP over classes "
        "with a positive, per-class AP table), keeps the best epoch in OUT/NAME_best.pt and a "
        "resumable OUT/NAME_last.pt, and logs OUT/NAME_log.csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--layout", default="auto", choices=("auto", "miccai18", "cholec80"),
                   help="dataset layout; auto detects it from the folder")
    p.add_argument("--task", default="surgical", choices=("surgical",),
                   help="task (the MRI tasks train with `python -m gcfeat.tasks.train`)")
    p.add_argument("--arch", default="resnet50", choices=sorted(ARCHS), help="backbone")
    p.add_argument("--size", type=_size, default=(256, 320), metavar="HxW",
                   help="model input size, height x width")
    p.add_argument("--epochs", type=int, default=10, help="total epochs (also when resuming)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS,
                   help="sgd (momentum) or adamw")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--schedule", default="plateau", choices=SCHEDULES,
                   help="cosine: to 0 over the epochs; onecycle: warm-up then cosine, per step "
                   "(fastest from scratch; the demo's); plateau: x0.1 when val loss stalls "
                   "(the original recipe)")
    p.add_argument("--augment-flip", action="store_true",
                   help="random left-right flips of the training images")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout before the last Linear (0.2 in some original models)")
    p.add_argument("--weights", metavar="PTH", default=None,
                   help="local ImageNet state dict to start from (torchvision's .pth); "
                   "nothing is ever downloaded")
    p.add_argument("--mean", type=_floats3, default=SURGICAL_MEAN, metavar="R,G,B",
                   help="input normalisation mean")
    p.add_argument("--std", type=_floats3, default=SURGICAL_STD, metavar="R,G,B",
                   help="input normalisation std")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seed", type=int, default=0, help="seed for repeatable runs")
    p.add_argument("--out", default="checkpoints", metavar="DIR", help="checkpoint folder")
    p.add_argument("--name", default=None,
                   help="checkpoint name prefix (default: <layout>_<arch>)")
    p.add_argument("--log", default=None, metavar="CSV",
                   help="CSV log path (default: OUT/NAME_log.csv)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/NAME_last.pt at the epoch after its last one")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--channels-last", action="store_true",
                   help="channels-last memory format (faster on GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or AP tables")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here: the data and training stacks are heavy and --help should stay fast.
    from gcfeat.data import build_dataset, detect_layout
    from gcfeat.models import build_classifier
    from gcfeat.training import fit, seed_everything

    try:
        layout = detect_layout(args.data) if args.layout == "auto" else args.layout
        name = args.name or f"{layout}_{args.arch}"
        kw = dict(size=args.size, mean=args.mean, std=args.std)
        train_set = build_dataset(args.data, layout, "train", **kw)
        val_set = build_dataset(args.data, layout, "val", **kw)
        print(f"{args.data} ({layout}): {len(train_set)} training / {len(val_set)} validation "
              f"frames at {args.size[0]}x{args.size[1]}; {args.arch}, {args.epochs} epochs")
        seed_everything(args.seed)
        model = build_classifier(args.arch, num_classes=len(SURGICAL_CLASSES),
                                 dropout=args.dropout, weights=args.weights)
        result = fit(
            model, train_set, val_set,
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            optimizer=args.optimizer, schedule=args.schedule, weight_decay=args.weight_decay,
            augment_flip=args.augment_flip,
            momentum=args.momentum, num_workers=args.workers, device=args.device,
            seed=args.seed, out_dir=args.out, name=name, classes=SURGICAL_CLASSES,
            arch=args.arch, input_size=args.size, mean=args.mean, std=args.std,
            meta={"data": str(args.data), "layout": layout, "weights": args.weights},
            resume=args.resume, log_csv=args.log, progress=not args.quiet,
            verbose=not args.quiet, channels_last=args.channels_last,
        )
    except ValueError as e:  # DataError, CheckpointError, bad arguments: say what and where
        print(f"gcfeat.train: error: {e}", file=sys.stderr)
        return 2
    print(f"best validation mAP {result.best_map:.4f} at epoch {result.best_epoch}/{args.epochs}")
    print(f"best checkpoint: {result.checkpoint}")
    print(f"last checkpoint (for --resume): {result.last_checkpoint}")
    print(f"training log: {result.log_csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
