"""Helpers shared by the workflows: stage timing for the demos, and the demos' last stage (the
HTML report of the run)."""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from gcfeat.report import build_run_report

__all__ = ["stage", "html_report_stage"]


def stage(name: str):
    """Print a stage header and return a function that prints its elapsed time."""
    t0 = time.perf_counter()
    print(f"\n=== {name} ===", flush=True)

    def done() -> float:
        dt = time.perf_counter() - t0
        print(f"--- {name}: {dt:.1f} s", flush=True)
        return dt

    return done


def html_report_stage(
    title: str, out: Path, summary: dict[str, Any], *, started: float | None = None, progress: bool = True
) -> Exception | None:
    """The last stage of every demo: ``<out>/report.html`` (:func:`gcfeat.report.build_run_report`
    over the run directory, whose ``summary.json`` the demo has already written).

    It runs after everything else is on disk, so a report that fails leaves the run complete:
    the error is printed (with its traceback) and returned, not raised, so the demo can still
    print where everything is and raise it then. ``summary`` gains ``report_html`` (the page, or
    None with ``report_html_error``) and ``seconds["report_html"]``; with ``started`` (the
    ``time.perf_counter()`` of the demo's start) ``seconds["total"]`` counts this stage too.
    ``summary.json`` is rewritten with them.
    """
    done = stage(title)
    error = None
    try:
        r = build_run_report(out, progress=progress)
    except Exception as e:  # noqa: BLE001 - whatever breaks the page, the run stays usable
        error = e
        traceback.print_exc()
        print(
            f"report.html not written ({type(e).__name__}: {e}); everything else is in "
            f"{out}; `gcfeat report {out}` retries it",
            file=sys.stderr,
            flush=True,
        )
        summary.update(report_html=None, report_html_error=f"{type(e).__name__}: {e}")
    else:
        print(
            f"{r.html}: {r.frames} gallery frames, {r.images} images in {r.files_dir}; "
            f"sections {', '.join(r.sections)}"
        )
        for k in ("gallery", "features"):  # every demo has both: their absence is news
            if k in r.skipped:
                print(f"  no {k}: {r.skipped[k]}")
        summary["report_html"] = str(r.html)
    seconds = summary.setdefault("seconds", {})
    seconds["report_html"] = round(done(), 1)
    if started is not None:
        seconds["total"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
    return error


def _jsonable(o):
    """JSON for numpy scalars (as numbers) and paths (as text)."""
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)
