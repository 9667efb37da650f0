"""List the functions of the gcfeat package longer than a limit (default 80 lines).

A function's length is its logical lines: the ``def`` line and every line on which one of its
statements starts (nested blocks included), without its docstring. Lines a formatter adds by
splitting one call or literal over several lines (ruff format, one argument per line) do not
count; statements do. Usage::

    python scripts/long_functions.py            # functions over 80 logical lines, longest first
    python scripts/long_functions.py --max 100  # the limit tests/structure enforces
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def function_lengths(package: Path = ROOT / "gcfeat") -> list[tuple[int, str]]:
    """``[(lines, "path:line name"), ...]`` for every function and method under ``package``."""
    out = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body0 = node.body[0]
            doc = (
                body0
                if (
                    isinstance(body0, ast.Expr)
                    and isinstance(body0.value, ast.Constant)
                    and isinstance(body0.value.value, str)
                )
                else None
            )
            starts = {n.lineno for n in ast.walk(node) if isinstance(n, ast.stmt) and n is not doc}
            out.append((len(starts), f"{path.relative_to(package.parent)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max", type=int, default=80, help="report functions longer than this")
    args = p.parse_args(argv)
    long = [(n, where) for n, where in function_lengths() if n > args.max]
    for n, where in long:
        print(f"{n:4d}  {where}")
    return 1 if long else 0


if __name__ == "__main__":
    raise SystemExit(main())
