"""The package's shape, read from the source (ast; nothing is imported or executed).

docs/architecture.md states the rules: no import cycles in ``src/``; a stage pipeline
(``pipelines/<stage>/``) imports no other stage's pipeline (shared library code lives in the
layers below, shared Kedro glue at ``pipelines/*.py``); modules under 500 lines and functions
under 80; corrector stages are named only in their own folders, the registry and conf/.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "ups_kedro"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """``{dotted module name: path}`` of every module of the package."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package modules ``name`` imports (anywhere in the file, lazy imports included)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                target = candidate if candidate in MODULES else base
                if target in MODULES:
                    targets.add(target)
        elif isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name in MODULES)
    return targets - {name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _stage_of(module: str) -> str | None:
    """``pipelines/<stage>/…`` → ``<stage>``; shared ``pipelines/*.py`` glue → None."""
    parts = module.split(".")
    if len(parts) >= 4 and parts[1] == "pipelines":
        return parts[2]
    if len(parts) == 3 and parts[1] == "pipelines" and (SRC / PACKAGE / "pipelines" /
                                                          parts[2]).is_dir():
        return parts[2]
    return None


def test_the_checker_sees_the_package() -> None:
    assert len(MODULES) > 50 and "ups_kedro.stages" in MODULES
    assert "ups_kedro.evaluation.suite" in GRAPH["ups_kedro.evaluation.surrogate"] or \
        "ups_kedro.evaluation.surrogate" in GRAPH["ups_kedro.evaluation.suite"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_no_stage_pipeline_imports_another() -> None:
    crossing = sorted((module, target) for module, targets in GRAPH.items()
                      for target in targets
                      if _stage_of(module) and _stage_of(target)
                      and _stage_of(module) != _stage_of(target))
    assert crossing == [], "library code belongs below pipelines/ (docs/architecture.md)"


def test_modules_are_short() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_functions_are_short() -> None:
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name}"] = n
    assert long == {}


def test_registry_is_importable_without_torch_or_kedro() -> None:
    imported = {a.name.split(".")[0] for node in ast.walk(ast.parse(
        MODULES["ups_kedro.stages"].read_text())) if isinstance(node, ast.Import)
        for a in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(ast.parse(
        MODULES["ups_kedro.stages"].read_text())) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"torch", "kedro", "mlflow", "numpy", "ups_kedro"}


@pytest.mark.parametrize("corrector", ["diff_residual", "consistency_distill"])
def test_corrector_stages_are_named_only_in_their_folders_and_the_registry(corrector) -> None:
    """Adding a corrector touches its folder, the registry and conf/ (docs/architecture.md):
    no other module may list it.  The modules that implement a stage's model and loss may say
    in their docstrings which stage they serve (nothing to change for a new stage)."""
    own = SRC / PACKAGE / "pipelines" / corrector
    implementations = {"ups_kedro.models.diffusion_residual", "ups_kedro.models.corrector_config",
                       "ups_kedro.training.diff_residual", "ups_kedro.training.consistency_distill",
                       "ups_kedro.training.teacher_cache"}
    naming = sorted(name for name, path in MODULES.items()
                    if corrector in path.read_text() and own not in path.parents
                    and name not in {"ups_kedro.stages", *implementations})
    if corrector == "diff_residual":  # Stage 3 distils Stage 2: it names its teacher
        naming = [n for n in naming if not n.startswith("ups_kedro.pipelines.consistency_distill")]
    assert naming == []
