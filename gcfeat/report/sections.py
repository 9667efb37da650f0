"""The run's figures as report sections, each read from the file the run wrote and left out
(empty string) when that file is absent.

Run-directory files (all optional except ``summary.json``):

* ``summary.json``: settings, ``val_mAP`` / ``per_class_ap`` (surgical), ``classification``,
  ``history``, ``localisation`` / ``faithfulness`` (MRI), ``seconds`` per stage;
* ``train_log.csv``: one row per epoch;
* ``tune/tune_thresholds.csv``, ``tune/tune_recommendation.json``, ``tune/*.png``: the
  threshold study (pooled rows have ``class_id`` -1);
* ``eval/metrics.json``, ``eval/*.png``, ``eval/volumes/*_montage.png``: localisation,
  faithfulness (deletion / insertion AUC) and their figures;
* ``bbox_*.png``: the single-frame figure.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .page import esc, fmt, table

__all__ = [
    "read_json",
    "settings_html",
    "classification_html",
    "training_html",
    "tune_html",
    "box_metrics_html",
    "faithfulness_html",
    "figures_html",
    "copy_figure",
]

_METRICS = ("mean_iou", "hit_rate", "precision", "recall", "f1", "pointing_game", "boxes_per_frame")


def read_json(path: Path) -> Any:
    """The parsed file, or None when it is absent or unreadable (the section is skipped)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _num(v: str | None) -> Any:
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except ValueError:
        return v
    return int(x) if x.is_integer() and "." not in v and "e" not in v.lower() else x


def copy_figure(src: Path, files_dir: Path, rel: str) -> str:
    """Copy a figure into the report's folder (the report travels as one folder); returns its
    reference from the page."""
    dst = (
        files_dir / "fig" / src.relative_to(src.parents[1]).as_posix().replace("/", "__")
        if len(src.parents) > 1
        else files_dir / "fig" / src.name
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return f"{rel}/fig/{dst.name}"


def figures_html(paths: Sequence[Path], files_dir: Path, rel: str, cls: str = "small") -> str:
    out = []
    for p in paths:
        src = copy_figure(p, files_dir, rel)
        out.append(
            f'<figure><img class="{cls}" src="{esc(src)}" alt="{esc(p.name)}" '
            f'loading="lazy"><figcaption>{esc(p.name)}</figcaption></figure>'
        )
    return f'<div class="figs">{"".join(out)}</div>' if out else ""


def settings_html(s: dict) -> str:
    """Scalar settings and the time per stage."""
    rows = []
    for k, v in s.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            rows.append((k, fmt(v, 4)))  # text: one left-aligned column
        elif isinstance(v, list) and len(v) <= 6 and all(isinstance(x, (int, float, str)) for x in v):
            rows.append((k, ", ".join(map(str, v))))
        elif isinstance(v, dict) and k == "features" and "file" in v:
            rows.append(("features", v["file"]))
    out = table(("setting", "value"), rows, cls="settings") if rows else ""
    sec = s.get("seconds")
    if isinstance(sec, dict) and sec:
        out += table(
            ("stage", "seconds"), [(k, float(v)) for k, v in sec.items()], caption="time per stage", digits=1
        )
    return f'<div class="cols">{out}</div>' if out else ""


def classification_html(s: dict, classes: Sequence[str], metrics: dict | None) -> str:
    """mAP and per-class AP (surgical), or the MRI classification metrics."""
    out = []
    ap = s.get("per_class_ap")
    if s.get("val_mAP") is not None:
        out.append(
            f'<p class="note">validation mAP <b>{fmt(s["val_mAP"])}</b>'
            + (f" (best epoch {esc(s.get('best_epoch'))})" if s.get("best_epoch") else "")
            + "</p>"
        )
    if isinstance(ap, list) and ap:
        names = list(classes) if len(classes) == len(ap) else [str(i) for i in range(len(ap))]
        rows = [
            (n, None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v))
            for n, v in zip(names, ap)
        ]
        out.append(table(("class", "AP"), rows, cls="per-class-ap", caption="per-class AP"))
    cls = s.get("classification") or (metrics or {}).get("classification")
    if isinstance(cls, dict) and cls:
        out.append(
            table(
                ("metric", "value"),
                [(k, v) for k, v in cls.items() if isinstance(v, (int, float))],
                cls="classification",
                caption="classification (test split)",
                digits=4,
            )
        )
    return "".join(out)


def training_html(run_dir: Path, s: dict) -> str:
    rows = read_csv(run_dir / "train_log.csv")
    if rows:
        cols = list(rows[0])
        return table(
            cols,
            [[_num(r[c]) for c in cols] for r in rows],
            cls="train-log",
            caption="train_log.csv",
            digits=4,
        )
    hist = s.get("history")
    if isinstance(hist, list) and hist and isinstance(hist[0], dict):
        cols = list(hist[0])
        return table(cols, [[h.get(c) for c in cols] for h in hist], cls="train-log", digits=4)
    return ""


def tune_html(tune_dir: Path, files_dir: Path, rel: str) -> str:
    """The threshold study: the recommendation, the pooled rows per T, the curves."""
    rec = read_json(tune_dir / "tune_recommendation.json")
    rows = read_csv(tune_dir / "tune_thresholds.csv")
    out = []
    if isinstance(rec, dict):
        ov = rec.get("overall") or {}
        metric = rec.get("metric", "mean_iou")
        if ov:
            out.append(
                f'<p class="note">best T by {esc(metric)} over {esc(ov.get("name"))}: '
                f"<b>T = {fmt(ov.get('threshold'), 2)}</b>, mean IoU "
                f"<b>{fmt(ov.get('mean_iou'))}</b>, hit rate {fmt(ov.get('hit_rate'))}, "
                f"pointing game {fmt(ov.get('pointing_game'))}</p>"
            )
        pc = rec.get("per_class") or {}
        if pc:
            out.append(
                table(
                    ("class", "best T", "mean IoU", "hit rate", "precision", "recall"),
                    [
                        (
                            c,
                            r.get("threshold"),
                            r.get("mean_iou"),
                            r.get("hit_rate"),
                            r.get("precision"),
                            r.get("recall"),
                        )
                        for c, r in pc.items()
                    ],
                    cls="tune-per-class",
                    caption="best threshold per class",
                )
            )
    pooled = [r for r in rows if _num(r.get("class_id")) is not None and _num(r["class_id"]) < 0]
    if pooled:
        cols = ["threshold"] + [m for m in _METRICS if m in pooled[0]]
        name = pooled[0].get("class_name", "pooled")
        body = [[_num(r[c]) for c in cols] for r in pooled if r.get("class_name") == name]
        out.append(table(cols, body, cls="tune-pooled", caption=f"{name}: metrics per T"))
    if out:
        out = [f'<div class="cols">{"".join(out)}</div>']
    curves = sorted(tune_dir.glob("tune_curves*.png"))
    per_class = sorted(p for p in tune_dir.glob("tune_*.png") if p not in curves)
    out.append(figures_html(curves, files_dir, rel, "wide"))
    if per_class:
        out.append("<h3>per class</h3>" + figures_html(per_class, files_dir, rel, "small"))
    return "".join(out) if (rec or rows or curves) else ""


def box_metrics_html(tune_dir: Path, threshold: float | None) -> str:
    """Every class's box metrics at one T (the run's): the threshold study's rows there."""
    rows = read_csv(tune_dir / "tune_thresholds.csv")
    if not rows:
        return ""
    ts = sorted({float(r["threshold"]) for r in rows})
    t = min(ts, key=lambda x: abs(x - threshold)) if threshold is not None else ts[len(ts) // 2]
    at = [r for r in rows if abs(float(r["threshold"]) - t) < 1e-9]
    cols = [m for m in _METRICS if m in at[0]]
    extra = [c for c in ("n_gt", "gt_boxes", "n_pred", "pred_boxes") if c in at[0]]
    body = [[r.get("class_name")] + [_num(r[c]) for c in extra + cols] for r in at]
    return f'<p class="note">at T = {t:g} (the run\'s threshold); pooled rows last.</p>' + table(
        ["class"] + extra + cols, body, cls="box-metrics"
    )


def faithfulness_html(run_dir: Path, s: dict, files_dir: Path, rel: str) -> str:
    """Localisation (pointing game, IoU) and deletion / insertion AUC per saliency method, with
    the random-map baseline, and the evaluation's figures."""
    m = read_json(run_dir / "eval" / "metrics.json") or {}
    loc = s.get("localisation") or m.get("localisation") or {}
    fa = s.get("faithfulness") or m.get("faithfulness") or {}
    out = []
    ms = lambda d: None if not d else f"{d['mean']:.4f} ± {d.get('std', 0):.4f}"  # noqa: E731
    if fa:
        body = []
        for name, v in fa.items():
            lo = loc.get(name) or {}
            body.append(
                (
                    name,
                    (lo.get("pointing_game") or {}).get("mean"),
                    (lo.get("iou") or {}).get("mean"),
                    (lo.get("iou") or {}).get("n"),
                    ms(v.get("dauc_prob")),
                    ms(v.get("iauc_prob")),
                    ms(v.get("dauc_correct")),
                    ms(v.get("iauc_correct")),
                )
            )
        out.append(
            table(
                (
                    "saliency",
                    "pointing game",
                    "IoU",
                    "n (mask)",
                    "DAUC prob ↓",
                    "IAUC prob ↑",
                    "DAUC 0/1 ↓",
                    "IAUC 0/1 ↑",
                ),
                body,
                cls="faithfulness",
                caption="localisation against the planted mask; deletion / insertion "
                "AUC (random = the baseline a CAM must beat)",
            )
        )
    ev = run_dir / "eval"
    figs = sorted(ev.glob("*_mean_curves.png")) + sorted(ev.glob("*_grid.png"))
    figs += sorted((ev / "volumes").glob("*_montage.png"))[:4]
    figs += sorted((ev / "curves").glob("*.png"))[:4]
    out.append(figures_html(figs, files_dir, rel, "small"))
    return "".join(out) if (fa or figs) else ""
