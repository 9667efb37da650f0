"""Helpers shared by the workflows (stage timing for the demos)."""
from __future__ import annotations

import time

__all__ = ["stage"]


def stage(name: str):
    """Print a stage header and return a function that prints its elapsed time."""
    t0 = time.perf_counter()
    print(f"\n=== {name} ===", flush=True)

    def done() -> float:
        dt = time.perf_counter() - t0
        print(f"--- {name}: {dt:.1f} s", flush=True)
        return dt

    return done


