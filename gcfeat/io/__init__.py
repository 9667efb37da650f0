"""gcfeat.io: the HDF5 feature file (:mod:`gcfeat.io.features`), the exports for the downstream
models (:mod:`gcfeat.io.exports`); medical image I/O in :mod:`gcfeat.io.medical`."""
from .features import (FeatureFile, FeatureFileError, FeatureWriter, SettingsMismatch,
                       VideoFeatures, box_to_source, merge_feature_files)

__all__ = ["FeatureFile", "FeatureWriter", "FeatureFileError", "SettingsMismatch",
           "VideoFeatures", "box_to_source", "merge_feature_files"]
