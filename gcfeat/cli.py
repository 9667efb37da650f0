"""Argparse helpers shared by the CLIs whose options depend on ``--task``."""
from __future__ import annotations

import argparse

__all__ = ["task_flag", "apply_task_options"]


def task_flag(dest: str) -> str:
    """argparse dest -> its flag (``batch_size`` -> ``--batch-size``)."""
    return "--" + dest.replace("_", "-")


def apply_task_options(parser: argparse.ArgumentParser, args: argparse.Namespace,
                       surgical: dict, mri: dict) -> argparse.Namespace:
    """Fill the options not given on the command line from the ``--task``'s side.

    The parser's options (but ``--task``) have ``default=argparse.SUPPRESS``, so ``args`` holds
    only what was typed. ``surgical`` / ``mri``: ``{dest: default}`` of the options each side
    takes (a callable default is called with the task name). An option typed that the task does
    not take ends the program through ``parser.error`` (exit 2) naming it and what the task takes.
    """
    task = args.task
    allowed = surgical if task == "surgical" else mri
    given = set(vars(args)) - {"task"}
    bad = sorted(given - set(allowed))
    if bad:
        side = ("--task surgical" if task != "surgical"
                else "the MRI tasks (--task prostate|organ3d|alzheimer)")
        takes = " ".join(task_flag(d) for d in allowed)
        verb = "applies" if len(bad) == 1 else "apply"
        parser.error(f"{', '.join(task_flag(d) for d in bad)}: {verb} to {side} only, not to "
                     f"--task {task}; --task {task} takes --task {takes}")
    for dest, default in allowed.items():
        if dest not in given:
            setattr(args, dest, default(task) if callable(default) else default)
    return args
