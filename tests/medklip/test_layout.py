"""The package layout is the architecture: no import cycles, and no layer imports one later on the data's path.

Every import counts, at module level or inside a function (a lazy import is still a dependency), in `medklip/` and,
where they are present, `tasks/` and `flows/`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The order of the data's path. A module may import its own layer and the layers before it, never one after it.
LAYERS = {
    "medklip": 0,  # the package face (`__version__`)
    "medklip.vocabulary": 0,
    "medklip.config": 0,
    "medklip.safe_paths": 0,
    "medklip.data": 1,
    "medklip.labels": 2,
    "medklip.model": 3,
    "medklip.training": 4,
    "medklip.evaluation": 5,
    "medklip.tracking": 6,
    "medklip.train": 7,  # the entry points: they compose the layers
    "medklip.cli": 7,
    "tasks": 8,
    "flows": 9,
}
PACKAGES = ("medklip", "tasks", "flows")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        if (ROOT / package).is_dir()
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules that `path` imports anywhere in its body (`from a import b` counts `a.b` if a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, set(modules)) for name, path in modules.items()}


def layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return [*stack[stack.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer(target) > layer(module)
    )


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_layer_imports_a_later_one():
    assert layer_violations(import_graph()) == []


def test_every_subpackage_says_what_it_owns_and_may_import():
    for package in ("data", "labels", "model", "training", "evaluation", "tracking"):
        docstring = ast.get_docstring(ast.parse((ROOT / "medklip" / package / "__init__.py").read_text()))
        assert docstring and "import" in docstring, f"medklip/{package}/__init__.py needs its docstring"


def test_the_checks_catch_a_cycle_and_a_backward_import():
    # Negative control: the same checks on graphs broken on purpose.
    graph = import_graph()
    graph["medklip.data.dataset"] = graph["medklip.data.dataset"] | {"medklip.training.trainer"}
    assert "medklip.data.dataset (layer 1) imports medklip.training.trainer (layer 4)" in layer_violations(graph)
    looped = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(looped) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lazy_and_relative_imports_are_seen(tmp_path):
    known = {"medklip.data.dataset", "medklip.data.boxes", "medklip.model.network", "medklip.data"}
    source = tmp_path / "dataset.py"
    source.write_text("def f():\n    from medklip.model.network import MedKLIP\nfrom . import boxes\n")
    assert imports_of(source, "medklip.data.dataset", known) == {"medklip.model.network", "medklip.data.boxes"}


@pytest.mark.parametrize("package", ["tasks", "flows"])
def test_prefect_layers_stay_above_the_library(package):
    if not (ROOT / package).is_dir():
        pytest.skip(f"{package}/ is not in this checkout")
    graph = import_graph()
    assert not [
        target
        for module, targets in graph.items()
        if module.startswith("medklip")
        for target in targets
        if target.split(".")[0] == package
    ]
