"""gcfeat.io: the HDF5 feature file (:mod:`gcfeat.io.features`); medical image I/O in
:mod:`gcfeat.io.medical`."""
from .features import (FeatureFile, FeatureFileError, FeatureWriter, SettingsMismatch,
                       VideoFeatures, merge_feature_files)
from .paths import OutputError, writable_dir, writable_file

__all__ = ["FeatureFile", "FeatureWriter", "FeatureFileError", "SettingsMismatch",
           "VideoFeatures", "merge_feature_files", "OutputError", "writable_dir", "writable_file"]
