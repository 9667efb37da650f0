"""Errors raised by the data readers and writers."""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from gcfeat.errors import GcfeatError


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


def presence_flags(values, path: os.PathLike | str, line_no: int, line: str) -> list[int]:
    """Tool-presence flags of one annotation row -> ``[0/1, ...]``.

    Only ``0`` and ``1`` are accepted (``1.0`` too); anything else (``2``, ``-1``, ``0.5``, a
    word) is a :class:`DataError` naming the file and line: reading it as "present" would
    silently turn a typo or another file format into a label.
    """
    out = []
    for v in values:
        try:
            f = float(v)
        except ValueError:
            raise DataError(
                f"{path}, line {line_no}: non-numeric tool flag {v!r} in {line.strip()!r}; expected 0 or 1"
            ) from None
        if f not in (0.0, 1.0):
            raise DataError(
                f"{path}, line {line_no}: tool flag {v!r} in {line.strip()!r}; expected 0 or 1 (presence)"
            )
        out.append(int(f))
    return out


def read_npz(path: os.PathLike | str, what: str) -> dict:
    """All arrays of an ``.npz`` file as ``{key: ndarray}`` (no pickles), read at once.

    A truncated or corrupt archive (``BadZipFile``, a bad CRC, a cut-off member) or a member
    holding pickled objects is a :class:`DataError` naming the file; ``what`` says what it
    should hold.
    """
    require_file(path, what)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot read as .npz ({type(e).__name__}: {e}); expected {what}") from None


def make_dir(path: os.PathLike | str, what: str) -> None:
    """``mkdir -p path`` for a writer; a file in the way or a read-only place is a
    :class:`DataError` naming the folder (``what`` says what it is for)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise DataError(f"{path}: cannot create {what} ({e.strerror}); expected a writable folder") from None
