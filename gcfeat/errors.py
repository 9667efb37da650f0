"""One base class for every error a user can cause.

Every error that bad input (a file, an argument, a checkpoint, a tensor given to the API) can
raise is a :class:`GcfeatError`, itself a ``ValueError`` so that ``except ValueError`` keeps
working. Its message names the offender (file or argument), what was found and what was
expected. The command lines print such errors as one ``error: ...`` line and exit with 2.
"""
from __future__ import annotations

__all__ = ["GcfeatError"]


class GcfeatError(ValueError):
    """Base class of the package's user-facing errors (a ``ValueError``)."""
