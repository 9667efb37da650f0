"""The layer rule, checked on the source: every import of every gcfeat module (top-level and
inside functions) read with ``ast``.

    shims -> cli -> workflows -> tasks -> extract | training -> cam | boxes | metrics | viz
          -> models -> data -> io            (config, errors and the package root: anyone)

An import may go down or sideways (peers of one layer), never up; the module graph has no
cycle. The CLI shims (``python -m gcfeat.<cmd>`` entry points) sit on top: only ``gcfeat
.__main__`` and other shims may point at them. The same contracts are in ``.importlinter``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gcfeat"

#: rank of each top-level part of the package (higher imports lower).
LAYERS = {
    "cli": 7,
    "workflows": 6,
    "report": 5.5,
    "tasks": 5,
    "extract": 4,
    "training": 4,
    "metrics": 3.5,
    "cam": 3,
    "boxes": 3,
    "viz": 3,
    "models": 2,
    "io": 1.5,
    "data": 1,
    "config": -1,
    "errors": -1,
    "": -1,
}
#: thin ``python -m`` entry points: 2-3 lines calling gcfeat.cli.<cmd>.main.
SHIMS = {
    "gcfeat.__main__",
    "gcfeat.train",
    "gcfeat.bbox",
    "gcfeat.tune",
    "gcfeat.export",
    "gcfeat.evaluate",
    "gcfeat.demo",
    "gcfeat.tasks.train",
    "gcfeat.extract.__main__",
    "gcfeat.report.__main__",
}
SHIM_RANK = 8
#: library modules that are also `python -m` entry points: their ``if __name__ == "__main__":``
#: guard (run only as the entry point, never on import) may import this one CLI module.
ENTRY_GUARDS = {
    "gcfeat.data.synthetic": "gcfeat.cli.synthetic",
    "gcfeat.data.mri_synthetic": "gcfeat.cli.mri_synthetic",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """gcfeat modules ``name`` imports anywhere in its source (functions included; under
    ``if TYPE_CHECKING:`` too, an upward type import is still an upward dependency)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    guarded = {id(n) for g in entry_guards(tree) for n in ast.walk(g)} if name in ENTRY_GUARDS else set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue  # checked by test_entry_guards_call_their_cli_only
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import gcfeat.cam.base.X` -> the module part
                t = t.rpartition(".")[0]
            if t.startswith("gcfeat") and t != name:
                found.add(t)
    return found


def entry_guards(tree: ast.Module) -> list[ast.If]:
    """The module's top-level ``if __name__ == "__main__":`` blocks."""
    return [
        n
        for n in tree.body
        if isinstance(n, ast.If)
        and isinstance(n.test, ast.Compare)
        and isinstance(n.test.left, ast.Name)
        and n.test.left.id == "__name__"
        and isinstance(n.test.comparators[0], ast.Constant)
        and n.test.comparators[0].value == "__main__"
    ]


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {n: imports_of(n, p, modules) for n, p in modules.items()}


def rank(module: str) -> int:
    if module in SHIMS:
        return SHIM_RANK
    part = module.split(".")[1] if module.count(".") else ""
    return LAYERS.get(part, LAYERS.get(part.split("_")[0], None))


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in g.items():
        for dst in targets:
            if rank(dst) > rank(src):
                bad.append(f"{src} (layer {rank(src)}) imports {dst} (layer {rank(dst)})")
    return sorted(bad)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the module graph as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_every_module_has_a_layer():
    unknown = [m for m in all_modules() if rank(m) is None]
    assert not unknown, f"modules outside the layer map (add them to LAYERS): {unknown}"


def test_no_upward_imports():
    bad = upward_imports(graph())
    assert not bad, "upward imports (the layer rule, CONTRIBUTING.md):\n" + "\n".join(bad)


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_shims_are_thin():
    modules = all_modules()
    for shim in SHIMS:
        path = modules[shim]
        code = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith(("#", '"""', "`"))
        ]
        assert len(code) <= 4, f"{path}: a shim holds {len(code)} lines of code"
        assert imports_of(shim, path, modules) <= {m for m in modules if m.startswith("gcfeat.cli")}


def test_entry_guards_call_their_cli_only():
    """`python -m gcfeat.data.synthetic` (and mri_synthetic): the guard imports its CLI's
    ``main`` and calls it, nothing else."""
    modules = all_modules()
    for module, cli in ENTRY_GUARDS.items():
        guards = entry_guards(ast.parse(modules[module].read_text()))
        assert len(guards) == 1 and len(guards[0].body) == 2, module
        imp = guards[0].body[0]
        assert isinstance(imp, ast.ImportFrom) and imp.module == cli, module
        assert [a.name for a in imp.names] == ["main"], module


def test_the_checker_sees_an_upward_and_a_cyclic_import(tmp_path):
    """The two checks fail on what they are meant to catch (a stage importing a workflow,
    two modules importing each other inside functions)."""
    g = graph()
    g["gcfeat.boxes.ops"] = g["gcfeat.boxes.ops"] | {"gcfeat.workflows.tune"}
    assert any("gcfeat.boxes.ops" in b for b in upward_imports(g))
    g = graph()
    g["gcfeat.boxes.masks"] = g["gcfeat.boxes.masks"] | {"gcfeat.boxes.ops"}
    g["gcfeat.boxes.ops"] = g["gcfeat.boxes.ops"] | {"gcfeat.boxes.masks"}
    assert find_cycle(g) is not None
