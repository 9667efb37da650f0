"""Workflows: one job for any task. Each takes a :class:`~gcfeat.tasks.Task` (or its name) and
returns a dataclass; the CLIs (:mod:`gcfeat.cli`) are argparse + one call + printing.

==========================  ===============================================  ==================
module                      entry point                                      returns
==========================  ===============================================  ==================
:mod:`.train`               ``train(task, data, ...)``                       ``TrainOutcome``
:mod:`.tune`                ``tune(task, data, checkpoint, thresholds)``     ``TuningResult``
:mod:`.tune_transfer`       ``run_transfer(data, checkpoint, thresholds)``   ``TransferResult``
:mod:`.map_checks`          ``check_maps(model, x, classes, maps)``,          ``MapChecks``
                            ``evaluate_surgical(data, checkpoint, out)``
:mod:`.inspect`             ``inspect(task, data, checkpoint, bidx)``        ``FrameBoxes`` /
                                                                             ``TaskBoxes``
:mod:`.evaluate`            ``evaluate(task, data, checkpoint, out)``        result dict
:mod:`.extract`             ``extract(task, data, checkpoint, out)``         ``ExtractResult``
:mod:`.demo`                ``demo(task, out)``                              summary dict
==========================  ===============================================  ==================

The submodules are imported by name (``from gcfeat.workflows.tune import tune``); this package
re-exports nothing, so ``gcfeat.workflows.tune`` stays the module.
"""
