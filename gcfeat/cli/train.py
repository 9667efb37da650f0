"""`python -m gcfeat.train`: train a task's classifier (``--task``, default ``surgical``).

Every task trains with the one loop, :func:`gcfeat.training.fit`. ``--task surgical``: the
multi-label surgical instrument classifier (:func:`gcfeat.workflows.train.train_surgical`,
every fit option). ``--task prostate|organ3d|alzheimer``: the single-label MRI classifiers
through :func:`gcfeat.workflows.train.train` (cross-entropy, best epoch by validation accuracy)
with the options of the same names. An option of one side given with the
other side's task is an error (exit 2), never silently ignored. Examples::

    python -m gcfeat.train --data data/demo --arch resnet50 --size 256x320 --epochs 8 \\
        --batch-size 16 --lr 1e-3 --out checkpoints --name demo_resnet50
    python -m gcfeat.train --task organ3d --data data/organ3d --synthetic \\
        --arch resnet3d_18_slim --epochs 6 --out checkpoints
"""

from __future__ import annotations

import argparse

import torch

from gcfeat.cli.common import add_debug, apply_task_options, debugging, run
from gcfeat.models.resnet import ARCHS
from gcfeat.models.zoo import ZooError, check_arch
from gcfeat.tasks import TASK_NAMES, get_task
from gcfeat.tasks.surgical import SURGICAL
from gcfeat.training import OPTIMIZERS, SCHEDULES
from gcfeat.workflows.train import surgical_datasets, train, train_surgical

#: ``{dest: default}`` of the options each side takes (see :func:`gcfeat.cli.apply_task_options`).
TRAIN_SURGICAL = {
    "data": None,
    "layout": "auto",
    "arch": "resnet50",
    "size": SURGICAL.input_size,
    "epochs": 10,
    "batch_size": 16,
    "lr": 1e-3,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "schedule": "plateau",
    "augment_flip": False,
    "dropout": 0.0,
    "weights": None,
    "mean": SURGICAL.mean,
    "std": SURGICAL.std,
    "workers": 2,
    "seed": 0,
    "out": "checkpoints",
    "name": None,
    "log": None,
    "resume": False,
    "device": "auto",
    "channels_last": False,
    "quiet": False,
    "threads": None,
}
#: MRI options, all handed to :func:`gcfeat.workflows.train.train` (None: the task's default).
TRAIN_MRI = {
    "data": None,
    "arch": None,
    "epochs": None,
    "lr": None,
    "batch_size": None,
    "optimizer": None,
    "seed": 0,
    "out": "checkpoints",
    "threads": None,
    "synthetic": False,
    "n": None,
    "balance": False,
}
#: MRI model names per task (for --help; the registry is the reference).
_MRI_ARCHS = (
    "prostate: resnet18 (default), resnet34, each with optional _nobn / _dropout "
    "suffixes (resnet18_nobn_dropout); organ3d: resnet3d_18 (default), "
    "resnet3d_18_slim; alzheimer: baseline_cnn (default) and its variants"
)


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
    S = argparse.SUPPRESS  # defaults depend on --task: filled by apply_task_options
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.train",
        description="Train a task's classifier. --task surgical (default): a ResNet multi-label "
        "instrument classifier (BCE-with-logits) on a dataset in the MICCAI 2018 or Cholec80 "
        "layout; validates every epoch (mAP over classes with a positive, per-class AP table), "
        "keeps the best epoch in OUT/NAME_best.pt and a resumable OUT/NAME_last.pt, and logs "
        "OUT/NAME_log.csv. --task prostate|organ3d|alzheimer: a single-label MRI classifier, "
        "the same run as `python -m gcfeat.tasks.train` (cross-entropy, AdamW or SGD with a "
        "cosine schedule, BatchNorm statistics recomputed each epoch, best epoch by validation "
        "accuracy in OUT/<task>_<arch>_best.pt); unset options take the task's defaults.",
        epilog="The 'surgical only' options give an error with an MRI task, the 'MRI tasks "
        "only' ones with --task surgical.",
    )
    p.add_argument("--task", default="surgical", choices=TASK_NAMES, help="surgical (default) or an MRI task")
    g = p.add_argument_group("all tasks")
    g.add_argument(
        "--data", required=True, default=S, metavar="DIR", help="dataset folder (organ3d: folder or .npz)"
    )
    g.add_argument(
        "--arch",
        default=S,
        help=f"model; surgical: {', '.join(sorted(ARCHS))} (default resnet50), any "
        f"torchvision classifier (convnext_tiny, efficientnet_b0, "
        f"mobilenet_v3_large, regnet_y_400mf, densenet121, swin_t, ...) or "
        f"timm:NAME (with timm installed), the checkpoint records how to "
        f"rebuild it; {_MRI_ARCHS}",
    )
    g.add_argument(
        "--epochs",
        type=int,
        default=S,
        help="total epochs (surgical: default 10, also when resuming; MRI: the task's default)",
    )
    g.add_argument("--batch-size", type=int, default=S, help="batch size (surgical: default 16)")
    g.add_argument("--lr", type=float, default=S, help="learning rate (surgical: default 1e-3)")
    g.add_argument(
        "--optimizer",
        default=S,
        choices=OPTIMIZERS,
        help="sgd (momentum) or adamw (surgical: default sgd; MRI: the task's, adamw)",
    )
    g.add_argument("--seed", type=int, default=S, help="seed for repeatable runs (default 0)")
    g.add_argument("--out", default=S, metavar="DIR", help="checkpoint folder (default checkpoints)")
    g.add_argument("--threads", type=int, default=S, help="torch CPU threads (default: torch's)")
    s = p.add_argument_group("surgical only")
    s.add_argument(
        "--layout",
        default=S,
        choices=("auto", "miccai18", "cholec80"),
        help="dataset layout; auto (default) detects it from the folder",
    )
    s.add_argument(
        "--size",
        type=_size,
        default=S,
        metavar="HxW",
        help="model input size, height x width (default 256x320)",
    )
    s.add_argument("--momentum", type=float, default=S, help="SGD momentum (default 0.9)")
    s.add_argument("--weight-decay", type=float, default=S, help="weight decay (default 1e-4)")
    s.add_argument(
        "--schedule",
        default=S,
        choices=SCHEDULES,
        help="cosine: to 0 over the epochs; onecycle: warm-up then cosine, per step "
        "(fastest from scratch; the demo's); plateau (default): x0.1 when val loss "
        "stalls (the original recipe)",
    )
    s.add_argument(
        "--augment-flip",
        action="store_true",
        default=S,
        help="random left-right flips of the training images",
    )
    s.add_argument(
        "--dropout",
        type=float,
        default=S,
        help="dropout before the last Linear (default 0; 0.2 in some original models)",
    )
    s.add_argument(
        "--weights",
        metavar="PTH",
        default=S,
        help="local state dict to start from (e.g. torchvision's or timm's ImageNet "
        ".pth for --arch); a head of another class count is replaced; nothing is "
        "ever downloaded",
    )
    s.add_argument(
        "--mean",
        type=_floats3,
        default=S,
        metavar="R,G,B",
        help=f"input normalisation mean (default {','.join(map(str, SURGICAL.mean))})",
    )
    s.add_argument(
        "--std",
        type=_floats3,
        default=S,
        metavar="R,G,B",
        help=f"input normalisation std (default {','.join(map(str, SURGICAL.std))})",
    )
    s.add_argument("--workers", type=int, default=S, help="DataLoader worker processes (default 2)")
    s.add_argument("--name", default=S, help="checkpoint name prefix (default: <layout>_<arch>)")
    s.add_argument("--log", default=S, metavar="CSV", help="CSV log path (default: OUT/NAME_log.csv)")
    s.add_argument(
        "--resume",
        action="store_true",
        default=S,
        help="continue from OUT/NAME_last.pt at the epoch after its last one",
    )
    s.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:1, ...")
    s.add_argument(
        "--channels-last", action="store_true", default=S, help="channels-last memory format (faster on GPUs)"
    )
    s.add_argument("--quiet", action="store_true", default=S, help="no progress bars or AP tables")
    m = p.add_argument_group("MRI tasks only (prostate, organ3d, alzheimer)")
    m.add_argument(
        "--synthetic",
        action="store_true",
        default=S,
        help="write the task's synthetic data into --data first if it is missing",
    )
    m.add_argument(
        "--n",
        type=int,
        default=S,
        help="with --synthetic: training volumes / cases / rows (task default if unset)",
    )
    m.add_argument(
        "--balance",
        action="store_true",
        default=S,
        help="prostate: subsample negative training slices to the positives' count",
    )
    return add_debug(p)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed arguments with the ``--task``'s defaults filled in; options the task does not
    take, an --arch that is not the task's, --balance outside prostate and --n without
    --synthetic exit with a usage error (2)."""
    p = build_parser()
    args = apply_task_options(p, p.parse_args(argv), TRAIN_SURGICAL, TRAIN_MRI)
    if args.task == "surgical":
        try:
            check_arch(args.arch)
        except ZooError as e:
            p.error(f"argument --arch: invalid choice: {args.arch!r} for --task surgical ({e})")
        return args
    task = get_task(args.task)
    if args.arch is not None and args.arch not in task.archs:
        p.error(
            f"argument --arch: invalid choice: {args.arch!r} for --task {task.name} "
            f"(choose from {', '.join(task.archs)})"
        )
    if args.balance and task.name != "prostate":
        p.error(f"--balance: applies to --task prostate only, not to --task {task.name}")
    if args.n is not None and not args.synthetic:
        p.error("--n: sets the size of the --synthetic data; give --synthetic too")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    job = _train_surgical if args.task == "surgical" else _train_task
    return run(lambda: job(args), debugging(args))


def _train_task(args: argparse.Namespace) -> int:
    r = train(
        args.task,
        args.data,
        arch=args.arch,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        seed=args.seed,
        out=args.out,
        balance=args.balance,
        synthetic=args.synthetic,
        n=args.n,
    )
    if r.metric == "mAP":
        print(f"best mAP {r.best_score:.4f} -> {r.checkpoint}")
    else:
        print(f"best validation accuracy {r.best_score:.4f} -> {r.checkpoint}")
    return 0


def _train_surgical(args: argparse.Namespace) -> int:
    layout, train_set, val_set = surgical_datasets(args.data, args.layout, args.size, args.mean, args.std)
    print(
        f"{args.data} ({layout}): {len(train_set)} training / {len(val_set)} validation "
        f"frames at {args.size[0]}x{args.size[1]}; {args.arch}, {args.epochs} epochs"
    )
    result = train_surgical(
        train_set,
        val_set,
        arch=args.arch,
        size=args.size,
        mean=args.mean,
        std=args.std,
        dropout=args.dropout,
        weights=args.weights,
        seed=args.seed,
        name=args.name or f"{layout}_{args.arch}",
        log=args.log,
        workers=args.workers,
        quiet=args.quiet,
        meta={"data": str(args.data), "layout": layout, "weights": args.weights},
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        weight_decay=args.weight_decay,
        augment_flip=args.augment_flip,
        momentum=args.momentum,
        device=args.device,
        out_dir=args.out,
        resume=args.resume,
        channels_last=args.channels_last,
    )
    print(f"best validation mAP {result.best_map:.4f} at epoch {result.best_epoch}/{args.epochs}")
    print(f"best checkpoint: {result.checkpoint}")
    print(f"last checkpoint (for --resume): {result.last_checkpoint}")
    print(f"training log: {result.log_csv}")
    return 0
