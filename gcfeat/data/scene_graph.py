"""MICCAI 2018 scene-graph annotations: per-frame XML with objects, interactions and a caption.

The EndoVis18 scene-graph annotations (Islam et al. 2020, Seenivasan et al. 2022; captions: Xu
et al. 2021) are one XML file per frame, ``seq_N/xml/frameNNN.xml`` (the captioning authors'
copy is ``seq_N/xml_new/``)::

    <annotation>
      <filename>frame000.png</filename>                    (gcfeat writes it; readers ignore it)
      <size><width>1280</width><height>1024</height><depth>3</depth></size>        (same)
      <objects>
        <name>kidney</name>
        <bndbox><xmin>0</xmin><ymin>0</ymin><xmax>1279</xmax><ymax>1023</ymax></bndbox>
        <interaction>Idle</interaction>
      </objects>
      <objects>
        <name>prograsp_forceps</name>
        <bndbox><xmin>412</xmin><ymin>96</ymin><xmax>730</xmax><ymax>388</ymax></bndbox>
        <interaction>Grasping</interaction>
      </objects>
      <caption>prograsp forceps grasping tissue</caption>    (optional: some frames have none)
    </annotation>

Reading rules reproduced here (and nothing more is assumed of a real file):

* objects are every ``objects`` element in document order (``root.iter('objects')``), each with
  ``name``, ``interaction`` (text, stripped) and ``bndbox`` ``xmin, ymin, xmax, ymax`` read as
  ``int`` -- the writer ``feature_extractor/Feature_extraction.ipynb`` (cell "Instrument
  Segmentation challange dataset") of lalithjets/Domain-Generalization-for-Surgical-Scene-Graph
  and CIDACaptioning ``FeatureExtractor/roi_feature_extraction_resnet_supcon.py``;
* boxes are **inclusive** pixel coordinates of the full-size left frame: both crop
  ``img[ymin:ymax + 1, xmin:xmax + 1]`` (the same writers, and Global-reasoned-multi-task-model
  ``models/mtl_model.py`` ``forward``);
* object names index ``INTERACTION_CLASSES`` (kidney first) and interactions ``ACTION_CLASSES``
  (the 13 actions), both with ``tuple.index`` (``Feature_extraction.ipynb``);
* the caption is ``root.find('caption').text``; a frame without ``<caption>`` is skipped by the
  captioning authors (CIDACaptioning ``Preprocessing/CaptionCollection.py``);
* the tissue (kidney) objects come first, and the interaction labels of the instrument -> tissue
  edges are :func:`edge_labels` (``Feature_extraction.ipynb``).

gcfeat's classes map to these names with ``tissue -> kidney``; ``hook`` and ``specimen_bag`` have
no counterpart (the synthetic writer leaves them out of the XML), ``maryland_dissector`` and
``spatulated_monopolar_cautery`` none in gcfeat (:func:`gcfeat_class`).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .classes import SURGICAL_CLASSES
from .errors import DataError, require_file

#: Node classes of the interaction model (Global-reasoned-multi-task-model
#: ``models/surgicalDataset.py`` ``SurgicalSceneConstants.instrument_classes``).
INTERACTION_CLASSES: tuple[str, ...] = (
    "kidney",
    "bipolar_forceps",
    "prograsp_forceps",
    "large_needle_driver",
    "monopolar_curved_scissors",
    "ultrasound_probe",
    "suction",
    "clip_applier",
    "stapler",
    "maryland_dissector",
    "spatulated_monopolar_cautery",
)
#: The 13 instrument-tissue actions (``SurgicalSceneConstants.action_classes``), by index.
ACTION_CLASSES: tuple[str, ...] = (
    "Idle",
    "Grasping",
    "Retraction",
    "Tissue_Manipulation",
    "Tool_Manipulation",
    "Cutting",
    "Cauterization",
    "Suction",
    "Looping",
    "Suturing",
    "Clipping",
    "Staple",
    "Ultrasound_Sensing",
)
#: gcfeat class names whose scene-graph name differs.
RENAME: dict[str, str] = {"tissue": "kidney"}
_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


def interaction_name(gcfeat_name: str) -> str | None:
    """gcfeat class name -> scene-graph name (``tissue`` -> ``kidney``), None without one."""
    name = RENAME.get(gcfeat_name, gcfeat_name)
    return name if name in INTERACTION_CLASSES else None


def gcfeat_class(name: str, classes: Sequence[str] = SURGICAL_CLASSES) -> int | None:
    """Scene-graph object name -> index in ``classes`` (``kidney`` -> tissue), or None."""
    back = {v: k for k, v in RENAME.items()}
    name = back.get(name, name)
    return classes.index(name) if name in classes else None


@dataclass
class SceneObject:
    """One ``<objects>`` entry: ``name``, ``box`` = (xmin, ymin, xmax, ymax) **inclusive** frame
    pixels as in the file, ``interaction`` (one of ``ACTION_CLASSES``)."""

    name: str
    box: tuple[int, int, int, int]
    interaction: str = "Idle"

    @property
    def box_exclusive(self) -> tuple[int, int, int, int]:
        """``(x1, y1, x2, y2)`` with exclusive end (gcfeat's convention)."""
        x1, y1, x2, y2 = self.box
        return x1, y1, x2 + 1, y2 + 1


@dataclass
class SceneGraph:
    """A frame's annotation: objects in file order, optional caption, optional size (H, W)."""

    objects: list[SceneObject] = field(default_factory=list)
    caption: str | None = None
    size: tuple[int, int] | None = None
    filename: str | None = None
    path: str | None = None

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    def edge_labels(self) -> np.ndarray:
        """``(E, 13)`` float64 one-hot action rows, the authors' rule (:func:`edge_labels`)."""
        return edge_labels([o.name for o in self.objects], [o.interaction for o in self.objects])


def edge_labels(names: Sequence[str], interactions: Sequence[str]) -> np.ndarray:
    """One-hot action rows of the tissue -> instrument edges, as the authors' writer builds them.

    ``Feature_extraction.ipynb``: with ``t`` kidney objects among ``n``, there are
    ``sum_{k<t} (n - k - 1)`` edges and row ``e`` has a 1 at ``ACTION_CLASSES.index(
    interaction[t + e])``. With the usual single kidney object first, row ``e`` is the action of
    object ``e + 1``: one row per instrument in file order, the same order as the interaction
    model's readout edges (``models/scene_graph.py`` ``_collect_edge``: src = each non-kidney
    node in order, dst = the kidney node). Returns float64 ``(E, 13)`` (``np.zeros``, as theirs).
    """
    names = list(names)
    t = sum(1 for n in names if n == "kidney")
    n = len(names)
    e = int(np.cumsum(n - np.arange(t) - 1)[-1]) if t > 0 else 0
    out = np.zeros((e, len(ACTION_CLASSES)))
    for k in range(e):
        if t + k >= n:
            raise DataError(
                f"edge_labels: {t} kidney objects among {n} give {e} edges, more than "
                f"the {n - t} objects after them (the authors' rule indexes past the "
                f"end); expected one kidney object"
            )
        out[k, _action_index(interactions[t + k])] = 1
    return out


def _action_index(interaction: str) -> int:
    if interaction not in ACTION_CLASSES:
        raise DataError(f"interaction {interaction!r}: expected one of {ACTION_CLASSES}")
    return ACTION_CLASSES.index(interaction)


def _text(el: ET.Element, tag: str, path) -> str:
    child = el.find(tag)
    if child is None or child.text is None:
        raise DataError(
            f"{path}: an <objects> element without <{tag}>; expected <name>, "
            f"<bndbox> and <interaction> in every object"
        )
    return child.text.strip()


def read_scene_graph(path: os.PathLike | str) -> SceneGraph:
    """Parse one scene-graph XML file (format and rules in the module docstring)."""
    require_file(path, "a MICCAI 2018 scene-graph XML file (<objects> + optional <caption>)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path}: not well-formed XML ({e}); expected a scene-graph annotation") from None
    objects = []
    for obj in root.iter("objects"):
        name = _text(obj, "name", path)
        interaction = _text(obj, "interaction", path)
        if interaction not in ACTION_CLASSES:
            raise DataError(
                f"{path}: object {name!r} has interaction {interaction!r}; expected one of {ACTION_CLASSES}"
            )
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{path}: object {name!r} has no <bndbox>")
        try:
            box = tuple(int(_text(bb, t, path)) for t in _BOX_TAGS)
        except ValueError:
            raise DataError(
                f"{path}: object {name!r}: a non-integer box coordinate; expected "
                f"integer xmin, ymin, xmax, ymax"
            ) from None
        objects.append(SceneObject(name, box, interaction))  # type: ignore[arg-type]
    cap = root.find("caption")
    caption = cap.text.strip() if cap is not None and cap.text and cap.text.strip() else None
    size = None
    sz = root.find("size")
    if sz is not None and sz.find("width") is not None and sz.find("height") is not None:
        size = (int(sz.find("height").text), int(sz.find("width").text))
    fn = root.find("filename")
    return SceneGraph(objects, caption, size, fn.text if fn is not None else None, str(path))


def write_scene_graph(path: os.PathLike | str, graph: SceneGraph) -> None:
    """Write ``graph`` in the format above (``filename``/``size`` only when set)."""
    root = ET.Element("annotation")
    if graph.filename:
        ET.SubElement(root, "filename").text = graph.filename
    if graph.size:
        sz = ET.SubElement(root, "size")
        ET.SubElement(sz, "width").text = str(int(graph.size[1]))
        ET.SubElement(sz, "height").text = str(int(graph.size[0]))
        ET.SubElement(sz, "depth").text = "3"
    for o in graph.objects:
        el = ET.SubElement(root, "objects")
        ET.SubElement(el, "name").text = o.name
        bb = ET.SubElement(el, "bndbox")
        for tag, v in zip(_BOX_TAGS, o.box):
            ET.SubElement(bb, tag).text = str(int(v))
        ET.SubElement(el, "interaction").text = o.interaction
    if graph.caption is not None:
        ET.SubElement(root, "caption").text = graph.caption
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(ET.tostring(root, encoding="unicode") + "\n")


def scene_graph_path(root: os.PathLike | str, video: str, frame: str, folder: str = "xml") -> Path:
    """``root/<video>/<folder>/<frame>.xml``."""
    return Path(root) / video / folder / f"{frame}.xml"


def read_sequence(
    root: os.PathLike | str, video: str, folder: str = "xml"
) -> dict[int, tuple[Path, SceneGraph]]:
    """Every ``root/<video>/<folder>/*.xml`` -> ``{frame number: (path, graph)}`` ({} if none)."""
    d = Path(root) / video / folder
    out = {}
    if d.is_dir():
        for p in sorted(d.glob("*.xml")):
            digits = re.findall(r"\d+", p.stem)
            if digits:
                out[int(digits[-1])] = (p, read_scene_graph(p))
    return out


# ------------------------------------------------------------------ synthetic annotations
#: Actions each instrument plausibly performs (the synthetic writer picks among them).
_ACTIONS_OF: dict[str, tuple[str, ...]] = {
    "bipolar_forceps": ("Grasping", "Cauterization", "Tissue_Manipulation"),
    "prograsp_forceps": ("Grasping", "Retraction", "Tissue_Manipulation"),
    "large_needle_driver": ("Suturing", "Looping", "Tool_Manipulation"),
    "monopolar_curved_scissors": ("Cutting", "Cauterization"),
    "ultrasound_probe": ("Ultrasound_Sensing",),
    "suction": ("Suction",),
    "clip_applier": ("Clipping",),
    "stapler": ("Staple",),
}
_VERB = {
    "Grasping": "grasping",
    "Retraction": "retracting",
    "Tissue_Manipulation": "manipulating",
    "Tool_Manipulation": "manipulating the tool over",
    "Cutting": "cutting",
    "Cauterization": "cauterizing",
    "Suction": "suctioning",
    "Looping": "looping around",
    "Suturing": "suturing",
    "Clipping": "clipping",
    "Staple": "stapling",
    "Ultrasound_Sensing": "sensing",
}


def template_scene_graph(
    boxes: dict[int, tuple[int, int, int, int]],
    frame_index: int,
    size: tuple[int, int],
    filename: str | None = None,
    idle_fraction: float = 0.002,
) -> SceneGraph:
    """The synthetic frame's annotation from its exact ground truth.

    ``boxes``: gcfeat class -> exclusive-end box in frame pixels (tissue: the whole frame).
    Objects: kidney (the tissue box) first, then the instruments that have a scene-graph name,
    by class. Interaction: ``Idle`` when the instrument's box covers less than
    ``idle_fraction`` of the frame (a tool at the border), else one of its class's actions,
    changing every 8 frames. Caption: ``"<tool> <verb> tissue"`` joined by ``" and "``, idle tools
    left out; none (no ``<caption>``) when no tool acts, as frames the authors left uncaptioned.
    """
    H, W = size
    objects = []
    for c in sorted(boxes, key=lambda c: (SURGICAL_CLASSES[c] != "tissue", c)):
        name = interaction_name(SURGICAL_CLASSES[c])
        if name is None:
            continue
        x1, y1, x2, y2 = (int(v) for v in boxes[c])
        box = (x1, y1, x2 - 1, y2 - 1)
        if name == "kidney":
            objects.append(SceneObject(name, box, "Idle"))
            continue
        options = _ACTIONS_OF.get(name, ("Idle",))
        area = (x2 - x1) * (y2 - y1)
        action = "Idle" if area < idle_fraction * H * W else options[(frame_index // 8 + c) % len(options)]
        objects.append(SceneObject(name, box, action))
    acts = [
        f"{o.name.replace('_', ' ')} {_VERB[o.interaction]} tissue"
        for o in objects[1:]
        if o.interaction != "Idle"
    ]
    return SceneGraph(objects, " and ".join(acts) if acts else None, (H, W), filename)
