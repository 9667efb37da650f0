"""Threshold-study plots: box quality vs threshold T per class, best T marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .overlay import class_color, new_figure, save_figure

__all__ = ["plot_threshold_curves", "plot_class_curves", "plot_transfer", "plot_map_checks", "METRIC_LABELS"]

METRIC_LABELS = {
    "mean_iou": "mean IoU",
    "hit_rate": "hit rate (IoU >= 0.5)",
    "precision": "box precision",
    "recall": "box recall",
    "f1": "box F1",
    "pointing_game": "pointing game",
    "boxes_per_frame": "boxes per frame",
}


def _best(sub, metric):
    sub = sub.dropna(subset=[metric]).sort_values("threshold", kind="stable")
    if sub.empty:
        return None
    row = sub.loc[sub[metric].idxmax()]
    return float(row["threshold"]), float(row[metric])


def plot_threshold_curves(
    df,
    path: str | Path,
    metrics: Sequence[str] = ("mean_iou", "hit_rate"),
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """One panel per metric: metric vs T, a line per class (colour = class) and a thick black
    line per aggregate row group; each line's best T is marked with a star.

    Args:
        df: the tidy sweep table of :func:`gcfeat.boxes.evaluate_thresholds`.
        path: output PNG.
        metrics: columns to plot.

    Returns:
        The written path.
    """
    fig = new_figure(5.0 * len(metrics), 4.2, dpi)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for (cid, name), sub in df.groupby(["class_id", "class_name"], sort=False):
            sub = sub.sort_values("threshold")
            if sub[metric].isna().all():
                continue
            agg = cid < 0
            colour = "black" if agg else class_color(cid)
            ax.plot(
                sub["threshold"],
                sub[metric],
                color=colour,
                lw=2.5 if agg else 1.2,
                label=str(name),
                zorder=3 if agg else 2,
            )
            b = _best(sub, metric)
            if b is not None and metric != "boxes_per_frame":
                ax.plot(
                    [b[0]],
                    [b[1]],
                    marker="*",
                    ms=12 if agg else 8,
                    color=colour,
                    markeredgecolor="white",
                    zorder=4,
                )
                if agg:
                    ax.annotate(
                        f"T={b[0]:.2f}: {b[1]:.3f}", b, textcoords="offset points", xytext=(6, 6), fontsize=8
                    )
        ax.set_xlabel("threshold T")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        if metric != "boxes_per_frame":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def plot_class_curves(
    df,
    out_dir: str | Path,
    metrics: Sequence[str] = ("mean_iou", "hit_rate"),
    prefix: str = "tune_",
    best_by: str = "mean_iou",
    dpi: int = 100,
) -> list[Path]:
    """One PNG per class (and per aggregate): the metrics vs T in one panel, a dashed vertical
    line at the best T by ``best_by``. Files ``<prefix><class_name>.png``.

    Returns:
        The written paths (classes without any finite value are skipped).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for (_cid, name), sub in df.groupby(["class_id", "class_name"], sort=False):
        sub = sub.sort_values("threshold")
        if all(sub[m].isna().all() for m in metrics):
            continue
        fig = new_figure(5.0, 3.6, dpi)
        ax = fig.subplots()
        for i, metric in enumerate(metrics):
            ax.plot(
                sub["threshold"],
                sub[metric],
                marker="o",
                ms=3,
                label=METRIC_LABELS.get(metric, metric),
                color=f"C{i}",
            )
        b = _best(sub, best_by)
        if b is not None:
            ax.axvline(b[0], color="grey", ls="--", lw=1)
            ax.set_title(
                f"{name}: best T={b[0]:.2f} ({METRIC_LABELS.get(best_by, best_by)} {b[1]:.3f})", fontsize=9
            )
        else:
            ax.set_title(str(name), fontsize=9)
        ax.set_xlabel("threshold T")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))
        p = out_dir / f"{prefix}{safe}.png"
        fig.savefig(p, dpi=dpi)
        paths.append(p)
    return paths


def plot_transfer(
    table,
    curves,
    per_class,
    calibrated: dict,
    chosen: str,
    path: str | Path,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """The calibrate-then-score study at a glance, three panels:

    1. mean IoU vs T on the scored split, a line per map source (pred mode), the T calibrated
       on the other split marked with a dot and the oracle with a star;
    2. mean IoU and AP50 per source: transferred (global T / per-class T) beside the oracle,
       predicted classes and GT-known;
    3. per-class transferred mean IoU of the chosen source beside the first source.

    Args:
        table: rows ``source, mode, protocol, mean_iou, ap50, ...``;
        curves: mean IoU indexed by T, a column per source; per_class: transferred mean IoU
            per class (index) and source (columns); calibrated: ``{source: global T}``.
    """
    fig = new_figure(17.0, 4.8, dpi)
    ax1, ax2, ax3 = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.0, 1.5, 1.2]})
    for i, src in enumerate(curves.columns):
        c = curves[src].dropna()
        if len(c) < 2:
            continue
        colour = class_color(i)
        ax1.plot(c.index, c.values, color=colour, lw=2.5 if src == chosen else 1.2, label=src)
        t = calibrated.get(src)
        if t is not None and t in c.index:
            ax1.plot([t], [c.loc[t]], "o", color=colour, ms=8, markeredgecolor="black")
        ax1.plot([c.idxmax()], [c.max()], "*", color=colour, ms=11, markeredgecolor="white")
    ax1.set_xlabel("threshold T (dot: calibrated, star: oracle)")
    ax1.set_ylabel("mean IoU (scored split, predicted classes)")
    ax1.set_ylim(-0.02, 1.02)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    sources = list(dict.fromkeys(table["source"]))
    bars = [
        ("pred", "transfer"),
        ("pred", "transfer_per_class"),
        ("pred", "oracle"),
        ("gt_known", "transfer"),
    ]
    width = 0.8 / len(bars)
    for j, (mode, proto) in enumerate(bars):
        for k, metric in enumerate(("mean_iou", "ap50")):
            vals = []
            for src in sources:
                sel = table[(table["source"] == src) & (table["mode"] == mode) & (table["protocol"] == proto)]
                vals.append(float(sel[metric].iloc[0]) if len(sel) else float("nan"))
            x = [i + (j - len(bars) / 2 + 0.5) * width for i in range(len(sources))]
            ax2.bar(
                x,
                vals,
                width * 0.9,
                bottom=0,
                color=class_color(j),
                alpha=1.0 if k == 0 else 0.45,
                hatch=None if k == 0 else "//",
                label=f"{mode} {proto} ({'mIoU' if k == 0 else 'AP50'})",
            )
    ax2.set_xticks(range(len(sources)))
    ax2.set_xticklabels(sources, rotation=20, fontsize=7, ha="right")
    ax2.set_ylabel("mean IoU (solid) / AP50 (hatched, overlaid)")
    ax2.set_ylim(0, 1)
    ax2.grid(alpha=0.3, axis="y")
    ax2.legend(fontsize=6, ncol=2)
    cols = list(dict.fromkeys([per_class.columns[0], chosen]))
    width = 0.8 / len(cols)
    for j, src in enumerate(cols):
        x = [i + (j - len(cols) / 2 + 0.5) * width for i in range(len(per_class))]
        ax3.bar(x, per_class[src].values, width * 0.9, color=class_color(j + 4), label=src)
    ax3.set_xticks(range(len(per_class)))
    ax3.set_xticklabels(per_class.index, rotation=40, fontsize=7, ha="right")
    ax3.set_ylabel("transferred mean IoU (per-class T)")
    ax3.set_ylim(0, 1)
    ax3.grid(alpha=0.3, axis="y")
    ax3.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def plot_map_checks(road: dict, sanity: dict, path: str | Path, dpi: int = 100) -> Path:
    """Two panels: ROAD MoRF (solid) / LeRF (dashed) class probability vs the fraction removed,
    a line pair per map; cascading randomisation, mean Spearman of the maps with the trained
    model's per step (layers re-initialised from the top), a line per method, the 0.5 line
    above which the maps did not change.

    Args:
        road: ``{map: {"fractions", "morf_curve", "lerf_curve"}}``; sanity: ``{method:
            {"steps", "spearman"}}`` (may be empty).
    """
    fig = new_figure(11.0, 4.2, dpi)
    ax1, ax2 = fig.subplots(1, 2)
    for i, (name, r) in enumerate(road.items()):
        colour = "grey" if name == "random" else class_color(i)
        ax1.plot(r["fractions"], r["morf_curve"], "-o", color=colour, ms=3, label=f"{name} MoRF")
        ax1.plot(r["fractions"], r["lerf_curve"], "--", color=colour, label=f"{name} LeRF")
    ax1.set_xlabel("fraction of pixels removed (noisy linear imputation)")
    ax1.set_ylabel("class probability")
    ax1.set_ylim(-0.02, 1.02)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    ax1.set_title("ROAD: MoRF low / LeRF high = faithful", fontsize=9)
    for i, (name, s) in enumerate(sanity.items()):
        ax2.plot(range(len(s["steps"])), s["spearman"], "-o", color=class_color(i), label=name)
        ax2.set_xticks(range(len(s["steps"])))
        ax2.set_xticklabels([f"+{n}" for n in s["steps"]], rotation=30, fontsize=7)
    ax2.axhline(0.5, color="red", lw=1, ls=":")
    ax2.set_ylim(-1.02, 1.02)
    ax2.set_ylabel("Spearman with the trained model's maps")
    ax2.set_xlabel("layers re-initialised (cumulative, from the top)")
    ax2.grid(alpha=0.3)
    if sanity:
        ax2.legend(fontsize=7)
    ax2.set_title("sanity: above the red line = maps did not change", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi)
