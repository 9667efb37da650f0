"""gcfeat.io: the HDF5 feature file (:mod:`gcfeat.io.features`), the exports for the downstream
models (:mod:`gcfeat.io.exports`); medical image I/O (NIfTI, MHA) is :mod:`gcfeat.data.medical`."""

from .features import (
    FeatureFile,
    FeatureFileError,
    FeatureWriter,
    SettingsMismatch,
    VideoFeatures,
    box_to_source,
    merge_feature_files,
)
from .paths import OutputError, writable_dir, writable_file

__all__ = [
    "FeatureFile",
    "FeatureWriter",
    "FeatureFileError",
    "SettingsMismatch",
    "VideoFeatures",
    "box_to_source",
    "merge_feature_files",
    "OutputError",
    "writable_dir",
    "writable_file",
]
