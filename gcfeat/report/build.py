"""Build the report pages: :func:`build_run_report` (a run directory) and
:func:`build_feature_report` (any feature file plus its dataset)."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Subset
from tqdm.auto import tqdm

from gcfeat.data import collate
from gcfeat.errors import GcfeatError
from gcfeat.io import FeatureFile, FeatureFileError
from gcfeat.models.fusion import fuse_conv_bn
from gcfeat.tasks import get_task

from .features import features_html, frame_rows_html, summarise_features
from .gallery import (
    GalleryItem,
    cam_pass,
    class_colors,
    frame_views,
    gallery_html,
    render_item,
    sample_indices,
)
from .page import esc, page
from .sections import (
    box_metrics_html,
    classification_html,
    faithfulness_html,
    figures_html,
    read_json,
    settings_html,
    training_html,
    tune_html,
)

__all__ = ["ReportError", "ReportResult", "build_run_report", "build_feature_report"]


class ReportError(GcfeatError):
    """A run directory or feature file the report cannot be built from."""


@dataclass
class ReportResult:
    """What a build wrote: the page, its image folder, the gallery size, the sections rendered
    (anchors), why a section was left out, and the build time."""

    html: Path
    files_dir: Path
    frames: int
    images: int
    sections: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Model:
    model: torch.nn.Module
    target: torch.nn.Module
    classes: list[str]
    mean: Any
    std: Any
    input_size: Any


def _task(name: str, source: Path):
    try:
        return get_task(name)
    except ValueError as e:
        raise ReportError(f"{source}: {e}") from None


def _load_model(task, checkpoint: Path, device: str) -> _Model:
    """The checkpoint through the task's loader (surgical: ``gcfeat.models.load_checkpoint``)."""
    if not checkpoint.is_file():
        raise ReportError(f"checkpoint {checkpoint}: no such file")
    try:
        model, info = task.load_checkpoint(checkpoint, map_location=device)
    except ValueError as e:  # the task loaders' user errors (not all GcfeatError)
        raise ReportError(f"checkpoint {checkpoint}: {e}") from None
    get = (
        (lambda k, d=None: info.get(k, d))
        if isinstance(info, dict)
        else (lambda k, d=None: getattr(info, k, d))
    )
    # the extraction pipeline's inference copy: batch norms folded into the convolutions
    # (the same maps up to float rounding, ~1.3x faster on a CPU)
    model, _ = fuse_conv_bn(model.eval().to(device))
    return _Model(
        model,
        task.target_layer(model),
        list(get("classes") or task.classes),
        get("mean"),
        get("std"),
        get("input_size") or task.input_size,
    )


class _Streamed(Protocol):
    """A streamed dataset the gallery can index (:class:`gcfeat.data.Cholec80Dataset`)."""

    def keys(self) -> list[tuple[str, int]]: ...

    def decode(self, keys: Iterable[tuple[str, int]]) -> Any: ...


def _dataset(task, data: Path, split: str, m: _Model | None, attrs: dict | None = None):
    """The split's Dataset at the model's (or, without a model, the feature file's ``attrs``)
    input size / normalisation."""
    if not data.exists():
        raise ReportError(f"--data {data}: no such folder")
    try:
        if task.name == "surgical":
            if m is not None:
                size, mean, std = m.input_size, m.mean, m.std
            else:
                a = attrs or {}
                size = a.get("input_size") or task.input_size
                mean, std = a.get("mean"), a.get("std")
            ds = task.build_dataset(
                data, split, size=tuple(size), mean=mean or task.mean, std=std or task.std
            )
        else:
            ds = task.build_dataset(data, split)
    except ValueError as e:  # a reader's user error (not all are GcfeatError)
        raise ReportError(f"--data {data} split {split!r}: {e}") from None
    if isinstance(ds, IterableDataset) and not callable(getattr(ds, "decode", None)):
        raise ReportError(
            f"--data {data}: a streamed dataset that cannot decode chosen frames "
            "(no keys() / decode()); the gallery needs an indexed layout such as "
            "MICCAI 2018, Cholec80 or the MRI tasks"
        )
    return ds


def _indexed(ds, idx: Sequence[int]):
    """``(dataset, indices)`` that read ``ds[idx]``: a streamed dataset (Cholec80: frames
    decoded from the mp4 in order) decodes only those frames, once
    (:meth:`gcfeat.data.Cholec80Dataset.decode`)."""
    if isinstance(ds, IterableDataset):
        streamed = cast(_Streamed, ds)  # _dataset refused a streamed set without decode()
        keys = streamed.keys()
        return streamed.decode([keys[i] for i in idx]), list(range(len(idx)))
    return ds, list(idx)


def _frame_table(ds) -> list[tuple[str, int]]:
    """``(video, frame_index)`` per item: a streamed dataset's ``keys()`` (from its
    annotations), ``items`` when the dataset lists them (MICCAI 2018), else by reading the
    items (MRI sets are small)."""
    if isinstance(ds, IterableDataset):
        return cast(_Streamed, ds).keys()
    items = getattr(ds, "items", None)
    if items is not None:
        return [(str(it[0]), int(it[1])) for it in items]
    out = []
    for i in tqdm(range(len(ds)), desc="index frames", unit="item", disable=None, leave=False):
        s = ds[i]
        out.append((str(s.get("video", "")), int(s.get("frame_index", i))))
    return out


_MARK = ".gcfeat-report"


def _files_dir(html: Path) -> tuple[Path, str]:
    """``report.html`` -> ``report_files/`` beside it and its reference from the page. A
    folder of an earlier report (it holds the marker file) is emptied, so a rebuild leaves no
    stale images; any other existing folder is refused and left as it is."""
    d = html.with_name(html.stem + "_files")
    if d.exists():
        if not (d / _MARK).is_file() and (not d.is_dir() or any(d.iterdir())):
            raise ReportError(
                f"{d}: exists and was not written by gcfeat.report; the report "
                f"{html} keeps its images there (choose another --out)"
            )
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / _MARK).write_text("images of the gcfeat report beside this folder\n")
    return d, d.name


def _resolve(p: str | None, run_dir: Path, out_prefix: str | None) -> Path | None:
    """A path recorded in ``summary.json`` (relative to where the run started): as written,
    then with the run's ``out`` prefix replaced by ``run_dir``, then by name inside
    ``run_dir``."""
    if not p:
        return None
    cands = [Path(p)]
    if out_prefix and not Path(p).is_absolute():
        try:
            cands.append(run_dir / Path(p).relative_to(out_prefix))
        except ValueError:
            pass
    cands.append(run_dir / Path(p).name)
    return next((c for c in cands if c.exists()), cands[0])


def _gallery(items_src, views_kw: dict, names, colors, files_dir: Path, rel: str) -> list[GalleryItem]:
    items: list[GalleryItem] = []
    for batch, heat, probs, boxes in items_src:
        for v in frame_views(batch, heat, probs, boxes, **views_kw):
            items.append(render_item(len(items), v, files_dir, rel, names, colors))
    return items


def _box_threshold(s: dict, attrs: dict | None, tune_dir: Path) -> float:
    t = ((attrs or {}).get("thresholds") or {}).get("box") if attrs else None
    if t is None:
        t = s.get("best_threshold")
    if t is None:
        rec = read_json(tune_dir / "tune_recommendation.json") or {}
        t = (rec.get("overall") or {}).get("threshold")
    return float(0.3 if t is None else t)


def build_run_report(
    run_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    max_frames: int | None = 300,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    split: str | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> ReportResult:
    """Write ``run_dir/report.html`` (or ``out``) and its image folder ``report_files/``.

    Reads ``summary.json`` (required) and whatever else the run wrote (see
    :mod:`gcfeat.report.sections`); the gallery samples ``max_frames`` frames (seeded, all when
    None) of the run's evaluation split (surgical ``val``, MRI ``test``) from ``summary["data"]``
    and runs one batched Grad-CAM pass with ``summary["checkpoint"]`` (or ``checkpoint``);
    boxes at the feature file's threshold (else the study's best T). The feature file section
    reads ``features.h5``. Returns a :class:`ReportResult`.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"run directory {run_dir}: no such folder")
    s = read_json(run_dir / "summary.json")
    if not isinstance(s, dict):
        what = "unreadable" if (run_dir / "summary.json").exists() else "missing"
        raise ReportError(
            f"{run_dir}: not a run directory (summary.json {what}; expected the "
            "folder a demo wrote, e.g. runs/demo)"
        )
    task = _task(s.get("task", "surgical"), run_dir / "summary.json")
    html = Path(out) if out is not None else run_dir / "report.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    files_dir, rel = _files_dir(html)
    skipped: dict[str, str] = {}
    tune_dir = run_dir / "tune"
    attrs, feat_html = _run_features(s, run_dir, seed, skipped)
    thr = _box_threshold(s, attrs, tune_dir)
    names, gal, n_frames = list(task.classes), "", 0
    try:
        names, gal, n_frames = _run_gallery(
            s,
            run_dir,
            task,
            thr,
            files_dir,
            rel,
            checkpoint=checkpoint,
            split=split,
            max_frames=max_frames,
            seed=seed,
            device=device,
            batch_size=batch_size,
            progress=progress,
        )
    except (GcfeatError, OSError) as e:  # the rest of the report is still worth writing
        skipped["gallery"] = str(e)
        gal = f'<p class="note">No gallery: {esc(e)}</p>'
    sections = [
        ("settings", "Run", settings_html(s)),
        (
            "classification",
            "Classification",
            classification_html(s, names, read_json(run_dir / "eval" / "metrics.json")),
        ),
        ("training", "Training", training_html(run_dir, s)),
        ("threshold", "Threshold study", tune_html(tune_dir, files_dir, rel)),
        ("boxes", "Box metrics", box_metrics_html(tune_dir, thr)),
        ("faithfulness", "Localisation and faithfulness", faithfulness_html(run_dir, s, files_dir, rel)),
        ("figures", "Figures", figures_html(sorted(run_dir.glob("bbox_*.png")), files_dir, rel)),
        ("gallery", "Gallery", gal),
        ("features", "Feature file", feat_html),
    ]
    title = f"gcfeat {task.name} run: {run_dir.resolve().name}"
    return _write(html, files_dir, title, f"{run_dir}", sections, n_frames, skipped, t0)


def _run_features(s: dict, run_dir: Path, seed: int, skipped: dict) -> tuple[dict | None, str]:
    """The run's feature file (``summary["features"]``, else ``features.h5``): its root
    attributes and its section."""
    feats = s.get("features")
    path = (
        _resolve(feats.get("file") if isinstance(feats, dict) else feats, run_dir, s.get("out"))
        or run_dir / "features.h5"
    )
    if not path.is_file():
        skipped["features"] = f"{path}: no feature file"
        return None, ""
    try:
        with FeatureFile(path) as ff:
            return dict(ff.attrs), features_html(summarise_features(ff)) + _rows_sample(ff, seed)
    except FeatureFileError as e:
        skipped["features"] = str(e)
        return None, ""


def _run_gallery(
    s: dict,
    run_dir: Path,
    task,
    thr: float,
    files_dir: Path,
    rel: str,
    *,
    checkpoint,
    split,
    max_frames,
    seed,
    device,
    batch_size,
    progress,
) -> tuple[list[str], str, int]:
    """``(class names, gallery section, frames)``: one CAM pass of the run's checkpoint over
    a seeded sample of its evaluation split, boxes at ``thr``."""
    ck = Path(checkpoint) if checkpoint is not None else _resolve(s.get("checkpoint"), run_dir, s.get("out"))
    if ck is None:
        raise ReportError("summary.json names no checkpoint (pass --checkpoint)")
    m = _load_model(task, ck, device)
    data = _resolve(s.get("data"), run_dir, s.get("out")) or run_dir / "data"
    sp = split or s.get("split") or ("val" if task.name == "surgical" else "test")
    full = _dataset(task, data, sp, m)
    idx = sample_indices(len(full), max_frames, seed)
    ds, idx = _indexed(full, idx)
    src = cam_pass(
        m.model,
        m.target,
        ds,
        idx,
        classes=m.classes,
        activation=task.activation,
        threshold=thr,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    colors = class_colors(len(m.classes))
    items = _gallery(
        src, dict(activation=task.activation, mean=m.mean, std=m.std), m.classes, colors, files_dir, rel
    )
    note = (
        f"Split {sp}: {len(idx)} of {len(full)} frames (seed {seed}); Grad-CAM of each "
        f"predicted class; boxes at T = {thr:g}."
    )
    return m.classes, gallery_html(items, m.classes, colors, note), len(items)


def _rows_sample(ff: FeatureFile, seed: int, k: int = 3) -> str:
    """The rows of ``k`` frames (seeded) that have at least one row."""
    cands = []
    for v in ff:
        have = set()
        for m in v.methods:
            have.update(np.unique(v.rows(m)["frame"]).tolist())
        cands += [(v.name, int(i)) for i in sorted(have)]
    if not cands:
        return ""
    pick = [cands[i] for i in sample_indices(len(cands), k, seed)]
    return "<h3>rows a downstream model reads</h3>" + frame_rows_html(ff, pick)


def _write(
    html: Path, files_dir: Path, title: str, subtitle: str, sections, n_frames: int, skipped: dict, t0: float
) -> ReportResult:
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    html.write_text(page(title, f"{subtitle} · built {stamp}", sections), encoding="utf-8")
    images = sum(1 for p in files_dir.rglob("*") if p.is_file() and p.name != _MARK)
    for a, _, body in sections:
        if not body and a not in skipped:
            skipped[a] = "nothing in the run for it"
    return ReportResult(
        html, files_dir, n_frames, images, [a for a, _, b in sections if b], skipped, time.perf_counter() - t0
    )


def build_feature_report(
    features_h5: str | os.PathLike,
    data_dir: str | os.PathLike,
    *,
    n: int = 48,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    progress: bool = True,
) -> ReportResult:
    """Write a page for any feature file: its summary, the rows of a few frames, and a gallery
    of ``n`` frames (seeded sample of the file's frames) drawn from ``data_dir`` with the file's
    boxes (the first of m2, m1, m3 it holds); with ``checkpoint``, one Grad-CAM pass adds each
    predicted class's heatmap. ``out`` defaults to ``<file stem>_report.html`` beside the file.
    """
    t0 = time.perf_counter()
    features_h5 = Path(features_h5)
    if not features_h5.is_file():
        raise ReportError(f"feature file {features_h5}: no such file")
    try:
        ff = FeatureFile(features_h5)
    except FeatureFileError as e:
        raise ReportError(str(e)) from None
    with ff:
        if not ff.videos or "classes" not in ff.attrs:
            raise ReportError(
                f"{features_h5}: not a gcfeat feature file (no videos or no 'classes' attribute)"
            )
        task = _task(ff.attrs.get("task") or "surgical", features_h5)
        html = Path(out) if out is not None else features_h5.with_name(features_h5.stem + "_report.html")
        html.parent.mkdir(parents=True, exist_ok=True)
        files_dir, rel = _files_dir(html)
        skipped: dict[str, str] = {}
        fs = summarise_features(ff)
        feat_html = features_html(fs) + _rows_sample(ff, seed)
        method = next((m for m in ("m2", "m1", "m3") if m in ff.methods), None)
        gal = _feature_gallery(
            ff,
            task,
            Path(data_dir),
            method,
            n=n,
            seed=seed,
            checkpoint=checkpoint,
            device=device,
            batch_size=batch_size,
            progress=progress,
            files_dir=files_dir,
            rel=rel,
            skipped=skipped,
        )
        sections = [("features", "Feature file", feat_html), ("gallery", "Gallery", gal[0])]
        title = f"gcfeat feature file: {features_h5.name}"
        return _write(html, files_dir, title, str(features_h5), sections, gal[1], skipped, t0)


def _feature_gallery(
    ff: FeatureFile,
    task,
    data: Path,
    method: str | None,
    *,
    n: int,
    seed: int,
    checkpoint,
    device: str,
    batch_size: int,
    progress: bool,
    files_dir: Path,
    rel: str,
    skipped: dict,
) -> tuple[str, int]:
    """The file's boxes on ``n`` of its frames, found in the dataset's splits by
    ``(video, frame_index)``; heatmaps when a checkpoint is given."""
    names = ff.classes
    colors = class_colors(len(names))
    m = _load_model(task, Path(checkpoint), device) if checkpoint is not None else None
    if m is not None and list(m.classes) != list(names):
        raise ReportError(
            f"--checkpoint {checkpoint}: classes {m.classes} differ from the feature file's {names}"
        )
    allf = [(v.name, int(f), i) for v in ff for i, f in enumerate(v.frame_index)]
    pick = [allf[i] for i in sample_indices(len(allf), n, seed)]
    want = {(v, f): (v, i) for v, f, i in pick}
    found: dict[str, list] = {}
    for sp in task.splits:
        try:
            ds = _dataset(task, data, sp, m, ff.attrs)
        except (GcfeatError, OSError) as e:
            skipped.setdefault("splits", "")
            skipped["splits"] += f"{sp}: {e}; "
            continue
        keys = [(j, k) for j, k in enumerate(_frame_table(ds)) if k in want]
        hits = [(j, want.pop(k)) for j, k in keys]  # (dataset index, (video, file row))
        if hits:
            found[sp] = [ds, hits]
        if not want:
            break
    if not found:
        return (
            f'<p class="note">None of the {len(pick)} sampled frames is in {esc(data)} '
            f"(splits {', '.join(task.splits)}).</p>",
            0,
        )
    items: list[GalleryItem] = []
    kw = dict(
        activation=task.activation,
        mean=m.mean if m else ff.attrs.get("mean"),
        std=m.std if m else ff.attrs.get("std"),
    )
    for ds, hits in found.values():
        ds, idx = _indexed(ds, [j for j, _ in hits])
        rows = [_file_rows(ff, method, v, i) for _, (v, i) in hits]
        if m is not None:
            src = cam_pass(
                m.model,
                m.target,
                ds,
                idx,
                classes=names,
                activation=task.activation,
                threshold=None,
                batch_size=batch_size,
                device=device,
                progress=progress,
            )
        else:
            src = _plain_batches(ds, idx, batch_size)
        start = 0
        for batch, heat, probs, _ in src:
            b = len(batch["image"])
            part = rows[start : start + b]
            if probs is None:
                probs = torch.as_tensor(np.stack([r[3] for r in part]))
            for v in frame_views(batch, heat, probs, [r[:3] for r in part], **kw):
                items.append(render_item(len(items), v, files_dir, rel, names, colors))
            start += b
    missing = len(pick) - len(items)
    note = (
        f"{len(items)} of the file's {len(allf)} frames (seed {seed}); boxes: {method} rows"
        + ("; heatmaps: Grad-CAM of the checkpoint" if m else "; no checkpoint, no heatmaps")
        + (f"; {missing} sampled frames not found in {data}" if missing else "")
        + "."
    )
    return gallery_html(items, names, colors, note), len(items)


def _file_rows(ff: FeatureFile, method: str | None, video: str, i: int):
    """``(boxes, labels, scores, class_prob)`` of row ``i`` of ``video`` for ``method``."""
    f = ff[video].frame(i)
    prob = np.asarray(f["class_prob"], np.float32)
    if method is None:
        sd = int(ff.attrs.get("spatial_dims") or 2)
        return (np.zeros((0, 2 * sd), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32), prob)
    r = f[method]
    keep = ~r["empty"].astype(bool) if "empty" in r else slice(None)
    return r["box"][keep], r["label"][keep], r["score"][keep], prob


def _plain_batches(ds, idx: Sequence[int], batch_size: int):
    """Batches of ``ds[idx]`` shaped as :func:`cam_pass`'s, without heatmaps."""
    for batch in DataLoader(Subset(ds, list(idx)), batch_size=batch_size, collate_fn=collate):
        yield batch, None, None, None
