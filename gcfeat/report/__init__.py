"""gcfeat.report: one self-contained HTML page per run and per feature file.

* :func:`build_run_report` (``gcfeat report RUN_DIR``, the last stage of every demo): the
  run's settings and figures (mAP and per-class AP, the threshold study's table and curves,
  box metrics, localisation / faithfulness), a gallery of frames with the heatmap of every
  predicted class, predicted and ground-truth boxes (filterable by class, sortable by IoU),
  and the feature file's summary with the rows a downstream model reads;
* :func:`build_feature_report` (``gcfeat report feats.h5 --data DIR``): the same for
  any feature file, its frames drawn from the dataset.

The page is ``report.html`` plus one folder of images beside it (``report_files/``): no
server, no network, opens from disk; the tables and gallery read without JavaScript, and a
small inline script adds the gallery's filter and sort.
"""

from .build import ReportError, ReportResult, build_feature_report, build_run_report

__all__ = ["build_run_report", "build_feature_report", "ReportResult", "ReportError"]
