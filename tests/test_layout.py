"""The package's shape: no import cycles, modules and classes small enough to read, a public API.

These read the source (``ast``), not the running modules, so a function-level import counts
as much as a top-level one: hiding a cycle inside a function does not make it go away.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import ner_lit

PACKAGE = Path(ner_lit.__file__).parent
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 250
#: A module or class over its limit must say why in its docstring, in a line starting with this.
REASON = "Size:"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "sample" in path.relative_to(PACKAGE).parts:
            continue
        parts = ("ner_lit", *path.relative_to(PACKAGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the ner_lit modules it imports anywhere in its source (functions included)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "ner_lit":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    targets.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "ner_lit")
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_function_level_imports() -> None:
    # serving.cli imports the server inside its functions, so that `serve --help` needs no Flask
    assert "ner_lit.serving.launch" in import_graph()["ner_lit.serving.cli"]


def test_the_package_has_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


LAYERS = ["corpus", "alignment", "checkpoint", "data", "inference", "training", "serving", "cli"]


def test_subpackages_import_only_the_layers_below_them() -> None:
    """corpus < alignment < checkpoint < data < inference < training < serving < cli; top-level
    modules (errors, files, resources, version) are below them all."""
    wrong = []
    for module, targets in import_graph().items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] not in LAYERS:
            continue
        for target in targets:
            tparts = target.split(".")
            if len(tparts) >= 2 and tparts[1] in LAYERS and LAYERS.index(tparts[1]) > LAYERS.index(parts[1]):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def _has_reason(node: ast.AST) -> bool:
    doc = ast.get_docstring(node) or ""
    return any(line.strip().startswith(REASON) for line in doc.splitlines())


def test_no_module_is_over_its_size_without_a_reason() -> None:
    too_long = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES and not _has_reason(tree):
            too_long.append(f"{name}: {lines} lines")
    assert too_long == []


def test_no_class_is_over_its_size_without_a_reason() -> None:
    too_long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_CLASS_LINES and not _has_reason(node):
                    too_long.append(f"{name}.{node.name}: {lines} lines")
    assert too_long == []


def test_every_subpackage_says_what_it_owns_and_may_import() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        if init.parent.name == "sample":
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{init} does not say what it may import"


@pytest.mark.parametrize("name", ner_lit.__all__)
def test_every_public_name_imports_from_the_top(name: str) -> None:
    value = getattr(ner_lit, name)
    assert value is not None
    if name != "__version__":
        assert getattr(importlib.import_module(ner_lit._PUBLIC[name]), name) is value


def test_the_public_names_and_their_modules_are_one_list() -> None:
    assert set(ner_lit.__all__) == set(ner_lit._PUBLIC) | {"__version__"}


def test_an_unknown_public_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Predicter'"):
        ner_lit.Predicter  # noqa: B018


def test_importing_the_package_imports_neither_torch_nor_lightning() -> None:
    import subprocess
    import sys

    code = "import sys, ner_lit; print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
