"""What every CLI shares: the one error -> exit 2 path (:func:`run`), ``--debug``, and the
option helpers of the CLIs whose options depend on ``--task``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["task_flag", "apply_task_options", "add_debug", "debugging", "run"]


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--debug``: let errors propagate with their traceback instead of ``error: ...``."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error instead of a one-line message",
    )
    return parser


def debugging(args: argparse.Namespace) -> bool:
    """Whether ``--debug`` was given (its default is SUPPRESS: absent from ``args``)."""
    return bool(getattr(args, "debug", False))


def run(job: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``job``; a user-caused error (:class:`gcfeat.errors.GcfeatError`, and any other
    ``ValueError`` a stage raises about its arguments) prints ``error: <message>`` on stderr
    and returns 2, with no traceback unless ``debug``."""
    try:
        return int(job() or 0)
    except ValueError as e:  # GcfeatError is a ValueError
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


def task_flag(dest: str) -> str:
    """argparse dest -> its flag (``batch_size`` -> ``--batch-size``)."""
    return "--" + dest.replace("_", "-")


def apply_task_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, surgical: dict, mri: dict
) -> argparse.Namespace:
    """Fill the options not given on the command line from the ``--task``'s side.

    The parser's options (but ``--task``) have ``default=argparse.SUPPRESS``, so ``args`` holds
    only what was typed. ``surgical`` / ``mri``: ``{dest: default}`` of the options each side
    takes (a callable default is called with the task name). An option typed that the task does
    not take ends the program through ``parser.error`` (exit 2) naming it and what the task takes.
    """
    task = args.task
    allowed = surgical if task == "surgical" else mri
    given = set(vars(args)) - {"task", "debug"}
    bad = sorted(given - set(allowed))
    if bad:
        side = (
            "--task surgical" if task != "surgical" else "the MRI tasks (--task prostate|organ3d|alzheimer)"
        )
        takes = " ".join(task_flag(d) for d in allowed)
        verb = "applies" if len(bad) == 1 else "apply"
        parser.error(
            f"{', '.join(task_flag(d) for d in bad)}: {verb} to {side} only, not to "
            f"--task {task}; --task {task} takes --task {takes}"
        )
    for dest, default in allowed.items():
        if dest not in given:
            setattr(args, dest, default(task) if callable(default) else default)
    return args
