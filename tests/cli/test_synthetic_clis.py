"""The synthetic-data commands: `python -m gcfeat.data.synthetic` / `gcfeat.data.mri_synthetic`
(entry-point guards over gcfeat.cli.synthetic / gcfeat.cli.mri_synthetic) and `gcfeat synth` /
`gcfeat mri-synth`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gcfeat.cli import main as gcfeat_main
from gcfeat.cli.synthetic import main as synth

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


def test_python_m_entry_points_still_work(tmp_path):
    r = _run(
        "gcfeat.data.synthetic",
        "--layout",
        "miccai18",
        "--out",
        str(tmp_path / "s"),
        "--videos",
        "2",
        "--frames",
        "2",
        "--size",
        "32x40",
    )
    assert r.returncode == 0, r.stderr
    assert "wrote miccai18 layout" in r.stdout
    assert json.loads((tmp_path / "s" / "dataset.json").read_text())["layout"] == "miccai18"
    r = _run("gcfeat.data.mri_synthetic", "--task", "alzheimer", "--out", str(tmp_path / "a"), "--n", "4")
    assert r.returncode == 0, r.stderr
    assert "wrote alzheimer synthetic data" in r.stdout and (tmp_path / "a").is_dir()


def test_gcfeat_commands_and_errors(tmp_path, capsys):
    assert (
        gcfeat_main.main(["mri-synth", "--task", "organ3d", "--out", str(tmp_path / "o"), "--n", "11"]) == 0
    )
    assert "wrote organ3d synthetic data" in capsys.readouterr().out
    assert gcfeat_main.main([]) == 0 and "mri-synth" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        synth(["--layout", "miccai18", "--out", str(tmp_path / "x"), "--size", "3x"])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
