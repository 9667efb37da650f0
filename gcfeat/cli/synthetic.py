"""`python -m gcfeat.data.synthetic` / `gcfeat synth`: write a synthetic surgical dataset (MICCAI
2018 or Cholec80 layout, exact ground truth; :mod:`gcfeat.data.synthetic` holds the generator)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gcfeat.data.synthetic import write_cholec80, write_miccai18
from gcfeat.data.transforms import parse_size

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gcfeat.data.synthetic",
        description="Generate synthetic surgical scenes with exact ground truth, written in the "
        "MICCAI 2018 or Cholec80 layout (see gcfeat.data.synthetic for the files).",
    )
    parser.add_argument(
        "--layout", choices=("miccai18", "cholec80"), required=True, help="which dataset layout to write"
    )
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--videos", type=int, default=4, help="number of sequences/videos (default 4)")
    parser.add_argument(
        "--frames",
        type=int,
        default=100,
        help="frames per sequence/video (default 100; Cholec80 annotates every 25th)",
    )
    parser.add_argument("--size", default="256x320", help="frame size HxW (default 256x320)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--test-videos",
        type=int,
        default=0,
        help="miccai18: held-out test sequences after the --videos ones "
        "(annotation_tool/test/; the others are unchanged; default 0)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size)
        if args.layout == "miccai18":
            summary = write_miccai18(
                args.out, args.videos, args.frames, size, args.seed, test_videos=args.test_videos
            )
        elif args.test_videos:
            raise ValueError("--test-videos: only the miccai18 layout has a test split here")
        else:
            summary = write_cholec80(args.out, args.videos, args.frames, size, args.seed)
    except (ValueError, OSError) as e:
        parser.exit(2, f"error: {e}\n")
    print(
        f"wrote {args.layout} layout to {summary['root']}: {args.videos} videos x "
        f"{args.frames} frames at {size[0]}x{size[1]}, seed {args.seed}"
    )
    what = "annotated frames" if args.layout == "cholec80" else "frames"
    print(f"  {summary['frames']} {what} with ground truth")
    for split, vids in summary["splits"].items():
        print(f"  {split}: {', '.join(vids) if vids else '(none)'}")
    print("  frames per class:")
    for name, n in summary["class_frames"].items():
        print(f"    {name:<27s} {n}")
    return 0
