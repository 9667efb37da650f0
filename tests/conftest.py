import os

import pytest
import torch

# Tests never need a display.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def one_thread():
    """Run a test on one OpenMP thread (many small ops: extra threads only add contention)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
