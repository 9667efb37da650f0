"""`python -m gcfeat.export` / `gcfeat export`: captioning / interaction exports of a feature
file (the exporters are :mod:`gcfeat.io.exports`)."""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from gcfeat.cli.common import add_debug, debugging, run
from gcfeat.io.exports import export_captioning, export_interaction
from gcfeat.io.features import FeatureFileError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.export",
        description="Export a gcfeat feature file (python -m gcfeat.extract) for downstream "
                    "models: per-frame node features for captioning, per-frame graph HDF5 "
                    "files for the interaction model.")
    sub = p.add_subparsers(dest="target", required=True)
    c = sub.add_parser("captioning", help="<video>/<frame>_node_features.npy + index.json")
    c.add_argument("features", help="feature file written by python -m gcfeat.extract")
    c.add_argument("--method", default="m2", help="which extractor's rows (default m2)")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--index", default="index.json", help="name of the JSON index in --out")
    i = sub.add_parser("interaction", help="<video>/vsgat/<method>/<frame>_features.hdf5")
    i.add_argument("features", help="feature file written by python -m gcfeat.extract")
    i.add_argument("--methods", nargs="+", default=None,
                   help="extractors to export (default: all in the file)")
    i.add_argument("--out", required=True, help="output folder")
    for s in (c, i):
        s.add_argument("--frame-format", default="frame{:03d}",
                       help="frame name from its number (default frame{:03d} -> frame007)")
    return add_debug(p)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: _export(args), debugging(args))


def _export(args: argparse.Namespace) -> int:
    if not os.path.exists(args.features):
        raise FeatureFileError(f"features: {args.features} does not exist; expected a file "
                               f"written by python -m gcfeat.extract")
    if args.target == "captioning":
        index = export_captioning(args.features, args.method, args.out, args.frame_format,
                                  args.index)
        print(f"wrote {len(index)} frames to {args.out} (index {args.index})")
    else:
        n = export_interaction(args.features, args.out, args.methods, args.frame_format)
        print(f"wrote {n} frame files to {args.out}")
    return 0
