"""Shared fixtures. Helpers that tests import live in tests/helpers.py (``from helpers import
...``): this file puts tests/ on ``sys.path`` (appended, so packages win over the test folders'
names); test modules never import each other (see CONTRIBUTING.md)."""

import os
import sys

import pytest
import torch

sys.path.append(os.path.dirname(os.path.abspath(__file__)))

# Tests never need a display.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def one_thread():
    """Run a test on one OpenMP thread (many small ops: extra threads only add contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
