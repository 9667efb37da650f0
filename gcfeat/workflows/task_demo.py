"""The MRI demo: ``scripts/demo --task organ3d|prostate|alzheimer`` on synthetic data.

Stages, each printed with its time:

1. **data**      the task's synthetic data in its real file format (``<out>/data``);
2. **train**     the task's classifier (:func:`gcfeat.training.train_classifier`);
3. **evaluate**  :func:`gcfeat.workflows.evaluate.evaluate` on a class-balanced subset of ``limit`` test
   samples (:func:`gcfeat.data.subsets.balanced_subset`): classification metrics (all test samples),
   Grad-CAM / Score-CAM localisation against the planted mask (pointing game, IoU; over the
   samples with a non-empty mask) and deletion / insertion AUC beside a random-saliency
   baseline, figures and exports (``<out>/eval``, samples with a mask first);
4. **features**  the test split through the extractors m1 / m2 / m3 into the HDF5 layout
   (``<out>/features.h5``; organ3d with 3D boxes), as ``python -m gcfeat.extract --task``;
5. **summary**   ``<out>/report.md`` (the figures in markdown) and ``<out>/summary.json``;
6. **report**    ``<out>/report.html`` (:mod:`gcfeat.report`: settings, figures, a gallery of
   the test split with each sample's heatmap, volumes as slice montages, the feature file),
   last so that a report that fails leaves the run complete.

Defaults (each task's ``Task.demo``) are sized so each task finishes in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from gcfeat.extract import extract_dataset
from gcfeat.extract.pipeline import file_sha256
from gcfeat.io import FeatureFile
from gcfeat.io.paths import writable_dir
from gcfeat.tasks import Task, get_task, task_names
from gcfeat.training.single_label import train_classifier
from gcfeat.workflows.common import html_report_stage, stage
from gcfeat.workflows.evaluate import evaluate, summary_markdown

__all__ = ["run_task_demo"]


def run_task_demo(
    task: str | Task,
    out: str | Path | None = None,
    *,
    n: int | None = None,
    arch: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    limit: int | None = None,
    n_steps: int | None = None,
    methods: Sequence[str] = ("gradcam", "scorecam"),
    exports: int = 2,
    checkpoint_dir: str | Path | None = None,
    skip_train: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the MRI demo of ``task``; returns the summary also written to ``<out>/summary.json``.

    Unset arguments take the task's ``demo`` defaults; ``out`` defaults to ``runs/demo_<task>``
    and ``checkpoint_dir`` to ``<out>``. Data already in ``<out>/data`` with the same settings
    is reused.
    """
    t = get_task(task)
    if t.ground_truth != "mask" or not t.demo:
        demos = [n for n in task_names() if get_task(n).ground_truth == "mask" and get_task(n).demo]
        raise ValueError(
            f"--task {t.name!r} has no MRI demo; expected one of {demos} (or surgical, the default demo)"
        )
    task = t.name
    d = t.demo
    n = d["n"] if n is None else n
    arch = arch or d["arch"]
    epochs = d["epochs"] if epochs is None else epochs
    batch_size = batch_size or d["batch_size"]
    lr = lr or d["lr"]
    limit = d["limit"] if limit is None else limit
    n_steps = d["n_steps"] if n_steps is None else n_steps
    if arch not in t.archs:  # before any data is written
        raise ValueError(f"--arch {arch!r} is not a {task} model; expected one of {list(t.archs)}")
    out = writable_dir(out or f"runs/demo_{task}")
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out
    data = out / "data"
    summary: dict[str, Any] = {
        "task": task,
        "out": str(out),
        "data": str(data),
        "arch": arch,
        "epochs": epochs,
        "n": n,
        "seed": seed,
        "limit": limit,
        "n_steps": n_steps,
        "methods": list(methods),
        "seconds": {},
    }
    t_all = time.perf_counter()
    torch.manual_seed(seed)

    done = stage(f"1/6 data: synthetic {task} data, real file format")
    train_set, val_set, test_set, val_split = _data_stage(t, data, n, seed, summary)
    summary["seconds"]["data"] = done()

    done = stage(f"2/6 train: {arch}, {epochs} epochs")
    checkpoint = ckpt_dir / f"{task}_{arch}_best.pt"
    if skip_train and checkpoint.is_file():
        print(f"--skip-train: reusing {checkpoint}")
    else:
        r = train_classifier(
            t.build_model(arch),
            train_set,
            val_set,
            task=t,
            arch=arch,
            out_dir=ckpt_dir,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer="adamw",
            seed=seed,
            device=device,
            progress=progress,
        )
        checkpoint = r["checkpoint"]
        summary["history"] = r["history"]
        summary["best_val_accuracy"] = r["best_accuracy"]
        print(f"best {val_split} accuracy {r['best_accuracy']:.4f} -> {checkpoint}")
    summary["checkpoint"] = str(checkpoint)
    summary["seconds"]["train"] = done()

    done = stage(f"3/6 evaluate: {', '.join(methods)} + random on {limit} test samples (class-balanced)")
    table = _evaluate_stage(
        task,
        data,
        checkpoint,
        out / "eval",
        summary,
        methods=methods,
        limit=limit,
        n_steps=n_steps,
        exports=exports,
        seed=seed,
        progress=progress,
    )
    summary["seconds"]["evaluate"] = done()

    done = stage("4/6 features: test split -> m1 / m2 / m3 -> HDF5")
    summary["features"] = _extract_features(
        t, checkpoint, test_set, out / "features.h5", device=device, progress=progress
    )
    summary["seconds"]["features"] = done()

    done = stage("5/6 summary: report.md + summary.json")
    _write_summary(out, summary, table, t_all)
    summary["seconds"]["report"] = done()
    error = html_report_stage(
        "6/6 report: report.html (settings, figures, gallery, features)",
        out,
        summary,
        started=t_all,
        progress=progress,
    )
    _print_where(summary)
    if error is not None:
        raise error
    return summary


def _write_summary(out: Path, summary: dict, table: str, t_all: float) -> None:
    """``<out>/report.md`` and ``<out>/summary.json`` (total time so far included)."""
    summary["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
    report = out / "report.md"
    report.write_text(_report_markdown(summary, table))
    summary["report"] = str(report)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def _data_stage(t: Task, data: Path, n: int, seed: int, summary: dict):
    """The task's synthetic data in ``data`` (reused when written with the same settings);
    ``(train_set, val_set, test_set, val_split)``."""
    kw = t.synthetic_kwargs(n, seed)
    stamp = data / "demo_settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == kw:
        print(f"reusing {data} (same settings)")
    else:
        t.write_synthetic(data, **kw)
        stamp.write_text(json.dumps(kw))
    train_set = t.build_dataset(data, "train")
    val_split = "val" if "val" in t.splits else "test"
    val_set = t.build_dataset(data, val_split)
    test_set = t.build_dataset(data, "test")
    print(
        f"{data}: {len(train_set)} train / {len(val_set)} {val_split} / {len(test_set)} test "
        f"samples of shape {tuple(train_set[0]['image'].shape)}"
    )
    summary.update(train_samples=len(train_set), val_samples=len(val_set), test_samples=len(test_set))
    return train_set, val_set, test_set, val_split


def _evaluate_stage(
    task: str,
    data,
    checkpoint,
    eval_dir: Path,
    summary: dict,
    *,
    methods,
    limit,
    n_steps,
    exports,
    seed,
    progress,
) -> str:
    """:func:`gcfeat.workflows.evaluate.evaluate` into ``eval_dir``; its markdown table."""
    res = evaluate(
        task,
        data,
        checkpoint,
        eval_dir,
        methods=tuple(methods),
        split="test",
        limit=limit,
        n_steps=n_steps,
        exports=exports,
        seed=seed,
        progress=progress,
    )
    table = summary_markdown(res)
    print(table)
    summary.update(
        classification=res["classification"],
        samples=res["samples"],
        localisation=res["localisation"],
        faithfulness=res["faithfulness"],
        faithfulness_setup=res["faithfulness_setup"],
        eval_dir=str(eval_dir),
    )
    if "faithfulness_with_gt_mask" in res:  # prostate: the lesion slices apart
        summary["faithfulness_with_gt_mask"] = res["faithfulness_with_gt_mask"]
    if "map_checks" in res:  # ROAD, Average Drop / Increase in Confidence, sanity verdicts
        mc = res["map_checks"]
        summary["map_checks"] = {
            "road": {k: {f: v[f] for f in ("morf", "lerf", "combined")} for k, v in mc["road"].items()},
            "confidence": mc["confidence"],
            "sanity": {
                k: {f: v[f] for f in ("steps", "spearman", "passes", "verdict")}
                for k, v in mc["sanity"].items()
            },
        }
    return table


def _extract_features(
    task, checkpoint, dataset, out: Path, *, device: str = "cpu", progress: bool = True
) -> dict[str, Any]:
    """The test split through :func:`gcfeat.extract.extract_dataset` (a fresh file each run)."""
    model, meta = task.load_checkpoint(checkpoint)
    info = SimpleNamespace(
        classes=list(meta.get("classes", task.classes)),
        arch=meta.get("arch", ""),
        mean=None,
        std=None,
        input_size=list(meta.get("input_size") or task.input_size),
    )
    if out.exists():
        out.unlink()
    stats = extract_dataset(
        dataset,
        model,
        info,
        ("m1", "m2", "m3"),
        out=str(out),
        batch_size=16,
        device=device,
        num_workers=0,
        progress=progress,
        layout="auto",
        crop_size=tuple(info.input_size),
        checkpoint_sha256=file_sha256(str(checkpoint)),
        task=task.name,
        activation=task.activation,
    )
    with FeatureFile(out) as ff:
        print(ff.summary())
        dims = {m: int(ff[ff.videos[0]].rows(m)["features"].shape[1]) for m in ff.methods}
    return {
        "file": str(out),
        "frames": stats["frames"],
        "rows": stats["rows"],
        "dims": dims,
        "frames_per_s": round(stats["frames_per_s"], 2),
    }


def _report_markdown(s: dict, table: str) -> str:
    lines = [
        f"# gcfeat {s['task']} demo report",
        "",
        f"- data: `{s['data']}` ({s['train_samples']} train / {s['val_samples']} val / "
        f"{s['test_samples']} test samples, synthetic, planted ground truth)",
        f"- model: {s['arch']}, {s['epochs']} epochs, checkpoint `{s['checkpoint']}`",
        f"- evaluation: `{s['eval_dir']}` (metrics.json, curves, exports)",
        f"- features: `{s['features']['file']}` ({s['features']['frames']} samples, rows "
        f"{s['features']['rows']}, dims {s['features']['dims']})",
        f"- total time {s['seconds']['total']} s",
        "- the browsable report, with a gallery of the test samples (heatmaps, boxes of "
        "the planted masks): `report.html` beside this file",
        "",
    ]
    if s.get("history"):
        lines += ["## Training", "", "| epoch | train loss | val loss | val accuracy |", "|---|---|---|---|"]
        lines += [
            f"| {h['epoch']} | {h['train_loss']:.4f} | {h['val_loss']:.4f} | {h['val_accuracy']:.4f} |"
            for h in s["history"]
        ]
        lines.append("")
    return "\n".join(lines) + "\n## Test\n\n" + table.replace("### ", "")


def _print_where(s: dict) -> None:
    print("\n=== where everything is ===")
    for k, v in (
        ("dataset", s["data"]),
        ("checkpoint", s["checkpoint"]),
        ("evaluation", s["eval_dir"]),
        ("features", s["features"]["file"]),
        ("summary", f"{s['report']}, {Path(s['out']) / 'summary.json'}"),
        ("report", s.get("report_html") or f"NOT WRITTEN ({s.get('report_html_error')})"),
    ):
        print(f"  {k:<12} {v}")
    c = s["classification"]
    print(
        f"\n{s['task']}: test accuracy {c['accuracy']:.3f} | "
        f"ROC AUC {c.get('roc_auc', float('nan')):.3f} | total {s['seconds']['total']} s"
    )
    n = s["faithfulness_setup"]["n"]
    for name, f in s["faithfulness"].items():
        loc = s["localisation"].get(name)
        pg = (
            f"pointing {loc['pointing_game']['mean']:.3f} IoU {loc['iou']['mean']:.3f} "
            f"(n = {loc['iou']['n']}) | "
            if loc
            else ""
        )
        print(
            f"  {name:<9} {pg}DAUC {f['dauc_prob']['mean']:.3f} ± {f['dauc_prob']['std']:.3f} "
            f"IAUC {f['iauc_prob']['mean']:.3f} ± {f['iauc_prob']['std']:.3f} (n = {n})"
        )
