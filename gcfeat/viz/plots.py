"""Threshold-study plots: box quality vs threshold T per class, best T marked."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .overlay import class_color, new_figure, save_figure

__all__ = ["plot_threshold_curves", "plot_class_curves", "METRIC_LABELS"]

METRIC_LABELS = {
    "mean_iou": "mean IoU", "hit_rate": "hit rate (IoU >= 0.5)", "precision": "box precision",
    "recall": "box recall", "f1": "box F1", "pointing_game": "pointing game",
    "boxes_per_frame": "boxes per frame",
}


def _best(sub, metric):
    sub = sub.dropna(subset=[metric]).sort_values("threshold", kind="stable")
    if sub.empty:
        return None
    row = sub.loc[sub[metric].idxmax()]
    return float(row["threshold"]), float(row[metric])


def plot_threshold_curves(df, path: str | Path, metrics: Sequence[str] = ("mean_iou", "hit_rate"),
                          title: str | None = None, dpi: int = 100) -> Path:
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
            ax.plot(sub["threshold"], sub[metric], color=colour, lw=2.5 if agg else 1.2,
                    label=str(name), zorder=3 if agg else 2)
            b = _best(sub, metric)
            if b is not None and metric != "boxes_per_frame":
                ax.plot([b[0]], [b[1]], marker="*", ms=12 if agg else 8, color=colour,
                        markeredgecolor="white", zorder=4)
                if agg:
                    ax.annotate(f"T={b[0]:.2f}: {b[1]:.3f}", b, textcoords="offset points",
                                xytext=(6, 6), fontsize=8)
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


def plot_class_curves(df, out_dir: str | Path, metrics: Sequence[str] = ("mean_iou", "hit_rate"),
                      prefix: str = "tune_", best_by: str = "mean_iou", dpi: int = 100) -> list[Path]:
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
            ax.plot(sub["threshold"], sub[metric], marker="o", ms=3, label=METRIC_LABELS.get(metric, metric),
                    color=f"C{i}")
        b = _best(sub, best_by)
        if b is not None:
            ax.axvline(b[0], color="grey", ls="--", lw=1)
            ax.set_title(f"{name}: best T={b[0]:.2f} ({METRIC_LABELS.get(best_by, best_by)} {b[1]:.3f})",
                         fontsize=9)
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
