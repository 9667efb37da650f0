"""Exports of a feature file for the two downstream models, in exactly the files they read.

Both exports take the feature file and the dataset it was extracted from (``data``: the
MICCAI 2018 layout with its scene graphs ``seq_N/xml/frameNNN.xml``,
:mod:`gcfeat.data.scene_graph`), and use boxes in source-frame pixels
(``box * source_size / input_size``, :func:`gcfeat.io.features.box_to_source`).

Captioning: CIDACaptioning (:func:`export_captioning`)
---------------------------------------------------------
What its loader does (``train.py`` ``__main__``, ``data/dataset.py`` ``COCO.__init__`` /
``COCO.get_samples``, ``data/field.py`` ``ImageDetectionsField.preprocess``):

* ``COCO(image_field, text_field, img_root=features_path, ann_root=annotation_folder,
  id_root=annotation_folder)`` opens ``captions_train.json`` / ``captions_val.json`` (lists of
  dicts; it reads ``anns[i]['caption']``) and ``WithCaption_id_path_train.json`` /
  ``..._val.json`` (lists of strings), and pairs them **by position** (``range(len(ids))``);
* an example's image is ``os.path.join(features_path, id_path)``, and
  ``ImageDetectionsField.preprocess`` loads ``np.load(os.path.join(detections_path, x))`` with
  ``detections_path = features_path`` too: the two joins agree only when ``--features_path`` is
  **absolute** (a relative one is joined twice);
* rows are zero-padded / truncated to ``max_detections=6`` and cast to float32; node 0 is the
  tissue (the authors' writer ``FeatureExtractor/roi_feature_extraction_resnet_supcon.py``
  puts the kidney object, the first in the XML, first);
* ``id_path`` is ``seq_N/<folder>/frameNNN_node_features.npy`` (``Preprocessing/
  CaptionCollection.py``: ``os.path.join("seq_"+str(i), folder, file_name+"_node_features.npy")``);
  captions are ``xml.find('caption').text`` and frames without ``<caption>`` are left out of
  both lists (their features are still written); train sequences 2, 3, 4, 6, 7, 9, 10, 11, 12,
  14, 15 and validation 1, 5, 16 (``val_sequences``).

Written under ``out``: ``<video>/<folder>/<frame>_node_features.npy`` (every frame of the
feature file, ``(n, 512)`` float32, tissue row first, then the file's order, empty M3 rows as
zeros) and ``annotations/{captions,WithCaption_id_path}_{train,val}.json``. Run the model with
``--features_path <abs out> --annotation_folder <abs out>/annotations``.

Interaction: Global-reasoned multi-task model (:func:`export_interaction`)
------------------------------------------------------------------------------
What its loader does (``models/surgicalDataset.py`` ``SurgicalSceneDataset``; ``model_train.py``:
``data_dir = ['datasets/instruments18/seq_']``, ``img_dir = ['/left_frames/']``,
``mask_dir = ['/annotations/']``):

* frames are ``glob(data_dir + str(i) + '/xml/' + '/*.xml')`` over the sequence numbers;
  ``file_name`` is the XML stem and ``file_root`` the ``seq_N`` folder; it opens
  ``file_root/left_frames/<file_name>.png`` (RGB), ``file_root/annotations/<file_name>.png``
  (label mask, ``np.array(...).long()``) and ``file_root/vsgat/<feature_extractor>/
  <file_name>_features.hdf5``;
* keys: ``img_name`` (``[()][:] + '.jpg'``: a string without extension; under its pinned h5py
  2.10 a variable-length string reads back as ``str``), ``node_num`` (``[()]``), ``classes``
  (node classes, index into ``INTERACTION_CLASSES``; 0 = kidney), ``boxes``, ``edge_labels``
  (``edge_num = shape[0]``), ``node_features``, ``spatial_features``; then
  ``dataset/surgicalscene_word2vec.hdf5`` (relative to the working directory) for
  ``INTERACTION_CLASSES[c]`` of every node;
* ``models/mtl_model.py`` ``forward`` crops every box from the full-size left frame:
  ``roi = np.array(bndbox).astype(int); _img[roi[1]:roi[3] + 1, roi[0]:roi[2] + 1]``: integer,
  **inclusive** end, source pixels;
* ``models/scene_graph.py`` ``_collect_edge`` / ``_build_graph``: edges are all ordered pairs
  ``(src, dst)``, src outer, ``src != dst`` (``spatial_features`` rows in that order), readout
  edges ``(src, dst)`` for dst each kidney node and src each other node in order (one
  ``edge_labels`` row each); ``tuple(zip(*edge_list))`` fails on a graph of fewer than 2 nodes.

The authors' writer (lalithjets/Domain-Generalization-for-Surgical-Scene-Graph
``feature_extractor/Feature_extraction.ipynb``) writes ``img_name`` = XML stem, ``node_num``,
``classes`` and ``boxes`` (int, from the XML, inclusive), ``edge_labels`` (float64,
:func:`gcfeat.data.scene_graph.edge_labels`), ``node_features`` (float64 ``(N, 512)``) and
``spatial_features = calculate_spatial_feats(boxes, [1024, 1280])`` (float64).

Written under ``out``, one tree per method (the listing is per tree, and methods keep
different frames): ``<method>/seq_N/xml/<frame>.xml`` (a copy of the dataset's, only for the
frames exported for that method, so the listing holds no frame without features),
``<method>/seq_N/left_frames/<frame>.png`` and ``.../annotations/<frame>.png`` (symlinks to the
dataset's files, or copies), and ``<method>/seq_N/vsgat/<method>/<frame>_features.hdf5`` with

    ==================  ==============  ================================================
    ``img_name``        str             the frame's XML stem (``frame012``), no extension
    ``node_num``        int64 scalar    N
    ``classes``         (N,) int64      ``INTERACTION_CLASSES`` index; kidney (tissue) first
    ``boxes``           (N, 4) int64    x1, y1, x2, y2 inclusive, source-frame pixels
    ``edge_labels``     (N-1, 13) f64   one-hot action of node k+1 -> kidney (below)
    ``node_features``   (N, 512) f32    the method's rows
    ``spatial_features`` (E, 16) f64    E = N (N - 1), pairs (i, j) i outer
    ==================  ==============  ================================================

Nodes: the tissue row first (one; others dropped), then the instruments in the file's order;
``hook`` and ``specimen_bag`` (no interaction class), rows flagged empty (M3, nothing above T)
and boxes of zero width or height in the inclusive convention (their encoding divides by and
takes the log of ``x2 - x1``) are dropped. A frame then left with fewer than 2 nodes, without a
tissue node, or without a scene-graph XML is skipped (not listed), and the counts are
returned and printed. Run the model with ``<out>/<method>`` as its ``datasets/instruments18``
and ``--feature_extractor <method>``. ``edge_labels``: each instrument node takes the
interaction of the XML object of its class (the one of highest IoU when there are several);
an instrument the annotation does not have (a false CAM detection) is ``Idle``.

Spatial encodings (``encoding=``):

``"vsgat"`` (default): vs-gats ``datasets/hico_spatial_feature.py`` ``calculate_spatial_feats``
    (= the copy in ``Feature_extraction.ipynb``), reproduced exactly in float64 for pair
    ``(i, j)`` with ``im_wh = (A, B)``, ``w = x2 - x1``, ``h = y2 - y1`` of the inclusive boxes:

    ======  ========================================================================
    0-3     x1_i / (A + 1e-6), y1_i / (B + 1e-6), x2_i / (A + 1e-6), y2_i / (B + 1e-6)
    4       w_i h_i / (A B + 1e-6)
    5-9     the same for box j
    10, 11  (x1_i - x1_j) / (w_j + 1e-6), (y1_i - y1_j) / (h_j + 1e-6)
    12, 13  log(w_i / (w_j + 1e-6)), log(h_i / (h_j + 1e-6))
    14, 15  cx_i - cx_j / A, cy_i - cy_j / B
    ======  ========================================================================

    Quirks kept on purpose (the model was trained with them): the authors pass ``im_wh =
    [1024, 1280]`` (height, width of a 1280x1024 frame) where the function expects (width,
    height), so x is divided by 1024 and y by 1280 (gcfeat passes ``(H, W)`` of the source
    frame: the same numbers on MICCAI 2018 frames); columns 14-15 are ``c1 -
    c2 / im_wh`` by operator precedence (pixels minus a normalised centre, not a normalised
    offset); widths and areas have no ``+ 1`` although the boxes are inclusive; columns 10-11 are
    corner, not centre, offsets.

``"gcfeat"``: :func:`pair_spatial_features` on the exclusive-end source boxes normalised by the
    true (W, H): corners and area, centre offsets over box size, log size ratios, IoU, centre
    distance.

Class mapping: gcfeat's ``tissue`` is ``kidney`` (0); every other name present in both lists
takes the interaction index (bipolar_forceps 0 -> 1, ...).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from gcfeat.data.miccai18 import MICCAI18_VAL_SEQUENCES
from gcfeat.data.scene_graph import ACTION_CLASSES, INTERACTION_CLASSES, RENAME, SceneGraph, read_sequence
from gcfeat.errors import GcfeatError
from gcfeat.io.features import FeatureFile, FeatureFileError
from gcfeat.io.paths import writable_dir

__all__ = [
    "INTERACTION_CLASSES",
    "ACTION_CLASSES",
    "RENAME",
    "interaction_class_map",
    "pair_spatial_features",
    "vsgat_spatial_features",
    "inclusive_boxes",
    "export_captioning",
    "export_interaction",
    "CaptioningExport",
    "InteractionExport",
    "ExportError",
    "ENCODINGS",
]

ENCODINGS = ("vsgat", "gcfeat")


class ExportError(GcfeatError):
    """An export that cannot be made from the given feature file and dataset."""


def interaction_class_map(classes: Sequence[str]) -> np.ndarray:
    """``(K,)`` int64: interaction index of each gcfeat class, -1 where there is none."""
    return np.array(
        [
            INTERACTION_CLASSES.index(RENAME.get(c, c)) if RENAME.get(c, c) in INTERACTION_CLASSES else -1
            for c in classes
        ],
        dtype=np.int64,
    )


# ------------------------------------------------------------------------- encodings
def pair_spatial_features(boxes: np.ndarray, frame_size: Sequence[int]) -> np.ndarray:
    """gcfeat's 16-d encoding of every ordered pair of distinct boxes.

    With boxes normalised by the frame size (``x / W``, ``y / H``), widths ``w``, heights ``h``
    (floored at one pixel so that empty boxes stay finite), centres ``(cx, cy)``, areas
    ``a = w h``: 0-4 box i (x1, y1, x2, y2, a), 5-9 box j, 10 ``(cx_j - cx_i) / w_i``, 11
    ``(cy_j - cy_i) / h_i``, 12 ``log(w_j / w_i)``, 13 ``log(h_j / h_i)``, 14 IoU, 15 centre
    distance.

    Args:
        boxes: ``(N, 4)`` x1, y1, x2, y2 in pixels (exclusive end).
        frame_size: ``(H, W)``.

    Returns:
        ``(N * (N - 1), 16)`` float32, pairs ``(i, j)``, ``i != j``, in row-major order.
    """
    H, W = float(frame_size[0]), float(frame_size[1])
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = b.shape[0]
    w = np.maximum(b[:, 2] - b[:, 0], 1.0)
    h = np.maximum(b[:, 3] - b[:, 1], 1.0)
    nb = b / np.array([W, H, W, H])
    wn, hn = w / W, h / H
    geom = np.concatenate([nb, (wn * hn)[:, None]], 1)  # (N, 5)
    cx, cy = nb[:, [0, 2]].mean(1), nb[:, [1, 3]].mean(1)
    i, j = np.nonzero(~np.eye(n, dtype=bool))  # row-major (i, j)
    dcx, dcy = cx[j] - cx[i], cy[j] - cy[i]
    ix1, iy1 = np.maximum(b[i, 0], b[j, 0]), np.maximum(b[i, 1], b[j, 1])
    ix2, iy2 = np.minimum(b[i, 2], b[j, 2]), np.minimum(b[i, 3], b[j, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area[i] + area[j] - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    out = np.concatenate(
        [
            geom[i],
            geom[j],
            np.stack(
                [
                    dcx / wn[i],
                    dcy / hn[i],
                    np.log(w[j] / w[i]),
                    np.log(h[j] / h[i]),
                    iou,
                    np.sqrt(dcx**2 + dcy**2),
                ],
                1,
            ),
        ],
        1,
    )
    return out.astype(np.float32).reshape(-1, 16)


def vsgat_spatial_features(boxes: np.ndarray, im_wh: Sequence[float]) -> np.ndarray:
    """vs-gats' ``calculate_spatial_feats(boxes, im_wh)``, batched (formula and quirks in the
    module docstring); the same float64 operations in the same order.

    Args:
        boxes: ``(N, 4)`` x1, y1, x2, y2 inclusive integer pixels.
        im_wh: the authors pass ``[1024, 1280]`` for 1280x1024 frames (i.e. ``(H, W)``).

    Returns:
        ``(N * (N - 1), 16)`` float64, pairs ``(i, j)``, ``i != j``, i outer.
    """
    b = np.asarray(boxes).reshape(-1, 4)
    A, B = im_wh[0], im_wh[1]
    n = b.shape[0]
    i, j = np.nonzero(~np.eye(n, dtype=bool))

    def wrt_img(k):
        x = b[k]
        area = (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
        return [
            x[:, 0] / (A + 1e-6),
            x[:, 1] / (B + 1e-6),
            x[:, 2] / (A + 1e-6),
            x[:, 3] / (B + 1e-6),
            area / (A * B + 1e-6),
        ]

    b1, b2 = b[i], b[j]
    w2, h2 = b2[:, 2] - b2[:, 0], b2[:, 3] - b2[:, 1]
    with np.errstate(divide="ignore"):
        rel = [
            (b1[:, 0] - b2[:, 0]) / (w2 + 1e-6),
            (b1[:, 1] - b2[:, 1]) / (h2 + 1e-6),
            np.log((b1[:, 2] - b1[:, 0]) / (w2 + 1e-6)),
            np.log((b1[:, 3] - b1[:, 1]) / (h2 + 1e-6)),
        ]
    off = [
        (b1[:, 2] + b1[:, 0]) / 2 - ((b2[:, 2] + b2[:, 0]) / 2) / A,
        (b1[:, 3] + b1[:, 1]) / 2 - ((b2[:, 3] + b2[:, 1]) / 2) / B,
    ]
    cols = wrt_img(i) + wrt_img(j) + rel + off
    return np.stack([np.asarray(c, np.float64) for c in cols], 1).reshape(-1, 16)


def inclusive_boxes(box_source: np.ndarray, source_size: Sequence[int]) -> np.ndarray:
    """Exclusive-end float boxes in source pixels -> the consumers' integer inclusive boxes.

    ``x1 = floor(x1)``, ``x2 = ceil(x2) - 1`` (likewise y; 1e-3 px of float error absorbed),
    clipped to the frame. ``(N, 4)`` int64.
    """
    b = np.asarray(box_source, np.float64).reshape(-1, 4)
    H, W = int(source_size[0]), int(source_size[1])
    lo = np.floor(b[:, :2] + 1e-3)
    hi = np.ceil(b[:, 2:] - 1e-3) - 1
    out = np.concatenate([lo, hi], 1).astype(np.int64)
    return np.clip(out, 0, np.array([W - 1, H - 1, W - 1, H - 1]))


# ------------------------------------------------------------------------- helpers
def _tissue_first(labels: np.ndarray, tissue: int | None) -> np.ndarray:
    key = (labels != tissue) if tissue is not None else np.zeros(len(labels), bool)
    return np.argsort(key, kind="stable")


def _check_method(ff: FeatureFile, method: str) -> None:
    if method not in ff.methods:
        raise FeatureFileError(f"{ff.path}: no method {method!r}; the file has {ff.methods}")


def _seq_number(video: str) -> int | None:
    m = re.search(r"(\d+)$", video)
    return int(m.group(1)) if m else None


def _annotations(data: os.PathLike | str | None, video: str) -> dict[int, tuple]:
    """``{frame number: (xml path, SceneGraph)}`` of a video ({} without data or XML)."""
    return read_sequence(data, video) if data is not None else {}


def _require_data(data, what: str) -> Path:
    if data is None:
        raise ExportError(
            f"data: not given; the {what} export reads the dataset's scene-graph "
            f"annotations (seq_N/xml/frameNNN.xml): pass the dataset folder "
            f"(CLI: --data DIR)"
        )
    root = Path(data)
    if not root.is_dir():
        raise ExportError(
            f"data: {root} is not a folder; expected the dataset the features were extracted from"
        )
    return root


# ------------------------------------------------------------------------- captioning
@dataclass
class CaptioningExport:
    """What :func:`export_captioning` wrote: per-split entries, frames, skipped frames."""

    features_path: str
    annotation_folder: str
    frames: int = 0
    train: int = 0
    val: int = 0
    skipped_no_caption: int = 0
    skipped_no_xml: int = 0
    entries: dict[str, list[dict]] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"captioning: {self.frames} frames of *_node_features.npy; captions train "
            f"{self.train}, val {self.val}; skipped {self.skipped_no_caption} frames "
            f"without a caption and {self.skipped_no_xml} without a scene-graph XML"
        )


def export_captioning(
    path: str,
    method: str,
    out: str,
    frame_format: str = "frame{:03d}",
    progress: bool = True,
    *,
    data: os.PathLike | str | None = None,
    folder: str | None = None,
    val_sequences: Sequence[int] = MICCAI18_VAL_SEQUENCES,
    annotations: str = "annotations",
) -> CaptioningExport:
    """Write what CIDACaptioning's ``COCO`` / ``ImageDetectionsField`` read (module docstring).

    Args:
        path: the feature file; ``method``: whose rows (``m1`` / ``m2`` / ``m3``).
        out: the ``--features_path`` folder (JSON files go to ``out/<annotations>``).
        frame_format: frame name from its number when the frame has no XML.
        data: the dataset folder (captions from ``seq_N/xml/*.xml``); required.
        folder: the per-sequence feature folder in ``id_path`` (default ``gcfeat_<method>``).
        val_sequences: sequence numbers of the validation split (MICCAI 2018: 1, 5, 16).
    """
    root = _require_data(data, "captioning")
    folder = folder or f"gcfeat_{method}"
    val_seqs = {int(v) for v in val_sequences}
    res = CaptioningExport(
        os.path.abspath(out),
        os.path.abspath(os.path.join(out, annotations)),
        entries={"train": [], "val": []},
    )
    with FeatureFile(path) as ff:
        _check_method(ff, method)
        writable_dir(out)  # a file or a read-only folder: said before writing
        tissue = ff.classes.index("tissue") if "tissue" in ff.classes else None
        with tqdm(
            total=ff.num_frames(),
            desc=f"captioning {method}",
            unit="frame",
            disable=None if progress else True,
        ) as bar:
            for v in ff:
                graphs = _annotations(root, v.name)
                split = "val" if _seq_number(v.name) in val_seqs else "train"
                d = os.path.join(out, v.name, folder)
                os.makedirs(d, exist_ok=True)
                for frame, rows in v.frames(method):
                    xml, graph = graphs.get(frame, (None, None))
                    name = xml.stem if xml is not None else frame_format.format(frame)
                    order = _tissue_first(rows["label"], tissue)
                    np.save(
                        os.path.join(d, f"{name}_node_features.npy"),
                        rows["features"][order].astype(np.float32),
                    )
                    res.frames += 1
                    bar.update()
                    if graph is None:
                        res.skipped_no_xml += 1
                    elif graph.caption is None:  # the authors skip these frames
                        res.skipped_no_caption += 1
                    else:
                        id_path = f"{v.name}/{folder}/{name}_node_features.npy"
                        res.entries[split].append({"id_path": id_path, "caption": graph.caption})
    ann = Path(res.annotation_folder)
    ann.mkdir(parents=True, exist_ok=True)
    for split, entries in res.entries.items():
        (ann / f"captions_{split}.json").write_text(json.dumps(entries, indent=1))
        (ann / f"WithCaption_id_path_{split}.json").write_text(
            json.dumps([e["id_path"] for e in entries], indent=1)
        )
    res.train, res.val = len(res.entries["train"]), len(res.entries["val"])
    return res


# ------------------------------------------------------------------------- interaction
@dataclass
class InteractionExport:
    """What :func:`export_interaction` wrote and why frames / nodes were left out."""

    out: str
    methods: list[str]
    skipped_no_xml: int = 0  # frames (the same for every method)
    # per method:
    frames: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)
    edges: dict[str, int] = field(default_factory=dict)
    skipped_few_nodes: dict[str, int] = field(default_factory=dict)  # < 2 nodes or no tissue
    dropped_zero_area: dict[str, int] = field(default_factory=dict)  # incl. empty M3 rows
    dropped_unmapped: dict[str, int] = field(default_factory=dict)  # hook, specimen_bag

    def root(self, method: str) -> str:
        """The folder that plays ``datasets/instruments18`` for ``method``."""
        return os.path.join(self.out, method)

    def summary(self) -> str:
        lines = [f"interaction: {self.skipped_no_xml} frames without a scene-graph XML skipped"]
        for m in self.methods:
            lines.append(
                f"  {m}: {self.frames[m]} frames, {self.nodes[m]} nodes, {self.edges[m]} edges "
                f"in {self.root(m)}; skipped {self.skipped_few_nodes[m]} frames with < 2 nodes "
                f"or no tissue node; dropped {self.dropped_zero_area[m]} zero-area / empty and "
                f"{self.dropped_unmapped[m]} nodes without an interaction class"
            )
        return "\n".join(lines)


@dataclass
class _Graph:
    classes: np.ndarray  # (N,) int64 interaction classes
    boxes: np.ndarray  # (N, 4) int64 inclusive, source pixels
    box_source: np.ndarray  # (N, 4) float exclusive
    features: np.ndarray  # (N, D) float32
    edge_labels: np.ndarray  # (N - 1, 13) float64


def _box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def _edge_rows(classes: np.ndarray, boxes: np.ndarray, graph: SceneGraph) -> np.ndarray:
    """One-hot action of each instrument node (classes[1:]) from the annotation."""
    out = np.zeros((len(classes) - 1, len(ACTION_CLASSES)))
    for k, (c, box) in enumerate(zip(classes[1:], boxes[1:])):
        same = [o for o in graph.objects if o.name == INTERACTION_CLASSES[c]]
        act = max(same, key=lambda o: _box_iou(o.box, box)).interaction if same else "Idle"
        out[k, ACTION_CLASSES.index(act)] = 1
    return out


def _frame_graph(
    rows: dict,
    cmap: np.ndarray,
    tissue: int | None,
    size,
    graph: SceneGraph,
    res: InteractionExport,
    method: str,
) -> _Graph | None:
    order = _tissue_first(rows["label"], tissue)
    keep = cmap[rows["label"][order]] >= 0
    res.dropped_unmapped[method] += int((~keep).sum())
    order = order[keep]
    is_tissue = rows["label"][order] == tissue
    if is_tissue.sum() > 1:  # one kidney node: the first
        order = np.concatenate([order[:1], order[~is_tissue]])
    boxes = inclusive_boxes(rows["box_source"][order], size)
    ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & ~rows["empty"][order]
    res.dropped_zero_area[method] += int((~ok).sum())
    order, boxes = order[ok], boxes[ok]
    if len(order) < 2 or rows["label"][order[0]] != tissue:
        return None
    classes = cmap[rows["label"][order]]
    return _Graph(
        classes,
        boxes,
        rows["box_source"][order],
        rows["features"][order].astype(np.float32),
        _edge_rows(classes, boxes, graph),
    )


def _place(src: Path, dst: Path, link: str) -> None:
    if link == "none" or not src.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if link == "symlink":
        try:
            dst.symlink_to(src.resolve())
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def _write_graph(path: str, name: str, g: _Graph, encoding: str, size, im_wh) -> None:
    spatial = (
        vsgat_spatial_features(g.boxes, im_wh)
        if encoding == "vsgat"
        else pair_spatial_features(g.box_source, size)
    )
    with h5py.File(path, "w") as h:
        h.create_dataset("img_name", data=name)
        h.create_dataset("node_num", data=np.int64(len(g.classes)))
        h.create_dataset("classes", data=g.classes.astype(np.int64))
        h.create_dataset("boxes", data=g.boxes.astype(np.int64))
        h.create_dataset("edge_labels", data=g.edge_labels)
        h.create_dataset("node_features", data=g.features)
        h.create_dataset("spatial_features", data=spatial)


def export_interaction(
    path: str,
    out: str,
    methods: Sequence[str] | None = None,
    progress: bool = True,
    *,
    data: os.PathLike | str | None = None,
    encoding: str = "vsgat",
    im_wh: Sequence[float] | None = None,
    link: str = "symlink",
) -> InteractionExport:
    """Write what the interaction model's ``SurgicalSceneDataset`` reads (module docstring).

    Args:
        path: the feature file (made by this gcfeat: it records each video's source size).
        out: output folder; ``out/<method>`` plays the model's ``datasets/instruments18``
            (frames are named by their XML's stem; a frame without XML is skipped).
        methods: extractors to export (default: all in the file); each to ``vsgat/<method>``.
        data: the dataset folder (scene graphs, left frames, label masks); required.
        encoding: ``"vsgat"`` (the authors' 16-d encoding) or ``"gcfeat"``.
        im_wh: the ``im_wh`` of the vsgat encoding (default: ``(H, W)`` of the source frames,
            which is the authors' ``[1024, 1280]`` on MICCAI 2018).
        link: ``"symlink"`` (default; copies where links fail), ``"copy"`` or ``"none"``: how
            the left frames and label masks appear under ``out``.
    """
    root = _require_data(data, "interaction")
    if encoding not in ENCODINGS:
        raise ExportError(f"encoding: got {encoding!r}, expected one of {ENCODINGS}")
    if link not in ("symlink", "copy", "none"):
        raise ExportError(f"link: got {link!r}, expected 'symlink', 'copy' or 'none'")
    with FeatureFile(path) as ff:
        methods = list(methods or ff.methods)
        for m in methods:
            _check_method(ff, m)
        size = ff.attrs.get("input_size")
        if size and len(size) != 2:
            raise FeatureFileError(
                f"{path}: a file of {len(size)}D boxes (task "
                f"{ff.attrs.get('task')}); the interaction model's 16-d pair "
                f"encoding is defined for 2D frames only"
            )
        writable_dir(out)  # a file or a read-only folder: said before writing
        cmap = interaction_class_map(ff.classes)
        tissue = ff.classes.index("tissue") if "tissue" in ff.classes else None
        zeros = lambda: {m: 0 for m in methods}  # noqa: E731
        res = InteractionExport(
            os.path.abspath(out),
            methods,
            frames=zeros(),
            nodes=zeros(),
            edges=zeros(),
            skipped_few_nodes=zeros(),
            dropped_zero_area=zeros(),
            dropped_unmapped=zeros(),
        )
        with tqdm(
            total=ff.num_frames(), desc="interaction", unit="frame", disable=None if progress else True
        ) as bar:
            for v in ff:
                _export_video(v, methods, root, Path(out), cmap, tissue, encoding, im_wh, link, res, bar)
    return res


def _export_video(
    v, methods, root: Path, out: Path, cmap, tissue, encoding, im_wh, link, res: InteractionExport, bar
) -> None:
    size = v.source_size
    graphs = _annotations(root, v.name)
    per_method = {m: dict(v.frames(m, source_pixels=True)) for m in methods}
    wh = tuple(im_wh) if im_wh is not None else (size[0], size[1])
    for m in methods:  # a rerun lists this run's frames only
        for stale in (out / m / v.name / "xml").glob("*.xml"):
            stale.unlink()
    for frame in v.frame_index.tolist():
        bar.update()
        if frame not in graphs:
            res.skipped_no_xml += 1
            continue
        xml, graph = graphs[frame]
        for m in methods:
            g = _frame_graph(per_method[m][frame], cmap, tissue, size, graph, res, m)
            if g is None:
                res.skipped_few_nodes[m] += 1
                continue
            seq = out / m / v.name
            d = seq / "vsgat" / m
            d.mkdir(parents=True, exist_ok=True)
            _write_graph(str(d / f"{xml.stem}_features.hdf5"), xml.stem, g, encoding, size, wh)
            (seq / "xml").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(xml, seq / "xml" / xml.name)
            for sub in ("left_frames", "annotations"):
                _place(root / v.name / sub / f"{xml.stem}.png", seq / sub / f"{xml.stem}.png", link)
            res.frames[m] += 1
            res.nodes[m] += len(g.classes)
            res.edges[m] += len(g.edge_labels)
