import os
import sys

import pytest

# Tests never need a display; keep matplotlib on Agg and torch on few threads.
os.environ.setdefault("MPLBACKEND", "Agg")
