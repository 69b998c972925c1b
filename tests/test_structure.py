"""The shape of the engine (docs/architecture.md): imports run one way, from the layers
below to the layers above; no cycles; small modules and functions; Optuna's internals in
one module; library code logs instead of printing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "autotransfer"

# Bottom to top. A module may import its own package and anything ranked lower.
LAYERS = [
    ["errors", "log", "hookspecs"],
    ["checks", "files", "storage"],
    ["data"],
    ["backbones"],
    ["strategy"],
    ["heads"],
    ["plugins"],
    ["inputs"],
    ["techniques"],
    ["training"],
    ["selection", "predict", "report"],
    ["backends"],
    ["study"],
    ["search"],
    ["config"],
    ["cli", "__init__", "testing"],
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
MAX_UPWARD = 3
UPWARD_MARK = "# upward:"  # the comment an allowed upward import carries, saying why


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]):
    """(imported module, line number, source line) of every import of the package in the
    module: at the top, inside functions, under TYPE_CHECKING."""
    text = path.read_text()
    lines = text.splitlines()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for target in targets:
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name:
                yield target, node.lineno, lines[node.lineno - 1]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t, _, _ in _imports(m, p, modules)} for m, p in modules.items()}


def test_every_top_level_module_and_package_has_a_layer():
    names = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert sorted(names - set(RANK)) == []


def test_no_import_cycle():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                cycles.append(sorted(component + [v]))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_imports_run_downward():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target, line, source in _imports(name, path, modules):
            a, b = _layer(name), _layer(target)
            if a != b and RANK[b] > RANK[a]:
                upward.append((f"{name}:{line} -> {target}", UPWARD_MARK in source))
    assert [u for u, said in upward if not said] == []  # each says why, in a comment
    assert len(upward) <= MAX_UPWARD


def test_top_level_holds_at_most_twelve_modules():
    assert len(list(PACKAGE.glob("*.py"))) <= 12


def test_modules_and_functions_stay_small():
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 400:
            long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    long.append(f"{path.name}:{node.lineno} {node.name}(): {n} lines")
    assert long == []


def test_library_code_logs_instead_of_printing():
    printing = [f"{p.relative_to(PACKAGE)}:{node.lineno}"
                for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert printing == []


def test_optuna_internals_are_touched_in_the_storage_module_only():
    private = re.compile(r"\._(storage|study_id|trial_id)\b")
    touching = [f"{p.relative_to(PACKAGE)}:{i}"
                for p in PACKAGE.rglob("*.py") if p.name != "storage.py"
                for i, line in enumerate(p.read_text().splitlines(), 1)
                if private.search(line)]
    assert touching == []


def test_the_fields_page_is_the_field_table():
    import autotransfer as at
    from autotransfer.strategy import fields

    page = (PACKAGE.parent / "docs" / "fields.md").read_text()
    generated = page.split("do not edit by hand -->\n", 1)[1].split("<!-- end", 1)[0]
    assert generated == fields.markdown(at.Strategy)
