"""gcfeat.extract: object-level features from one CAM pass (M1 crop, M2 ROI, M3 heatmap).

``python -m gcfeat.extract`` dumps a whole dataset to HDF5 (see :mod:`gcfeat.extract.pipeline`
and :mod:`gcfeat.io.features`).
"""

from .base import Extractor, Features, feature_levels, layer_channels
from .crop import CropExtractor, backbone_to, crop_boxes, crop_features, forward_to
from .heatmap import HeatmapExtractor, heatmap_features, heatmap_weights, selected_classes, union_boxes
from .pooling import LAYOUTS, parse_layout, pool_to_layout
from .recipe import DEFAULT, PAPER, RECIPES, Recipe, get_recipe
from .roi import RoiExtractor, box_bounds, box_levels, roi_align_nd, roi_features, slice_features

__all__ = [
    "Extractor",
    "Features",
    "CropExtractor",
    "RoiExtractor",
    "HeatmapExtractor",
    "crop_boxes",
    "crop_features",
    "roi_features",
    "heatmap_features",
    "heatmap_weights",
    "union_boxes",
    "box_levels",
    "backbone_to",
    "pool_to_layout",
    "parse_layout",
    "LAYOUTS",
    "layer_channels",
    "feature_levels",
    "forward_to",
    "selected_classes",
    "roi_align_nd",
    "box_bounds",
    "build_extractors",
    "extract_dataset",
    "Recipe",
    "get_recipe",
    "RECIPES",
    "DEFAULT",
    "PAPER",
    "slice_features",
]


def __getattr__(name):  # the pipeline pulls in data / cam / boxes: import it lazily
    if name in ("extract_dataset", "build_extractors"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
