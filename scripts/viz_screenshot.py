"""Serve kedro-viz on 127.0.0.1, check the graph it serves, and screenshot it headlessly.

    python scripts/viz_screenshot.py [--out docs/images/kedro_viz_default.png] [--pipeline ID]

The server is started as a child process and stopped by its own process id.  The API check
(every pipeline present, every dataset on a layer, layers in order) needs nothing else; the
screenshot needs Chromium (``chromium``/``chromium-browser``/``google-chrome`` on PATH) and is
skipped with a message when there is none.  Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LAYERS = ["raw", "intermediate", "primary", "feature", "model_input", "models", "model_output",
          "reporting"]


def free_port() -> int:
    """A free port below 49152: kedro-viz refuses the ephemeral range the OS would pick."""
    for port in random.sample(range(20000, 49000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 20000–49000 on 127.0.0.1")


def start_viz(port: int, project: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "kedro", "viz", "run", "--no-browser", "--host",
             "127.0.0.1", "--port", str(port)], cwd=project, env=env, stdout=handle,
            stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Stop the server and its children (its own process group, by its pid)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def fetch_graph(port: int, proc: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kedro viz exited with status {proc.returncode}; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/main", timeout=5) as r:
                return json.load(r)
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"kedro viz did not answer on port {port} within {timeout} s")


def check_graph(graph: dict, pipelines: set[str]) -> list[str]:
    """Problems with the served graph (empty when it is what users should see)."""
    problems = []
    served = {p["id"] for p in graph["pipelines"]}
    if not pipelines <= served:
        problems.append(f"pipelines missing from kedro-viz: {sorted(pipelines - served)}")
    if graph["layers"] != LAYERS:
        problems.append(f"layers {graph['layers']} != {LAYERS} (a layer cycle empties the list)")
    unlayered = [n["name"] for n in graph["nodes"] if n["type"] == "data" and not n.get("layer")]
    if unlayered:
        problems.append(f"datasets without a layer: {unlayered}")
    return problems


def screenshot(port: int, pipeline: str, out: Path) -> Path | None:
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1800,1100", "--virtual-time-budget=20000", f"--screenshot={out}",
         f"http://127.0.0.1:{port}/?pipeline_id={pipeline}"],
        check=True, capture_output=True, timeout=180)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/kedro_viz_default.png")
    parser.add_argument("--pipeline", default="__default__")
    parser.add_argument("--project", type=Path, default=ROOT)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from ups_kedro.pipeline_registry import DEFAULT_CHAIN

    port = free_port()
    log = Path(tempfile.mkdtemp()) / "kedro_viz.log"
    proc = start_viz(port, args.project, log)
    try:
        graph = fetch_graph(port, proc)
        problems = check_graph(graph, {"__default__", *DEFAULT_CHAIN, "promotion", "inference"})
        shot = screenshot(port, args.pipeline, args.out)
    finally:
        stop(proc)
    print(f"kedro-viz log: {log}")
    for p in problems:
        print(f"PROBLEM: {p}")
    n_data = sum(n["type"] == "data" for n in graph["nodes"])
    print(f"kedro-viz: {len(graph['pipelines'])} pipelines, {n_data} datasets on layers "
          f"{graph['layers']}")
    print(f"screenshot: {shot}" if shot else "screenshot skipped: no Chromium on PATH")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
