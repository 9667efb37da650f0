"""The feature file in the report: a summary (rows per method and class, empty M3 masks,
boxes per frame, settings) and, for a few frames, the rows a downstream model reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gcfeat.io import FeatureFile
from gcfeat.io.features import BOX_COLUMNS

from .page import esc, table

__all__ = ["FeatureSummary", "summarise_features", "features_html", "frame_rows_html"]

#: settings shown from the file's root attributes, in this order
_ATTRS = (
    "task",
    "architecture",
    "input_size",
    "layout",
    "thresholds",
    "activation",
    "spatial_dims",
    "boxes",
    "checkpoint_sha256",
    "gcfeat_version",
    "created",
)


@dataclass
class FeatureSummary:
    """Counts of a feature file.

    ``rows[method][class]`` rows, ``empty[method][class]`` empty-mask rows, ``per_frame[method]``
    boxes per frame ``(N,)`` over all frames, ``dims[method]`` feature width.
    """

    path: str
    videos: list[str]
    frames: int
    classes: list[str]
    methods: list[str]
    rows: dict[str, dict[str, int]]
    empty: dict[str, dict[str, int]]
    per_frame: dict[str, np.ndarray]
    dims: dict[str, int]
    attrs: dict


def summarise_features(ff: FeatureFile) -> FeatureSummary:
    """Count rows per method and class, empty rows, boxes per frame (one pass over the labels)."""
    classes = ff.classes
    k = max(len(classes), 1)
    rows, empty, per_frame, dims = {}, {}, {}, {}
    for m in ff.methods:
        counts, empties, frames = np.zeros(k, np.int64), np.zeros(k, np.int64), []
        for v in ff:
            if m not in v.methods:
                continue
            r = v.rows(m)
            lab = r["label"].astype(np.int64)
            k = max(k, int(lab.max()) + 1 if len(lab) else 0)
            counts = np.pad(counts, (0, k - len(counts)))
            empties = np.pad(empties, (0, k - len(empties)))
            counts += np.bincount(lab, minlength=k)
            if "empty" in r:
                empties += np.bincount(lab[r["empty"].astype(bool)], minlength=k)
            frames.append(np.bincount(r["frame"], minlength=len(v)))
            dims[m] = int(r["features"].shape[1])
        names = [classes[i] if i < len(classes) else str(i) for i in range(len(counts))]
        rows[m] = dict(zip(names, counts.tolist()))
        empty[m] = dict(zip(names, empties.tolist()))
        per_frame[m] = np.concatenate(frames) if frames else np.zeros(0, np.int64)
    return FeatureSummary(
        ff.path,
        ff.videos,
        ff.num_frames(),
        classes,
        list(ff.methods),
        rows,
        empty,
        per_frame,
        dims,
        dict(ff.attrs),
    )


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= 110 else s[:107] + "..."


def features_html(s: FeatureSummary) -> str:
    """The summary tables: settings, rows per method and class (empty M3 masks beside), boxes
    per frame."""
    out = [
        f'<p class="note"><code>{esc(s.path)}</code>: {len(s.videos)} videos, {s.frames} '
        f"frames, methods {esc(', '.join(s.methods) or 'none')}; feature width "
        f"{esc(', '.join(f'{m} {d}' for m, d in s.dims.items()) or 'n/a')}.</p>"
    ]
    attrs = [(k, _short(s.attrs[k])) for k in _ATTRS if k in s.attrs]
    if attrs:
        out.append(table(("setting", "value"), attrs, caption="root attributes"))
    names = [c for c in (s.classes or next(iter(s.rows.values()), {}).keys())]
    if s.methods:
        header = (
            ["class"]
            + [f"{m} rows" for m in s.methods]
            + [f"{m} empty" for m in s.methods if any(s.empty[m].values()) or m == "m3"]
        )
        emp = [m for m in s.methods if any(s.empty[m].values()) or m == "m3"]
        body = []
        for c in names:
            body.append([c] + [s.rows[m].get(c, 0) for m in s.methods] + [s.empty[m].get(c, 0) for m in emp])
        body.append(
            ["all"] + [sum(s.rows[m].values()) for m in s.methods] + [sum(s.empty[m].values()) for m in emp]
        )
        out.append(
            '<div class="cols">'
            + table(
                header,
                body,
                cls="rows-per-class",
                caption="rows per method and class (empty: mask below T, zero features)",
            )
        )
        pf = []
        for m in s.methods:
            n = s.per_frame[m]
            hist = np.bincount(np.minimum(n, 5), minlength=6) if len(n) else np.zeros(6, int)
            pf.append([m, float(n.mean()) if len(n) else None, int(n.max()) if len(n) else 0, *hist.tolist()])
        out.append(
            table(
                ("method", "mean", "max", "0", "1", "2", "3", "4", "5+"),
                pf,
                cls="boxes-per-frame",
                caption="boxes (rows) per frame: frames with 0, 1, ... rows",
            )
            + "</div>"
        )
    return "".join(out)


def frame_rows_html(ff: FeatureFile, picks: Sequence[tuple[str, int]], *, values: int = 8) -> str:
    """For each ``(video, row in frame_index)``: every method's rows as a downstream model reads
    them: class, score, box, empty flag and the first ``values`` numbers of the feature vector."""
    classes = ff.classes
    cols = BOX_COLUMNS[int(ff.attrs.get("spatial_dims") or 2)]
    out = []
    for video, i in picks:
        f = ff[video].frame(i)
        out.append(f"<h3>{esc(video)} frame {f['frame_index']}</h3>")
        prob = f["class_prob"]
        top = np.argsort(-prob)[:4]
        out.append(
            '<p class="note">class_prob: '
            + esc(", ".join(f"{classes[j] if j < len(classes) else j} {prob[j]:.2f}" for j in top))
            + "</p>"
        )
        for m in ff[video].methods:
            r = f[m]
            body = []
            for j in range(len(r["label"])):
                lab = int(r["label"][j])
                vec = r["features"][j]
                body.append(
                    [
                        classes[lab] if lab < len(classes) else str(lab),
                        lab,
                        float(r["score"][j]),
                        " ".join(f"{b:g}" for b in r["box"][j]),
                        bool(r["empty"][j]) if "empty" in r else False,
                        " ".join(f"{x:+.3f}" for x in vec[:values]) + (" ..." if len(vec) > values else ""),
                    ]
                )
            if not body:
                out.append(f'<p class="note">{esc(m)}: no rows for this frame</p>')
                continue
            out.append(
                table(
                    (
                        "class",
                        "label",
                        "score",
                        " ".join(cols),
                        "empty",
                        f"features[:{values}] of {r['features'].shape[1]}",
                    ),
                    body,
                    cls="frame-rows",
                    caption=f"{m}: {len(body)} rows",
                )
            )
    return "".join(out)
