"""`python -m gcfeat.tasks.train`: train a task's classifier (the form before ``gcfeat train
--task``; same workflow, :func:`gcfeat.workflows.train.train`)."""

from __future__ import annotations

import argparse

import torch

from gcfeat.cli.common import add_debug, debugging, run
from gcfeat.tasks import TASK_NAMES
from gcfeat.workflows.train import train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.tasks.train",
        description="Train a task's classifier with the one training loop, "
        "gcfeat.training.fit (single-label MRI tasks: cross-entropy, BatchNorm "
        "recalibration, best epoch by validation accuracy; surgical: BCE, mAP).",
    )
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--data", required=True, help="dataset folder (organ3d: folder or .npz)")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="write the task's synthetic data into --data first if it is missing",
    )
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="with --synthetic: training volumes / cases / rows (task default if unset)",
    )
    p.add_argument("--arch", default=None, help="model (default: the task's default_arch)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default=None)
    p.add_argument(
        "--balance",
        action="store_true",
        help="prostate: subsample negative training slices to the positives' count",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="checkpoints", help="checkpoint folder")
    return add_debug(p)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    return run(lambda: _train(a), debugging(a))


def _train(a: argparse.Namespace) -> int:
    r = train(
        a.task,
        a.data,
        arch=a.arch,
        epochs=a.epochs,
        lr=a.lr,
        batch_size=a.batch_size,
        optimizer=a.optimizer,
        seed=a.seed,
        out=a.out,
        balance=a.balance and a.task == "prostate",
        synthetic=a.synthetic,
        n=a.n,
    )
    if r.metric == "mAP":
        print(f"best mAP {r.best_score:.4f} -> {r.checkpoint}")
    else:
        print(f"best validation accuracy {r.best_score:.4f} -> {r.checkpoint}")
    return 0
