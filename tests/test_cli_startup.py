"""`kedro registry list` and `kedro --help` start without torch; pipelines are built on use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.pipeline import Pipeline

from ups_kedro import pipeline_registry as registry

#: Runs a kedro command in-process, then prints which heavy modules it imported.
PROBE = """
import json, runpy, sys
sys.argv = ["kedro", *sys.argv[1:]]
try:
    runpy.run_module("kedro", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = ("torch", "matplotlib", "ups_kedro.pipelines.operator.nodes")
print("PROBE " + json.dumps({"code": code, "imported": [m for m in heavy if m in sys.modules]}))
"""


def _probe(root: Path, *args: str) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=root, capture_output=True,
                          text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(line[len("PROBE "):]), proc.stdout


@pytest.mark.parametrize("args", [("registry", "list"), ("--help",)])
def test_cli_starts_without_torch(project: Path, args: tuple[str, ...]) -> None:
    result, out = _probe(project, *args)
    assert result["code"] in (0, None), out
    assert result["imported"] == [], f"`kedro {' '.join(args)}` imported {result['imported']}"
    if args[0] == "registry":
        listed = {line[2:] for line in out.splitlines() if line.startswith("- ")}
        assert listed == {*registry.stage_names(), "__default__"}
        assert {"operator", "evaluation", "data_processing"} <= listed


def test_registry_builds_each_pipeline_on_first_use() -> None:
    pipelines = registry.register_pipelines()
    assert set(pipelines) == {*registry.stage_names(), "__default__"}
    assert not any(p.is_built for p in pipelines.values())
    operator = pipelines["operator"]
    assert isinstance(operator, Pipeline)
    assert any(n.name == "operator.train_operator" for n in operator.nodes)
    assert operator.is_built and not pipelines["evaluation"].is_built
    chained = {n.name for n in pipelines["__default__"].nodes}
    expected = set().union(*({n.name for n in registry.build_stage(s).nodes}
                             for s in registry.DEFAULT_CHAIN))
    assert chained == expected
    assert not {n.name for n in pipelines["promotion"].nodes} & chained


def test_a_stage_that_fails_to_build_stops_with_its_name() -> None:
    with pytest.raises(ImportError, match="pipeline 'no_such_stage' could not be built") as info:
        registry.build_stage("no_such_stage")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)

    lazy = registry.LazyPipeline("broken", lambda: registry.build_stage("no_such_stage"))
    # Whatever attribute Kedro touches first, the import error comes out (not "no attribute").
    with pytest.raises(ImportError, match="no_such_stage"):
        _ = lazy.nodes
    with pytest.raises(ImportError, match="no_such_stage"):
        Pipeline([]) + lazy  # noqa: B018 - what KedroSession.run does with the registry
