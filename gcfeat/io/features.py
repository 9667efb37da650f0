"""The HDF5 feature file: layout, a resumable writer and a reader.

Layout (one group per video)::

    /<video>/frame_index       (N,)    int64    frame numbers in the source
    /<video>/class_prob        (N, K)  float32  sigmoid scores (softmax: single-label tasks)
    /<video>/<method>/frame    (R,)    int64    row in frame_index
    /<video>/<method>/label    (R,)    int64    class index (into the ``classes`` attribute)
    /<video>/<method>/box      (R, 4)  float32  x1, y1, x2, y2 (exclusive end) in frame pixels
                                                (the model input size; M3: the heat's box);
                                                volumes (R, 6): z1, y1, x1, z2, y2, x2
    /<video>/<method>/score    (R,)    float32  box confidence (M1/M2), class score (M3)
    /<video>/<method>/features (R, D)  float32
    /<video>/<method>/empty    (R,)    bool     region empty (M3 mask below T): zero features
    /<video> attribute source_size  [H, W] (JSON) size of the source frames, when the dataset
                                    tells it (surgical frames); absent in older files

Boxes in source-frame pixels are a conversion, not a dataset: ``box * (source_size /
input_size)`` per axis (x by W ratio, y by H ratio), exclusive end, float
(:func:`box_to_source`, ``VideoFeatures.rows(m, source_pixels=True)``). Exports round them to
what each consumer expects (:mod:`gcfeat.io.exports`).

Root attributes (JSON text): ``classes``, ``thresholds``, ``architecture``,
``checkpoint_sha256``, ``input_size``, ``mean``, ``std``, ``layout`` (pooling), ``methods``
(with each method's settings), ``gcfeat_version``, ``created``, and ``format`` (this text); MRI
tasks add ``task``, ``activation`` and ``spatial_dims``, features of annotated boxes ``boxes``.
A "video" is a case (prostate) or a split (organ3d, alzheimer) there, a frame a slice or a row.
Rows of a method are sorted by ``frame``; frames are in the order they were written (source
order for a plain run).

Crash safety. The writer appends one batch at a time: first every method's rows and
``class_prob``, then ``frame_index`` last, then ``flush()``. HDF5 writes its metadata (the
dataset sizes) to disk at the flush, so a process killed at any moment (SIGKILL included) leaves
the state of the last flush: whole batches. Two things keep the flushed state intact until the
next flush: the file never reuses freed space (``fs_strategy="none"``), and rows are written
uncompressed while the run goes (appending to a compressed chunk moves it, and the space of the
old copy, still referenced by the last flushed state, could be overwritten). ``compression`` is
applied when the writer closes after a complete run, by a repack into a temporary file and an
atomic rename; reopening a compressed file for appending first repacks it uncompressed. On reopen the writer trims anything past the
committed frames (rows whose ``frame`` points past ``len(frame_index)``, ``class_prob`` rows past
it), so no frame is lost or doubled. The file uses the default (earliest) HDF5 format on
purpose: with ``libver="latest"`` / SWMR, a killed writer leaves the superblock marked "open for
write" and the file cannot be reopened for appending without the ``h5clear`` tool. The residual
risk is a kill in the middle of the flush itself (milliseconds per batch); the tests kill a
writer at random moments repeatedly and reopen the file.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from gcfeat.errors import GcfeatError
from gcfeat.io.paths import writable_file

FORMAT = __doc__.split("Crash safety.")[0].strip()

#: Root attributes that do not describe the extraction settings (never compared on resume).
VOLATILE_ATTRS = ("gcfeat_version", "created", "format")
ROW_FIELDS = ("frame", "label", "box", "score", "features", "empty")
#: box columns by spatial dims (2D boxes are x-first, 3D boxes in tensor order)
BOX_COLUMNS = {2: ("x1", "y1", "x2", "y2"), 3: ("z1", "y1", "x1", "z2", "y2", "x2")}


class FeatureFileError(GcfeatError):
    """A feature file that cannot be read or appended to as asked."""


class SettingsMismatch(FeatureFileError):
    """Appending to a file made with different settings."""


def _encode(value) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray,)):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"attribute value {o!r} is not JSON serialisable")


def _normalise(value):
    """Round-trip through JSON so tuples / numpy values compare equal to what the file holds."""
    return json.loads(_encode(value))


def read_attrs(h5: h5py.File) -> dict:
    out = {}
    for k, v in h5.attrs.items():
        if isinstance(v, bytes):
            v = v.decode()
        try:
            out[k] = json.loads(v) if isinstance(v, str) else v
        except json.JSONDecodeError:
            out[k] = v
    return out


def settings_diff(expected: Mapping, found: Mapping) -> list[str]:
    """Human-readable differences between two attribute dicts (volatile keys ignored)."""
    keys = sorted((set(expected) | set(found)) - set(VOLATILE_ATTRS))
    diffs = []
    for k in keys:
        a, b = _normalise(expected.get(k)), _normalise(found.get(k))
        if a != b:
            diffs.append(f"{k}: file has {b!r}, this run has {a!r}")
    return diffs


class FeatureWriter:
    """Append feature batches to an HDF5 file (see the module docstring for the layout).

    Example::

        with FeatureWriter("feats.h5", attrs, dims={"m2": 512, "m3": 512},
                           num_classes=11) as w:
            todo = [f for f in frames if f not in w.done("seq_1")]
            w.write(["seq_1"] * B, frame_index, class_prob, {"m2": feats_m2, "m3": feats_m3})

    Args:
        path: the ``.h5`` file; created, or reopened for appending when ``resume``.
        attrs: root attributes (settings); on reopen they must equal the file's, else
            :class:`SettingsMismatch` lists the differences.
        dims: feature length per method.
        num_classes: K of ``class_prob``.
        compression: ``None``, ``"gzip"`` or ``"lzf"``.
        resume: reopen an existing file (False: an existing file is an error).
        chunk_rows: rows per chunk of the row datasets.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        attrs: Mapping,
        dims: Mapping[str, int],
        num_classes: int,
        compression: str | None = None,
        resume: bool = True,
        chunk_rows: int = 256,
        box_dim: int = 4,
    ) -> None:
        if compression not in (None, "gzip", "lzf"):
            raise FeatureFileError(f"compression: got {compression!r}, expected None, 'gzip' or 'lzf'")
        self.path = os.fspath(path)
        self.dims = {m: int(d) for m, d in dims.items()}
        self.num_classes = int(num_classes)
        self.compression = compression
        self.chunk_rows = int(chunk_rows)
        if box_dim not in (4, 6):
            raise FeatureFileError(f"box_dim: got {box_dim}, expected 4 (2D) or 6 (3D)")
        self.box_dim = int(box_dim)
        attrs = dict(attrs)
        writable_file(self.path)  # a folder, or a read-only place: named before any work
        exists = os.path.exists(self.path)
        if exists and not resume:
            raise FeatureFileError(
                f"{self.path}: exists; pass resume=True (CLI: drop "
                f"--no-resume) to append, or choose another --out"
            )
        if exists:
            # settings are compared on a read-only open first: a file the run refuses to
            # append to is never opened for writing (nor repacked), so it stays byte-identical
            try:
                with h5py.File(self.path, "r") as h5:
                    held = read_attrs(h5)
            except OSError as e:
                raise FeatureFileError(
                    f"{self.path}: cannot be reopened for appending ({e}); it is not a readable HDF5 file"
                ) from None
            diffs = settings_diff(attrs, held)
            if diffs:
                raise SettingsMismatch(
                    f"{self.path}: made with different settings, refusing to append:\n  " + "\n  ".join(diffs)
                )
            try:
                if _is_compressed(self.path):
                    repack(self.path, None)
                self.h5 = h5py.File(self.path, "a")
            except OSError as e:
                raise FeatureFileError(
                    f"{self.path}: cannot be reopened for appending ({e}); "
                    f"is it read-only or locked by another run?"
                ) from None
            self._trim()
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.h5 = h5py.File(self.path, "w", fs_strategy="none")
            attrs.setdefault("format", FORMAT)
            attrs.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            try:
                from gcfeat import __version__
            except ImportError:  # pragma: no cover
                __version__ = "unknown"
            attrs.setdefault("gcfeat_version", __version__)
            for k, v in attrs.items():
                self.h5.attrs[k] = v if k == "format" else _encode(v)
            self.h5.flush()
        self._done: dict[str, set] = {}

    # ----------------------------------------------------------------- state
    def _trim(self) -> None:
        """Drop rows written after the last committed ``frame_index`` (a killed batch)."""
        for g in self.h5.values():
            n = g["frame_index"].shape[0]
            if g["class_prob"].shape[0] != n:
                g["class_prob"].resize(n, 0)
            for m in self.dims:
                if m not in g:
                    continue
                frame = g[m]["frame"][:]
                keep = int(np.searchsorted(frame, n, side="left"))  # rows sorted by frame
                if keep != frame.shape[0]:
                    for f in ROW_FIELDS:
                        if f in g[m]:
                            g[m][f].resize(keep, 0)
        self.h5.flush()

    def done(self, video: str) -> set:
        """Frame numbers of ``video`` already committed."""
        if video not in self._done:
            self._done[video] = set(self.h5[video]["frame_index"][:].tolist()) if video in self.h5 else set()
        return self._done[video]

    def _group(self, video: str) -> h5py.Group:
        if video in self.h5:
            return self.h5[video]
        g = self.h5.create_group(video)
        kw: dict[str, object] = {}  # uncompressed while appending (see "Crash safety")
        c = self.chunk_rows
        g.create_dataset("frame_index", (0,), "i8", maxshape=(None,), chunks=(4 * c,), **kw)
        g.create_dataset(
            "class_prob",
            (0, self.num_classes),
            "f4",
            maxshape=(None, self.num_classes),
            chunks=(c, self.num_classes),
            **kw,
        )
        for m, d in self.dims.items():
            s = g.create_group(m)
            s.create_dataset("frame", (0,), "i8", maxshape=(None,), chunks=(4 * c,), **kw)
            s.create_dataset("label", (0,), "i8", maxshape=(None,), chunks=(4 * c,), **kw)
            b = self.box_dim
            s.create_dataset("box", (0, b), "f4", maxshape=(None, b), chunks=(c, b), **kw)
            s.create_dataset("score", (0,), "f4", maxshape=(None,), chunks=(4 * c,), **kw)
            s.create_dataset(
                "features",
                (0, d),
                "f4",
                maxshape=(None, d),
                chunks=(max(1, min(c, (1 << 20) // (4 * d))), d),
                **kw,
            )
            s.create_dataset("empty", (0,), "bool", maxshape=(None,), chunks=(4 * c,), **kw)
        return g

    @staticmethod
    def _append(ds: h5py.Dataset, values: np.ndarray) -> None:
        if values.shape[0] == 0:
            return
        n = ds.shape[0]
        ds.resize(n + values.shape[0], 0)
        ds[n:] = values

    # ----------------------------------------------------------------- write
    def write(
        self,
        videos: Sequence[str],
        frame_index,
        class_prob,
        features: Mapping,
        source_sizes: Sequence | None = None,
    ) -> None:
        """Append one batch and commit it.

        Args:
            videos: ``(B,)`` video name per batch row.
            frame_index: ``(B,)`` frame numbers in the source.
            class_prob: ``(B, K)`` sigmoid scores.
            features: ``{method: Features}`` whose ``frame`` is the row in this batch (tensors
                or numpy arrays).
            source_sizes: optional ``(B,)`` ``(H, W)`` of each source frame; the first one of a
                video becomes its ``source_size`` attribute.
        """
        frame_index = np.asarray(_np(frame_index), dtype=np.int64).reshape(-1)
        class_prob = np.asarray(_np(class_prob), dtype=np.float32)
        videos = list(videos)
        if len(videos) != frame_index.shape[0] or class_prob.shape != (len(videos), self.num_classes):
            raise FeatureFileError(
                f"write: got {len(videos)} videos, frame_index "
                f"{frame_index.shape}, class_prob {class_prob.shape}; "
                f"expected B, (B,), (B, {self.num_classes})"
            )
        unknown = set(features) - set(self.dims)
        if unknown:
            raise FeatureFileError(f"write: methods {sorted(unknown)} not in the file's {sorted(self.dims)}")
        rows = {m: {f: _np(getattr(feat, f)) for f in ROW_FIELDS} for m, feat in features.items()}
        commits = []
        for video in dict.fromkeys(videos):  # videos in order of appearance
            sel = np.array([v == video for v in videos])
            idx = np.flatnonzero(sel)
            done = self.done(video)
            dup = [int(f) for f in frame_index[idx] if int(f) in done]
            if dup or len(set(frame_index[idx].tolist())) != idx.size:
                raise FeatureFileError(
                    f"{self.path}: video {video!r} frames {dup or 'repeated'}"
                    f" already written; a frame is written once"
                )
            g = self._group(video)
            if source_sizes is not None and "source_size" not in g.attrs:
                g.attrs["source_size"] = _encode([int(v) for v in source_sizes[int(idx[0])]])
            n = g["frame_index"].shape[0]
            to_row = np.full(len(videos), -1, np.int64)
            to_row[idx] = n + np.arange(idx.size)
            for m, r in rows.items():
                take = (
                    np.flatnonzero(sel[r["frame"].astype(np.int64)])
                    if r["frame"].size
                    else np.zeros(0, np.int64)
                )
                fr = to_row[r["frame"][take].astype(np.int64)]
                order = np.argsort(fr, kind="stable")
                take = take[order]
                s = g[m]
                self._append(s["frame"], fr[order])
                self._append(s["label"], r["label"][take].astype(np.int64))
                self._append(s["box"], r["box"][take].astype(np.float32).reshape(-1, self.box_dim))
                self._append(s["score"], r["score"][take].astype(np.float32))
                self._append(s["features"], r["features"][take].astype(np.float32))
                self._append(s["empty"], r["empty"][take].astype(bool))
            self._append(g["class_prob"], class_prob[idx])
            commits.append((video, g, frame_index[idx]))
        for video, g, fi in commits:  # the commit: frame_index last
            self._append(g["frame_index"], fi)
            self.done(video).update(fi.tolist())
        self.h5.flush()

    def close(self, finalize: bool = True) -> None:
        """Flush and close; ``finalize`` applies ``compression`` (a repack)."""
        if getattr(self, "h5", None) is not None and self.h5.id.valid:
            self.h5.flush()
            self.h5.close()
            if finalize and self.compression:
                repack(self.path, self.compression)

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(finalize=exc_type is None)  # an interrupted run stays appendable


def _is_compressed(path: str) -> bool:
    found = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.compression:
            found.append(name)
            return True

    with h5py.File(path, "r") as h:
        h.visititems(visit)
    return bool(found)


def repack(
    path: str | os.PathLike, compression: str | None, out: str | os.PathLike | None = None, rows: int = 65536
) -> str:
    """Copy a feature file with every dataset (re)compressed (``None``: uncompressed).

    Writes ``<out>.tmp`` then renames it over ``out`` (default: ``path`` itself), so a kill
    during the repack leaves the original file untouched.
    """
    path = os.fspath(path)
    out = os.fspath(out) if out is not None else path
    tmp = out + ".tmp"
    kw = dict(compression=compression) if compression else {}
    with h5py.File(path, "r") as src, h5py.File(tmp, "w", fs_strategy="none") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                dst.require_group(name)
                return
            d = dst.create_dataset(name, obj.shape, obj.dtype, maxshape=obj.maxshape, chunks=obj.chunks, **kw)
            for a in range(0, obj.shape[0], rows):
                d[a : a + rows] = obj[a : a + rows]

        src.visititems(copy)
    os.replace(tmp, out)
    return out


def _np(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.dtype.is_floating_point:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


# --------------------------------------------------------------------- reader
@dataclass
class VideoFeatures:
    """Per-video view of a feature file: ``frame_index``, ``class_prob`` and per-frame rows."""

    group: h5py.Group
    methods: list[str]

    @property
    def name(self) -> str:
        return self.group.name.strip("/")

    @property
    def frame_index(self) -> np.ndarray:
        return self.group["frame_index"][:]

    @property
    def class_prob(self) -> np.ndarray:
        return self.group["class_prob"][: len(self)]

    def __len__(self) -> int:
        return int(self.group["frame_index"].shape[0])

    @property
    def source_size(self) -> tuple | None:
        """``(H, W)`` of the source frames, or None when the file does not record it."""
        v = self.group.attrs.get("source_size")
        return tuple(json.loads(v)) if v is not None else None

    @property
    def input_size(self) -> list | None:
        """The file's model input ``(H, W)`` (root attribute ``input_size``)."""
        v = self.group.file.attrs.get("input_size")
        return json.loads(v) if isinstance(v, (str, bytes)) else v

    def rows(self, method: str, source_pixels: bool = False) -> dict[str, np.ndarray]:
        """All committed rows of ``method``: ``{frame, label, box, score, features, empty}``;
        ``source_pixels`` adds ``box_source`` (:func:`box_to_source`)."""
        if method not in self.group:
            raise FeatureFileError(
                f"{self.group.file.filename}: video {self.name!r} has no "
                f"method {method!r}; it has {self.methods}"
            )
        s = self.group[method]
        frame = s["frame"][:]
        keep = int(np.searchsorted(frame, len(self), side="left"))
        r = {f: s[f][:keep] for f in ROW_FIELDS if f in s}
        if source_pixels:
            r["box_source"] = box_to_source(
                r["box"], self.input_size, self.source_size, where=f"{self.group.file.filename}: {self.name}"
            )
        return r

    def frame(self, i: int) -> dict:
        """Row ``i`` of ``frame_index``: ``{"frame_index", "class_prob", <method>: rows}``."""
        if not 0 <= i < len(self):
            raise IndexError(f"video {self.name!r}: frame row {i} out of range 0..{len(self) - 1}")
        out = {"frame_index": int(self.group["frame_index"][i]), "class_prob": self.group["class_prob"][i]}
        for m in self.methods:
            s = self.group[m]
            fr = s["frame"][:]
            a, b = np.searchsorted(fr, i, "left"), np.searchsorted(fr, i, "right")
            out[m] = {f: s[f][a:b] for f in ROW_FIELDS if f in s and f != "frame"}
        return out

    def frames(self, method: str, source_pixels: bool = False) -> Iterable[tuple]:
        """Yield ``(frame_number, rows)`` for every committed frame (rows of ``method``;
        ``source_pixels``: with ``box_source``)."""
        r = self.rows(method, source_pixels)
        fi = self.frame_index
        bounds = np.searchsorted(r["frame"], np.arange(len(fi) + 1))
        for i, f in enumerate(fi):
            a, b = bounds[i], bounds[i + 1]
            yield int(f), {k: v[a:b] for k, v in r.items() if k != "frame"}


def box_to_source(
    box: np.ndarray, input_size: Sequence[int] | None, source_size: Sequence[int] | None, where: str = ""
) -> np.ndarray:
    """Boxes in model-input pixels -> source-frame pixels.

    Args:
        box: ``(R, 4)`` x1, y1, x2, y2 (exclusive end) in input pixels (``input_size`` = (H, W)).
        source_size: ``(H, W)`` of the source frames.

    Returns:
        ``(R, 4)`` float64, exclusive end: ``x * W_src / W_in``, ``y * H_src / H_in``.
    """
    if not input_size or not source_size or len(input_size) != 2:
        raise FeatureFileError(
            f"{where}: no source frame size (video attribute source_size) "
            f"or no 2D input_size; boxes cannot be given in source pixels. "
            f"Re-extract with this gcfeat version (it records source_size)"
        )
    sy = source_size[0] / input_size[0]
    sx = source_size[1] / input_size[1]
    return np.asarray(box, np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])


class FeatureFile:
    """Read a feature file: ``ff.videos``, ``ff["seq_1"].frame(0)["m2"]["features"]``.

    Example::

        with FeatureFile("feats.h5") as ff:
            print(ff.attrs["classes"], ff.videos)
            df = ff.to_dataframe("m2")
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        try:
            self.h5 = h5py.File(self.path, "r")
        except (OSError, FileNotFoundError) as e:
            raise FeatureFileError(f"{self.path}: cannot open as HDF5 ({e})") from e
        self.attrs = read_attrs(self.h5)

    @property
    def videos(self) -> list[str]:
        return list(self.h5.keys())

    @property
    def methods(self) -> list[str]:
        m = self.attrs.get("methods")
        if isinstance(m, dict):
            return list(m)
        if isinstance(m, list):
            return list(m)
        found: set[str] = set()
        for g in self.h5.values():
            found.update(k for k in g.keys() if isinstance(g[k], h5py.Group))
        return sorted(found)

    @property
    def classes(self) -> list[str]:
        return list(self.attrs.get("classes", []))

    def __getitem__(self, video: str) -> VideoFeatures:
        if video not in self.h5:
            raise KeyError(f"{self.path}: no video {video!r}; videos are {self.videos}")
        return VideoFeatures(self.h5[video], [m for m in self.methods if m in self.h5[video]])

    def __iter__(self):
        return (self[v] for v in self.videos)

    def __len__(self) -> int:
        return len(self.videos)

    def num_frames(self) -> int:
        return sum(len(v) for v in self)

    def to_dataframe(self, method: str | None = None, features: bool = False):
        """One row per object: video, frame_index, method, label, class, score, x1..y2 (volumes:
        z1, y1, x1, z2, y2, x2), empty (+ ``f0 .. f{D-1}`` with ``features=True``)."""
        import pandas as pd

        frames = []
        classes = self.classes
        cols = BOX_COLUMNS[int(self.attrs.get("spatial_dims") or 2)]
        for v in self:
            fi = v.frame_index
            for m in [method] if method else v.methods:
                r = v.rows(m)
                d = {
                    "video": v.name,
                    "frame_index": fi[r["frame"]],
                    "method": m,
                    "label": r["label"],
                    "score": r["score"],
                    **{c: r["box"][:, i] for i, c in enumerate(cols)},
                    "empty": r.get("empty", np.zeros(len(r["label"]), bool)),
                }
                d["class"] = [classes[i] if 0 <= i < len(classes) else str(i) for i in r["label"]]
                df = pd.DataFrame(d)
                if features:
                    df = pd.concat(
                        [
                            df,
                            pd.DataFrame(
                                r["features"], columns=[f"f{i}" for i in range(r["features"].shape[1])]
                            ),
                        ],
                        axis=1,
                    )
                frames.append(df)
        if not frames:
            return pd.DataFrame(
                columns=["video", "frame_index", "method", "label", "class", "score", *cols, "empty"]
            )
        return pd.concat(frames, ignore_index=True)

    def summary(self) -> str:
        """A few lines: videos, frames, rows per method, settings."""
        lines = [f"{self.path}: {len(self)} videos, {self.num_frames()} frames"]
        for m in self.methods:
            n = sum(len(v.rows(m)["label"]) for v in self if m in v.methods)
            lines.append(f"  {m}: {n} rows")
        for k in ("task", "architecture", "input_size", "layout", "thresholds", "classes"):
            if k in self.attrs:
                lines.append(f"  {k}: {self.attrs[k]}")
        return "\n".join(lines)

    def close(self) -> None:
        self.h5.close()

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def merge_feature_files(
    shards: Sequence[str], out: str | os.PathLike, compression: str | None = None, chunk_frames: int = 1024
) -> str:
    """Join shard files (equal settings) into ``out`` by copying their rows.

    A copy through :class:`FeatureWriter` (not HDF5 virtual datasets), so the result is one
    self-contained file that a later run can resume, and the join itself commits whole chunks
    of frames. A video may already be partly in ``out`` (a resumed run): its new frames are
    appended; a frame present twice is an error.
    """
    from types import SimpleNamespace

    out = os.fspath(out)
    writer = None
    try:
        for shard in shards:
            with h5py.File(shard, "r") as src:
                attrs = read_attrs(src)
                attrs["format"] = src.attrs.get("format", FORMAT)
                videos = list(src)
                if writer is None:
                    if not videos:
                        continue
                    dims: dict[str, int] = {}
                    box_dim = 4
                    for v in videos:
                        for m, g in src[v].items():
                            if isinstance(g, h5py.Group):
                                dims[m] = g["features"].shape[1]
                                box_dim = g["box"].shape[1]
                    k = src[videos[-1]]["class_prob"].shape[1]
                    writer = FeatureWriter(out, attrs, dims, k, compression=compression, box_dim=box_dim)
                else:
                    diffs = settings_diff(attrs, read_attrs(writer.h5))
                    if diffs:
                        raise SettingsMismatch(
                            f"{shard}: settings differ from {out}:\n  " + "\n  ".join(diffs)
                        )
                for v in videos:
                    view = VideoFeatures(src[v], [m for m in writer.dims if m in src[v]])
                    fi, cp = view.frame_index, view.class_prob
                    rows = {m: view.rows(m) for m in view.methods}
                    for a in range(0, len(fi), chunk_frames):
                        b = min(a + chunk_frames, len(fi))
                        feats = {}
                        for m, r in rows.items():
                            lo, hi = np.searchsorted(r["frame"], [a, b])
                            part = {f: x[lo:hi] for f, x in r.items()}
                            part["frame"] = part["frame"] - a
                            part.setdefault("empty", np.zeros(hi - lo, bool))
                            feats[m] = SimpleNamespace(**part)
                        size = view.source_size
                        writer.write(
                            [v] * (b - a), fi[a:b], cp[a:b], feats, None if size is None else [size] * (b - a)
                        )
    finally:
        if writer is not None:
            writer.close()
    if writer is None and not os.path.exists(out):
        raise FeatureFileError(f"merge: no videos in {list(shards)}; nothing written to {out}")
    return out
