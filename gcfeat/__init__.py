"""gcfeat: CAM heatmaps -> boxes -> object-level features.

Pipeline packages, in order: ``gcfeat.data`` -> ``gcfeat.models`` -> ``gcfeat.cam`` ->
``gcfeat.boxes`` -> ``gcfeat.extract`` -> ``gcfeat.io``. ``gcfeat.tasks`` ties a dataset to a
model and its defaults; the CLI modules (``gcfeat.train``, ``gcfeat.bbox``, ``gcfeat.tune``,
``gcfeat.extract``, ``gcfeat.export``, ``gcfeat.demo``) are thin layers over that API.
"""

__version__ = "0.1.0"
