"""`gcfeat report` / `python -m gcfeat.report`: one self-contained HTML page of a run directory
or of a feature file (the builders are :mod:`gcfeat.report`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from gcfeat.cli.common import add_debug, debugging, run
from gcfeat.report import ReportError, ReportResult, build_feature_report, build_run_report

_EPILOG = """\
two forms:
  gcfeat report RUN_DIR                 a run directory, as a demo writes it (summary.json
                                        required; tune/, eval/, features.h5, train_log.csv and
                                        bbox_*.png are shown when present) -> RUN_DIR/report.html
  gcfeat report FEATS.h5 --data DIR     any feature file: its rows per method and class, the
                                        rows a downstream model reads, and a seeded sample of
                                        --n frames drawn from the dataset DIR with the file's
                                        boxes (heatmaps too with --checkpoint)
                                        -> FEATS_report.html beside the file

examples:
  gcfeat report runs/demo                          # -> runs/demo/report.html
  gcfeat report runs/demo --max-frames 60          # a smaller gallery
  gcfeat report feats.h5 --data runs/demo/data --checkpoint checkpoints/demo_resnet18_best.pt

`python -m gcfeat.report ...` is the same command. The page opens from disk (no server, no
network); its images sit in one folder beside it (report_files/). The gallery runs one batched
Grad-CAM pass of the checkpoint over the sampled frames; in the page, frames can be filtered by
class and sorted by IoU (worst misses first). A Cholec80 dataset (videos decoded from mp4) is
read by decoding only the sampled frames.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gcfeat report",
        description="Write a self-contained HTML report (report.html + a folder of images; no "
        "server, no network) of a run directory or of a feature file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="a run directory (with summary.json) or a feature file (.h5)")
    p.add_argument(
        "--data", default=None, help="feature file: the dataset its frames come from (required for .h5)"
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint for the gallery's heatmaps (run directory: overrides the "
        "one in summary.json; feature file: optional, without it no heatmaps)",
    )
    p.add_argument(
        "--n", type=int, default=48, help="feature file: frames in the gallery, a seeded sample (default 48)"
    )
    p.add_argument(
        "--max-frames",
        type=int,
        default=300,
        help="run directory: frames in the gallery, a seeded sample of the evaluation split (default 300)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="run directory: split of the gallery (default: val for surgical runs, test for MRI runs)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--out", default=None, help="output HTML (default RUN_DIR/report.html or <feats>_report.html)"
    )
    p.add_argument("--device", default="cpu", help="torch device of the CAM pass (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return add_debug(p)


def build(args: argparse.Namespace) -> ReportResult:
    """The report ``args`` ask for: a feature file's (``.h5`` or any file) or a run's."""
    for name in ("n", "max_frames"):
        if getattr(args, name) < 1:
            raise ReportError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected >= 1")
    src = Path(args.source)
    if src.suffix.lower() in (".h5", ".hdf5") or src.is_file():
        if args.data is None:
            raise ReportError(f"{src}: a feature file needs --data DIR (the dataset its frames come from)")
        return build_feature_report(
            src,
            args.data,
            n=args.n,
            seed=args.seed,
            checkpoint=args.checkpoint,
            out=args.out,
            device=args.device,
            progress=not args.no_progress,
        )
    return build_run_report(
        src,
        out=args.out,
        max_frames=args.max_frames,
        seed=args.seed,
        checkpoint=args.checkpoint,
        split=args.split,
        device=args.device,
        progress=not args.no_progress,
    )


def _print(r: ReportResult) -> None:
    print(f"wrote {r.html} ({r.frames} gallery frames, {r.images} files in {r.files_dir}, {r.seconds:.1f} s)")
    for k, why in r.skipped.items():
        print(f"  no {k}: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: _print(build(args)), debugging(args))
