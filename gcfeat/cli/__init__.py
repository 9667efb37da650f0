"""The command-line interfaces: one module per command, each argparse + one workflow call +
printing (``gcfeat <command>`` and ``python -m gcfeat.<command>`` both land here).

The library never imports this package (see CONTRIBUTING.md, the layer rule).
"""

from gcfeat.cli.common import add_debug, apply_task_options, debugging, run, task_flag

__all__ = ["add_debug", "apply_task_options", "debugging", "run", "task_flag"]
