"""`gcfeat report` through the dispatcher, the `python -m gcfeat.report` shim, `--debug`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gcfeat.cli.main import COMMANDS
from gcfeat.cli.main import main as gcfeat_main
from gcfeat.report import ReportError

ROOT = Path(__file__).resolve().parents[2]


def test_gcfeat_report_dispatches(tiny_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    assert COMMANDS["report"][0] == "gcfeat.cli.report"
    assert gcfeat_main(["report", str(run), "--max-frames", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {run / 'report.html'} (2 gallery frames" in out
    assert (run / "report.html").is_file()
    # the feature-file form through the same command
    assert (
        gcfeat_main(
            ["report", str(run / "features.h5"), "--data", str(run / "data"), "--n", "3", "--no-progress"]
        )
        == 0
    )
    assert "(3 gallery frames" in capsys.readouterr().out
    assert (run / "features_report.html").is_file()


def test_gcfeat_report_errors_and_debug(tmp_path, capsys):
    assert gcfeat_main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: run directory")
    assert "no such folder" in err[0]
    with pytest.raises(ReportError, match="no such folder"):
        gcfeat_main(["report", str(tmp_path / "nope"), "--debug"])


def test_shim_and_dispatcher_help():
    """`python -m gcfeat.report --help` (the 2-line shim) and `python -m gcfeat report --help`
    print the same help, which names both forms."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    texts = []
    for argv in (["-m", "gcfeat.report", "--help"], ["-m", "gcfeat", "report", "--help"]):
        r = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
        )
        assert r.returncode == 0, r.stderr
        texts.append(r.stdout)
    assert texts[0] == texts[1]
    for s in (
        "gcfeat report RUN_DIR",
        "gcfeat report FEATS.h5 --data DIR",
        "python -m gcfeat.report",
        "--debug",
        "summary.json",
    ):
        assert s in texts[0], s
    r = subprocess.run(
        [sys.executable, "-m", "gcfeat"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert "report" in r.stdout
