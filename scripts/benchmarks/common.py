"""Shared pieces of the benchmark suite: project copies, measured child processes, machine info.

Everything that trains runs in a throw-away copy of the project (``conf/`` + ``pyproject.toml``
+ a ``data/`` folder of its own + its own SQLite MLflow store), like ``tests/conftest.py``'s
``project_copy``: the project's own checkpoints and runs are never touched.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
PYTHON = sys.executable
QUIET_ENV = {"KEDRO_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
             "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}
os.environ.update({k: v for k, v in QUIET_ENV.items() if k not in os.environ})


# ------------------------------------------------------------------------------------------
# project copies


@dataclass
class Project:
    """A temporary project copy: run ``kedro`` or a worker inside it."""

    root: Path
    env: str = "base"  # kedro environment ("smoke" in quick mode)
    log: Path | None = None

    @property
    def data_dir(self) -> Path:
        # conf/<env>/globals.yml: data_dir is data/<env> in every environment but base
        return self.root / ("data" if self.env == "base" else f"data/{self.env}")

    def child_env(self) -> dict[str, str]:
        return {**os.environ, **QUIET_ENV,
                "MLFLOW_TRACKING_URI": f"sqlite:///{self.root / 'mlflow.db'}",
                "UPS_MLFLOW_ARTIFACT_ROOT": str(self.root / "mlartifacts"),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS),
                                                            os.environ.get("PYTHONPATH")]))}

    def clear_state(self) -> None:
        """Drop resumable training state, so every timed run trains from epoch 1."""
        shutil.rmtree(self.data_dir / "06_models" / "state", ignore_errors=True)


def make_project(parent: Path, name: str, env: str = "base") -> Project:
    """conf/ and pyproject.toml copied under ``parent/name`` (conf/local left empty)."""
    root = parent / name
    root.mkdir(parents=True)
    shutil.copytree(ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    (root / "README.md").write_text("benchmark copy\n")
    (root / "src").mkdir()  # bootstrap_project wants src/; the package is the installed one
    return Project(root, env, log=parent / f"{name}.log")


def copy_data(project: Project, source: Path) -> None:
    """Copy a data folder into the project (no training state; large raw files linked).

    Raw HDF5 files are only read by the sections (``data_processing`` is not re-run in this
    copy), so they are symbolic links; everything else is copied.
    """
    dest = project.data_dir
    for item in source.iterdir():
        if item.name in ("smoke", "08_reporting", "07_model_output"):
            continue
        if item.name == "01_raw":
            (dest / "01_raw").mkdir(parents=True, exist_ok=True)
            for f in item.iterdir():
                target = dest / "01_raw" / f.name
                if f.suffix in (".h5", ".hdf5"):
                    target.symlink_to(f.resolve())
                else:
                    shutil.copy2(f, target)
            continue
        ignore = shutil.ignore_patterns("state", ".*benchmark-backup")
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=ignore)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, dest / item.name)
    project.clear_state()


# ------------------------------------------------------------------------------------------
# measured child processes


@dataclass
class ChildResult:
    wall_sec: float
    peak_rss_mb: float  # the child's ru_maxrss (VmHWM: anonymous + file-backed pages)
    peak_anon_mb: float  # highest sampled RssAnon: the memory the process itself allocated
    peak_file_mb: float  # highest sampled RssFile: mapped file pages (page cache, reclaimable)
    stdout: str = ""
    extra: dict = field(default_factory=dict)


def _status_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


class _Sampler(threading.Thread):
    """Polls /proc/<pid>/status for the highest RssAnon / RssFile seen."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_anon_kb = self.peak_file_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            s = _status_kb(self.pid)
            self.peak_anon_kb = max(self.peak_anon_kb, s.get("RssAnon", 0))
            self.peak_file_kb = max(self.peak_file_kb, s.get("RssFile", 0) + s.get("RssShmem", 0))
            self.done.wait(self.interval)


def run_child(cmd: list[str], project: Project, what: str) -> ChildResult:
    """Run ``cmd`` in the project copy; wall time, peak RSS (wait4) and sampled anon/file RSS.

    stdout is captured (workers print one JSON line last); stderr goes to the copy's log file.
    A failure raises with the log's tail.
    """
    log = open(project.log or os.devnull, "a")  # noqa: SIM115 - closed below
    log.write(f"\n===== {what}: {' '.join(cmd)}\n")
    log.flush()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=project.root, env=project.child_env(),
                            stdout=subprocess.PIPE, stderr=log, text=True)
    sampler = _Sampler(proc.pid)
    sampler.start()
    reader = threading.Thread(target=lambda: setattr(proc, "_out", proc.stdout.read()),
                              daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    reader.join()
    log.close()
    out = getattr(proc, "_out", "")
    if proc.returncode != 0:
        tail = Path(project.log).read_text()[-3000:] if project.log else ""
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return ChildResult(wall, usage.ru_maxrss / 1024, sampler.peak_anon_kb / 1024,
                       sampler.peak_file_kb / 1024, out)


def kedro_run(project: Project, pipeline: str, params: dict | None = None,
              nodes: str | None = None) -> ChildResult:
    """``kedro run --pipeline <pipeline>`` in the copy (kedro-mlflow active)."""
    cmd = [PYTHON, "-m", "kedro", "run", "--pipeline", pipeline, "--env", project.env]
    if nodes:
        cmd += ["--nodes", nodes]
    if params:
        cmd += ["--params", ",".join(f"{k}={v}" for k, v in params.items())]
    return run_child(cmd, project, f"kedro run {pipeline}")


def worker(project: Project, task: str, **kwargs) -> tuple[dict, ChildResult]:
    """Run ``benchmarks.worker <task>`` in the copy; its JSON result and the child's figures."""
    cmd = [PYTHON, "-m", "benchmarks.worker", task, "--env", project.env,
           "--args", json.dumps(kwargs)]
    child = run_child(cmd, project, f"worker {task}")
    return json.loads(child.stdout.strip().splitlines()[-1]), child


# ------------------------------------------------------------------------------------------
# machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform()}
