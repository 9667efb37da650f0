"""`python -m gcfeat.export` / `gcfeat export`: the captioning and interaction exports of a
feature file, in the files the downstream models read (the exporters and the consumers' rules
they follow: :mod:`gcfeat.io.exports`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from gcfeat.cli.common import add_debug, debugging, run
from gcfeat.io.exports import ENCODINGS, export_captioning, export_interaction
from gcfeat.io.features import FeatureFileError


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sequence numbers such as 1,5,16") from None


def _wh(text: str) -> list[float]:
    try:
        a, b = (float(t) for t in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected AxB such as 1024x1280") from None
    return [a, b]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.export",
        description="Export a gcfeat feature file (python -m gcfeat.extract) in the files the "
        "downstream models read: CIDACaptioning (per-frame node features + caption "
        "JSON files) and the global-reasoned interaction model (per-frame graph "
        "HDF5 files). Both read the dataset's scene-graph XML (seq_N/xml/).",
    )
    sub = p.add_subparsers(dest="target", required=True)
    c = sub.add_parser(
        "captioning", help="seq_N/<folder>/<frame>_node_features.npy + annotations/*_{train,val}.json"
    )
    c.add_argument("features", help="feature file written by python -m gcfeat.extract")
    c.add_argument("--method", default="m2", help="which extractor's rows (default m2)")
    c.add_argument(
        "--out",
        required=True,
        help="output folder: pass its ABSOLUTE path as the model's --features_path "
        "and <out>/annotations as --annotation_folder",
    )
    c.add_argument(
        "--folder",
        default=None,
        help="per-sequence feature folder named in id_path (default gcfeat_<method>)",
    )
    c.add_argument(
        "--val-sequences",
        type=_ints,
        default=[1, 5, 16],
        help="sequence numbers of the validation split (default 1,5,16: MICCAI 2018)",
    )
    i = sub.add_parser(
        "interaction", help="seq_N/xml/, left_frames/, annotations/, vsgat/<method>/<frame>_features.hdf5"
    )
    i.add_argument("features", help="feature file written by python -m gcfeat.extract")
    i.add_argument(
        "--methods", nargs="+", default=None, help="extractors to export (default: all in the file)"
    )
    i.add_argument(
        "--out",
        required=True,
        help="output folder: one tree per method, <out>/<method>, to put or link "
        "where the model expects datasets/instruments18",
    )
    i.add_argument(
        "--encoding",
        choices=ENCODINGS,
        default="vsgat",
        help="16-d pair encoding: vsgat = the authors' calculate_spatial_feats, "
        "quirks included (default); gcfeat = gcfeat's own",
    )
    i.add_argument(
        "--im-wh",
        type=_wh,
        default=None,
        help="im_wh of the vsgat encoding (default: HxW of the source frames, the "
        "authors' 1024x1280 on MICCAI 2018)",
    )
    i.add_argument(
        "--link",
        choices=("symlink", "copy", "none"),
        default="symlink",
        help="how left_frames/ and annotations/ PNGs appear under --out (default symlink)",
    )
    for s in (c, i):
        s.add_argument(
            "--data",
            required=True,
            help="the dataset the features were extracted from (scene graphs in "
            "seq_N/xml/, frames, label masks)",
        )
    c.add_argument(
        "--frame-format",
        default="frame{:03d}",
        help="frame name from its number where a frame has no XML (default frame{:03d} -> frame007)",
    )
    return add_debug(p)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: _export(args), debugging(args))


def _export(args: argparse.Namespace) -> int:
    if not os.path.exists(args.features):
        raise FeatureFileError(
            f"features: {args.features} does not exist; expected a file written by python -m gcfeat.extract"
        )
    if args.target == "captioning":
        res = export_captioning(
            args.features,
            args.method,
            args.out,
            args.frame_format,
            data=args.data,
            folder=args.folder,
            val_sequences=args.val_sequences,
        )
        print(res.summary())
        print(f"  --features_path {res.features_path} --annotation_folder {res.annotation_folder}")
    else:
        res = export_interaction(
            args.features,
            args.out,
            args.methods,
            data=args.data,
            encoding=args.encoding,
            im_wh=args.im_wh,
            link=args.link,
        )
        print(res.summary())
        print(
            f"  {res.out}: seq_N/xml, left_frames, annotations, vsgat/<method>; the model "
            f"also needs its dataset/surgicalscene_word2vec.hdf5"
        )
    return 0
