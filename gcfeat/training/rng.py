"""Seeding of a training run: which generators are seeded, when, and their saved states.

Two orders of random numbers are in use, and a run must keep its own to stay repeatable:

- ``"per_epoch"`` (the multi-label recipe): python / numpy / torch and the loader's shuffling
  generator are re-seeded from ``seed + epoch`` at the start of every epoch, so a resumed run
  gives the same weights as one that was not interrupted.
- ``"once"`` (the single-label recipe): the torch generator and the shuffling generator are
  seeded from ``seed`` once, before the first epoch, and run on through every epoch (the BN
  recalibration pass draws its own shuffle from the same generator).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Seeding", "SEEDINGS", "seed_everything", "rng_state", "set_rng_state", "worker_init"]

SEEDINGS = ("per_epoch", "once")


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_init(worker_id: int) -> None:
    """DataLoader workers: torch seeds each from the loader's generator; numpy / python follow."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


@dataclass(frozen=True)
class Seeding:
    """When the run's generators are seeded (see the module docstring); ``seed=None``: never."""

    seed: int | None = 0
    mode: str = "per_epoch"

    def __post_init__(self) -> None:
        if self.mode not in SEEDINGS:
            raise ValueError(f"seeding={self.mode!r}: expected one of {SEEDINGS}")

    def start(self, generator: torch.Generator) -> None:
        """Before the first epoch (after the model, optimizer and loaders exist)."""
        if self.seed is None:
            generator.seed()
        elif self.mode == "once":
            torch.manual_seed(self.seed)
            generator.manual_seed(self.seed)

    def epoch(self, epoch: int, generator: torch.Generator) -> None:
        """At the start of ``epoch`` (1-based)."""
        if self.seed is not None and self.mode == "per_epoch":
            seed_everything(self.seed + epoch)
            generator.manual_seed(self.seed + epoch)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global generators' states as plain types (stored in the resumable checkpoint)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
