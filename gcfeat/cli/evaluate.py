"""`python -m gcfeat.evaluate` / `gcfeat evaluate`: metrics, localisation and deletion /
insertion AUC of a task checkpoint (see :mod:`gcfeat.workflows.evaluate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gcfeat.cli.common import add_debug, debugging, run
from gcfeat.tasks import TASK_NAMES
from gcfeat.workflows.evaluate import DELETION_BASELINES, evaluate, map_checks_markdown, summary_markdown
from gcfeat.workflows.map_checks import ROAD_FRACTIONS, evaluate_surgical


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gcfeat.evaluate",
        description="Classification metrics, CAM localisation (pointing game, IoU vs the "
        "planted ground truth) and deletion / insertion AUC (with a random-saliency "
        "baseline) of a task checkpoint; figures and CAM volume exports; ROAD "
        "(MoRF / LeRF), Average Drop / Increase in Confidence and a sanity stage "
        "(cascading model randomisation + random-logit test) for every task. "
        "--task surgical: the map checks only, on --limit frames (default 16) of "
        "--split (default val), each explaining its best-scored ground-truth "
        "instrument.",
    )
    p.add_argument("--task", required=True, choices=list(TASK_NAMES))
    p.add_argument("--data", required=True, help="dataset folder (organ3d: folder or .npz)")
    p.add_argument("--checkpoint", required=True, help="checkpoint from gcfeat.tasks.train")
    p.add_argument(
        "--layer",
        default=None,
        help="CAM target module, e.g. layer3 (finer than layer4's 4x4 cells on a "
        "128x128 slice); default: the task's target layer",
    )
    p.add_argument(
        "--method",
        nargs="+",
        default=["gradcam"],
        help="CAM methods (gradcam, scorecam, gradcam++, ...); default gradcam",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default=None, help="split to evaluate (default test; surgical val)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="CAM / faithfulness on N samples only, a class-balanced subset "
        "(round-robin over the true classes, see --sample-seed); "
        "classification metrics use all",
    )
    p.add_argument(
        "--target",
        choices=("true", "pred"),
        default="true",
        help="class explained and scored: the true label or the prediction",
    )
    p.add_argument("--n-steps", type=int, default=129, help="curve steps (points = steps + 1)")
    p.add_argument(
        "--blur-sigma", type=float, default=None, help="insertion start blur in pixels (default: side / 10)"
    )
    p.add_argument(
        "--deletion-baseline",
        choices=DELETION_BASELINES,
        default=None,
        help="what deleted pixels become: zeros, each image's channel means, or the "
        "blurred copy (default: mean for prostate, whose lesion is dark, "
        "zeros otherwise)",
    )
    p.add_argument("--batch-size", type=int, default=65, help="curve steps per forward")
    p.add_argument("--tolerance", type=int, default=0, help="pointing game tolerance (voxels)")
    p.add_argument("--iou-threshold", type=float, default=0.5)
    p.add_argument(
        "--exports",
        type=int,
        default=4,
        help="samples with figures / volume files (those with a ground-truth mask first)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the random saliency baseline")
    p.add_argument(
        "--no-road", action="store_true", help="skip ROAD and Average Drop / Increase in Confidence"
    )
    p.add_argument(
        "--no-sanity",
        action="store_true",
        help="skip the sanity stage (cascading randomisation, random-logit test)",
    )
    p.add_argument(
        "--road-fractions",
        type=float,
        nargs="+",
        default=list(ROAD_FRACTIONS),
        help="ROAD removal fractions (default 0.1 0.3 0.5 0.7 0.9)",
    )
    p.add_argument(
        "--sanity-methods",
        nargs="+",
        default=None,
        help="methods the sanity stage checks (default: the gradient methods of "
        "--method; Score-CAM is costly per randomisation step)",
    )
    p.add_argument(
        "--sample-seed",
        type=int,
        default=0,
        help="seed of the --limit subset: each class's samples in a seeded "
        "permutation (default 0; -1: dataset order)",
    )
    return add_debug(p)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    return run(lambda: _evaluate(a), debugging(a))


def _evaluate(a: argparse.Namespace) -> int:
    if a.task == "surgical":
        checks = evaluate_surgical(
            a.data,
            a.checkpoint,
            a.out,
            methods=a.method,
            split=a.split or "val",
            limit=a.limit or 16,
            layer=a.layer or "layer4",
            fractions=a.road_fractions,
            sanity=not a.no_sanity,
            road=not a.no_road,
            seed=a.seed,
        )
        print("\n".join(map_checks_markdown(checks.to_dict())))
        print(f"wrote {checks.files['json']}, {checks.files['csv']}, {checks.files['figure']}")
        return 0
    r = evaluate(
        a.task,
        a.data,
        a.checkpoint,
        a.out,
        methods=a.method,
        split=a.split or "test",
        limit=a.limit,
        target=a.target,
        n_steps=a.n_steps,
        blur_sigma=a.blur_sigma,
        batch_size=a.batch_size,
        tolerance=a.tolerance,
        iou_threshold=a.iou_threshold,
        exports=a.exports,
        seed=a.seed,
        deletion_baseline=a.deletion_baseline,
        layer=a.layer,
        sample_seed=None if a.sample_seed < 0 else a.sample_seed,
        road=not a.no_road,
        sanity=not a.no_sanity,
        sanity_methods=a.sanity_methods,
        road_fractions=a.road_fractions,
    )
    print(summary_markdown(r))
    print(f"wrote {Path(a.out) / 'metrics.json'} ({r['seconds']:.0f} s)")
    return 0
