"""Reading torch files safely and the state-dict forms inside them (shared by
:mod:`gcfeat.models.checkpoint` and :mod:`gcfeat.models.resnet`, which both read weight files;
kept apart so neither imports the other for it)."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gcfeat.errors import GcfeatError

__all__ = ["CheckpointError", "FORMAT", "TASK_FORMAT", "read_torch_file", "unwrap_state_dict", "infer_arch"]

FORMAT = "gcfeat-checkpoint"
#: The single-label task checkpoint written before there was one format (read, never written).
TASK_FORMAT = "gcfeat-task-checkpoint"


class CheckpointError(GcfeatError):
    """A checkpoint file is missing, unreadable, unsafe, or does not match what was asked."""


#: numpy scalar dtypes a checkpoint may hold (``np.float64``: the original's ``np.nanmean``).
NUMPY_SCALAR_DTYPES: frozenset[str] = frozenset({"f8"})


def _numpy_scalar_globals() -> list:
    """``safe_globals`` entries that rebuild numpy scalars of :data:`NUMPY_SCALAR_DTYPES` only.

    A pickled ``np.float64`` is ``scalar(dtype("f8", False, True) + BUILD(state), bytes)``:
    the scalar constructor and ``numpy.dtype`` are allowed through wrappers that refuse every
    other dtype (an object dtype would let ``scalar`` hand back arbitrary objects), and the
    dtype classes of the allowed dtypes are allowed for BUILD. Names cover files written with
    numpy 1 (``numpy.core``) and 2 (``numpy._core``).
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover
        return []
    try:
        from numpy._core.multiarray import scalar as np_scalar
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import scalar as np_scalar

    def _refuse(what: str) -> None:
        raise pickle.UnpicklingError(
            f"Weights only load failed: numpy {what} is not allowed in a checkpoint (allowed "
            f"numpy scalar dtypes: {sorted(NUMPY_SCALAR_DTYPES)})"
        )

    def scalar(dtype, *data):
        if not isinstance(dtype, np.dtype) or dtype.str.lstrip("<>=|") not in NUMPY_SCALAR_DTYPES:
            _refuse(f"scalar of dtype {dtype!r}")
        return np_scalar(dtype, *data)

    def dtype(name, align=False, copy=True):
        if not isinstance(name, str) or name.lstrip("<>=|") not in NUMPY_SCALAR_DTYPES:
            _refuse(f"dtype {name!r}")
        return np.dtype(name, align, copy)

    out = [
        (scalar, "numpy._core.multiarray.scalar"),
        (scalar, "numpy.core.multiarray.scalar"),
        (dtype, "numpy.dtype"),
    ]
    out += [type(np.dtype(d)) for d in sorted(NUMPY_SCALAR_DTYPES)]
    return out


def read_torch_file(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with errors that say why.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, or holds pickled objects
            other than tensors and plain containers (those are refused, not unpickled).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{what} {p}: no such file")
    if not p.is_file():
        raise CheckpointError(f"{what} {p}: is not a file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} {p}: the file is empty (0 bytes), expected a torch checkpoint")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "GLOBAL" in msg or "numpy" in msg:
            names = sorted(set(re.findall(r"GLOBAL ([\w.]+)", msg)))
            found = f" ({', '.join(names)})" if names else ""
            raise CheckpointError(
                f"{what} {p}: contains non-tensor objects{found}; it will not be unpickled "
                "because that could run arbitrary code. Expected tensors, numbers, strings, "
                "lists and dicts only (re-save the weights with torch.save(model.state_dict()))."
            ) from None
        raise CheckpointError(f"{what} {p}: truncated or not a torch checkpoint ({_short(e)})") from None
    except (
        RuntimeError,
        EOFError,
        KeyError,
        ValueError,
        OSError,
        zipfile.BadZipFile,
        IndexError,
        AttributeError,
        TypeError,
    ) as e:
        size = p.stat().st_size
        raise CheckpointError(
            f"{what} {p}: truncated or not a torch checkpoint ({size} bytes; {_short(e)})"
        ) from None


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__


def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


def unwrap_state_dict(raw: Any, path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside a loaded checkpoint and its form, ``module.`` prefixes removed.

    Returns:
        ``(state, form)`` with ``form`` in ``"gcfeat"``, ``"resume"``, ``"state_dict"``.
    """
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"checkpoint {path}: holds a {type(raw).__name__}, expected a dict (a state dict or "
            "a gcfeat checkpoint)"
        )
    if raw.get("format") == FORMAT:
        state, form = raw.get("state_dict"), "gcfeat"
    elif "model_state_dict" in raw:
        state, form = raw["model_state_dict"], "resume"
    elif "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        state, form = raw["state_dict"], "state_dict"
    else:
        state, form = raw, "state_dict"
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"checkpoint {path}: the {form} form holds no state dict")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(
            f"checkpoint {path}: expected a state dict of tensors, found non-tensor entries "
            f"{bad[:4]} (top-level keys: {sorted(map(str, raw))[:8]})"
        )
    return _strip_module(state), form


def infer_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """ResNet depth from state-dict keys: Bottleneck (``conv3``) -> 50/101/152, else 18/34.

    Returns ``None`` when the keys are not a torchvision ResNet's.
    """
    if "layer1.0.conv1.weight" not in state:
        return None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"layer3\.(\d+)\.", k))}
    n = len(blocks)
    if "layer1.0.conv3.weight" in state:
        return {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(
            n, f"resnet(bottleneck, {n} blocks in layer3)"
        )
    return {2: "resnet18", 6: "resnet34"}.get(n, f"resnet(basic, {n} blocks in layer3)")
