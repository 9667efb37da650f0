"""Class lists of the surgical task and the mapping to Cholec80's seven tools."""

from __future__ import annotations

#: The 11-class list (MICCAI 2018 robotic scene tools + Cholec80 extras + tissue), by index.
SURGICAL_CLASSES: tuple[str, ...] = (
    "bipolar_forceps",  # 0
    "prograsp_forceps",  # 1
    "large_needle_driver",  # 2
    "monopolar_curved_scissors",  # 3
    "ultrasound_probe",  # 4
    "suction",  # 5
    "clip_applier",  # 6
    "stapler",  # 7
    "hook",  # 8
    "specimen_bag",  # 9
    "tissue",  # 10: present in every frame; its box is the whole frame
)
TISSUE: int = SURGICAL_CLASSES.index("tissue")
INSTRUMENTS: tuple[int, ...] = tuple(i for i in range(len(SURGICAL_CLASSES)) if i != TISSUE)

#: The eight tools of the MICCAI 2018 tool-presence files, in their column order.
MICCAI18_TOOLS: tuple[str, ...] = SURGICAL_CLASSES[:8]

#: The original's 9-class models (GC-A / GC-B): the 8 MICCAI 2018 tools, then tissue at index 8
#: (``get_paths_labels.py``: "9 classes for 8 tools and 1 tissue"; ``bbox_library.py`` reads
#: tissue as the last class and its 9-group ``gt_bbox`` files put tissue at group 8).
MICCAI18_CLASSES_9: tuple[str, ...] = MICCAI18_TOOLS + ("tissue",)

#: Cholec80's own seven tools, in the column order of `tool_annotations/videoNN-tool.txt`.
CHOLEC80_TOOLS: tuple[str, ...] = (
    "Grasper",
    "Bipolar",
    "Hook",
    "Scissors",
    "Clipper",
    "Irrigator",
    "SpecimenBag",
)

#: Cholec80 tool -> surgical class. ultrasound_probe, large_needle_driver and stapler have no
#: Cholec80 column; the synthetic Cholec80 writer therefore never draws them.
CHOLEC80_TO_SURGICAL: dict[str, str] = {
    "Grasper": "prograsp_forceps",
    "Bipolar": "bipolar_forceps",
    "Hook": "hook",
    "Scissors": "monopolar_curved_scissors",
    "Clipper": "clip_applier",
    "Irrigator": "suction",
    "SpecimenBag": "specimen_bag",
}
SURGICAL_TO_CHOLEC80: dict[str, str] = {v: k for k, v in CHOLEC80_TO_SURGICAL.items()}

#: Input size (H, W) the original surgical classifier was trained at (facts §1).
SURGICAL_INPUT_SIZE: tuple[int, int] = (256, 320)
#: Input normalisation of the surgical classifier (facts §1).
SURGICAL_MEAN: tuple[float, float, float] = (0.4664, 0.3421, 0.3651)
SURGICAL_STD: tuple[float, float, float] = (0.2030, 0.1825, 0.1965)
