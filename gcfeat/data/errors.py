"""Errors raised by the data readers and writers."""
from __future__ import annotations

from gcfeat.errors import GcfeatError

import os


class DataError(GcfeatError):
    """A data file or folder is missing, empty, corrupt or malformed.

    The message names the file, what was found and what was expected, e.g.
    ``DataError: data/seq_1/left_frames/frame003.png: empty file (0 bytes); expected a PNG image``.
    """


def require_dir(path: os.PathLike | str, what: str) -> None:
    """Raise :class:`DataError` unless ``path`` is an existing folder; ``what`` says what it holds."""
    if not os.path.isdir(path):
        found = "a file" if os.path.exists(path) else "nothing"
        raise DataError(f"{path}: expected a folder with {what}, found {found}")


def require_file(path: os.PathLike | str, what: str) -> None:
    """Raise :class:`DataError` unless ``path`` is a non-empty file; ``what`` says what it should be."""
    if not os.path.isfile(path):
        found = "a folder" if os.path.isdir(path) else "nothing"
        raise DataError(f"{path}: expected {what}, found {found}")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file (0 bytes); expected {what}")
