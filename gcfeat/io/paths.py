"""Output paths checked before a job starts: a folder that is a file, or one that cannot be
written, is an :class:`OutputError` naming it, not an ``OSError`` after minutes of work."""

from __future__ import annotations

import os
from pathlib import Path

from gcfeat.errors import GcfeatError

__all__ = ["OutputError", "writable_dir", "writable_file"]


class OutputError(GcfeatError):
    """An output path (``--out``) that is the wrong kind of thing or cannot be written."""


def _writable(folder: Path) -> bool:
    """Whether new entries can be made in the existing ``folder`` (permission bits, ACLs and
    read-only mounts as the kernel sees them for this process)."""
    return os.access(folder, os.W_OK | os.X_OK)


def _existing_ancestor(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _check_ancestor(p: Path, what: str) -> None:
    anc = _existing_ancestor(p)
    if not anc.is_dir():
        raise OutputError(f"{p}: {anc} is a file, so {what} cannot be created under it; expected a folder")
    if not _writable(anc):
        where = "the folder is" if anc == p.absolute() else f"{anc} is"
        raise OutputError(
            f"{p}: {where} not writable (permission denied or a read-only "
            f"file system); expected a folder this user can write to"
        )


def writable_dir(path: str | os.PathLike, create: bool = True) -> Path:
    """``path`` as a folder that this process can write in (made, with its parents, when
    ``create``); raises :class:`OutputError` naming it when it is a file or not writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: is a file; expected an output folder (existing or new)")
    _check_ancestor(p, "the output folder")
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{p}: cannot create the output folder ({e.strerror})") from None
    return p


def writable_file(path: str | os.PathLike) -> Path:
    """``path`` as an output file this process can create or replace; raises
    :class:`OutputError` naming it when it is a folder or its folder is not writable."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a folder; expected an output file name")
    _check_ancestor(p.absolute().parent, "the output file")
    return p
