"""One base class for every error a user can cause.

Every error that bad input (a file, an argument, a checkpoint, a tensor given to the API) can
raise is a :class:`GcfeatError`, itself a ``ValueError`` so that ``except ValueError`` keeps
working. Its message names the offender (file or argument), what was found and what was
expected. The command lines print such errors as one ``error: ...`` line and exit with 2.

An error raised inside a DataLoader worker is re-raised in the main process by torch as
``type(msg)`` (or ``type(message=msg)``) where ``msg`` is ``"Caught DataError in DataLoader
worker process 0.\\nOriginal Traceback (most recent call last): ..."``; :class:`GcfeatError`
recognises that form and keeps only the original one-line message (the worker's traceback is
kept in :attr:`GcfeatError.worker_traceback` for ``--debug``).
"""

from __future__ import annotations

import re

__all__ = ["ArgumentError", "GcfeatError", "GcfeatWarning", "unwrap_worker_message"]

# torch.utils._utils.ExceptionWrapper.reraise: "Caught {type} {where}.\nOriginal {traceback}"
_WRAPPED = re.compile(r"\ACaught (\w+) (.*?)\.\nOriginal (Traceback \(most recent call last\):\n.*)\Z", re.S)


def unwrap_worker_message(cls: type, msg: str) -> tuple[str, str | None]:
    """``(message, worker_traceback)``: the original message of an exception of type ``cls``
    re-raised by torch from a worker (see the module docstring), else ``(msg, None)``.

    The original message is what follows the last ``<module>.<Name>: `` (or ``<Name>: ``) line
    of the worker's traceback, the form ``traceback.format_exception`` ends with.
    """
    m = _WRAPPED.match(msg) if isinstance(msg, str) else None
    if m is None or m.group(1) != cls.__name__:
        return msg, None
    tb = m.group(3)
    heads = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    lines = tb.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        for head in heads:
            if lines[i].startswith(head):
                return "\n".join([lines[i][len(head) :], *lines[i + 1 :]]).strip(), tb
    return msg, None


class GcfeatError(ValueError):
    """Base class of the package's user-facing errors (a ``ValueError``).

    ``GcfeatError(msg)`` / ``GcfeatError(message=msg)``; a message re-raised by torch from a
    DataLoader worker is reduced to the worker's original message (module docstring).
    """

    worker_traceback: str | None = None

    def __init__(self, *args, message: str | None = None):
        if message is not None:
            args = (message, *args)
        if len(args) == 1 and isinstance(args[0], str):
            text, tb = unwrap_worker_message(type(self), args[0])
            if tb is not None:
                args, self.worker_traceback = (text,), tb
        super().__init__(*args)


class ArgumentError(GcfeatError):
    """An argument (command-line option or API parameter) that is malformed or out of range."""


class GcfeatWarning(UserWarning):
    """Inconsistent data that is used anyway (counted, stated once per dataset / run)."""
