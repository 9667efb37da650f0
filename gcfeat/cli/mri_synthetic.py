"""`python -m gcfeat.data.mri_synthetic` / `gcfeat mri-synth`: write a synthetic MRI / CT dataset
in a real file format with a planted, known cause of the label (:mod:`gcfeat.data.mri_synthetic`
holds the generators)."""

from __future__ import annotations

import argparse

from gcfeat.data.mri_synthetic import write_alzheimer, write_organ3d, write_prostate

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.data.mri_synthetic",
        description="Write a synthetic MRI/CT dataset in a real file format with a planted, "
        "known cause of the label (and its ground-truth mask).",
    )
    p.add_argument("--task", required=True, choices=("organ3d", "prostate", "alzheimer"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--n",
        type=int,
        default=None,
        help="size: organ3d training volumes (val/test = n/6, n/3), prostate cases, "
        "alzheimer training rows (test = n/4)",
    )
    p.add_argument("--size", type=int, default=28, help="organ3d side: 28 or 64 (default 28)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.task == "organ3d":
        n = a.n or 330
        path = write_organ3d(
            a.out, n_train=n, n_val=max(n // 6, 11), n_test=max(n // 3, 11), size=a.size, seed=a.seed
        )
    elif a.task == "prostate":
        path = write_prostate(a.out, n_cases=a.n or 40, seed=a.seed)
    else:
        n = a.n or 400
        path = write_alzheimer(a.out, n_train=n, n_test=max(n // 4, 4), seed=a.seed)
    print(f"wrote {a.task} synthetic data to {path}")
    return 0
