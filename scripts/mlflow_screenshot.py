"""Serve the MLflow UI on 127.0.0.1 over a tracking store and screenshot three views headlessly.

    python scripts/mlflow_screenshot.py [--db mlflow.db] [--out-dir docs/images] [--stage operator]

1. ``mlflow_stage_compare.png``: MLflow's *Compare* of the two latest runs of one stage
   (experiment ``ups_kedro_stages``): params and metrics line up stage against stage.
2. ``mlflow_runs.png``: the ``ups_kedro`` experiment's run list (names and descriptions).
3. ``mlflow_registry.png``: the registered surrogate (``ups_kedro_surrogate``), if any.

The server runs in its own process group and is stopped as a group.  Needs Chromium (see
``viz_screenshot.py``); exits 1 with a message without it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import viz_screenshot as viz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Before the page's scripts: MLflow 3 opens in its GenAI mode with an assistant panel; this is
# the UI's own "Model training" switch (top left) and a closed assistant, as a user leaves them.
_UI_SETUP = """
localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""
# After load: dismiss one-time pop-ups; say which sidebar entries the page offers.
_UI_AFTER = """(async () => {
  for (const b of [...document.querySelectorAll('button')])
    if (/^(Got it|Dismiss)$/.test((b.innerText || '').trim())) b.click();
  await new Promise(r => setTimeout(r, 1000));
  return [...document.querySelectorAll('a')].map(a => (a.innerText || '').trim())
    .filter(t => t && t.length < 30);
})()"""


def start_mlflow(port: int, db: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{db.resolve()}"],
            env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def wait_health(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"mlflow server did not answer on port {port} within {timeout} s")


def search(port: int, experiment: str, filter_string: str = "", n: int = 2) -> list[dict]:
    def post(path: str, body: dict) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/{path}",
                                     json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    exp = urllib.parse.quote(experiment)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/"
                                f"get-by-name?experiment_name={exp}", timeout=30) as r:
        eid = json.load(r)["experiment"]["experiment_id"]
    runs = post("runs/search", {"experiment_ids": [eid], "filter": filter_string,
                                "max_results": n, "order_by": ["attributes.start_time DESC"]})
    return [{"experiment_id": eid, **run["info"]} for run in runs.get("runs", [])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=ROOT / "mlflow.db")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs/images")
    parser.add_argument("--stage", default="operator")
    args = parser.parse_args()
    if not any(viz.shutil.which(b) for b in viz.BROWSERS):
        print("no Chromium on PATH: nothing to screenshot")
        return 1
    port = viz.free_port()
    log = Path(viz.tempfile.mkdtemp()) / "mlflow_server.log"
    proc = start_mlflow(port, args.db, log)
    shots = []
    try:
        wait_health(port, proc)
        base = f"http://127.0.0.1:{port}/#"
        stage_runs = search(port, "ups_kedro_stages", f"tags.`ups.stage` = '{args.stage}'")
        if len(stage_runs) == 2:
            ids = json.dumps([r["run_id"] for r in stage_runs])
            eids = json.dumps([stage_runs[0]["experiment_id"]])
            url = (f"{base}/compare-runs?runs={urllib.parse.quote(ids)}"
                   f"&experiments={urllib.parse.quote(eids)}")
            shots.append(viz.browser_screenshot(url, args.out_dir / "mlflow_stage_compare.png",
                                                setup=_UI_SETUP, after_load=_UI_AFTER,
                                                size=(1600, 1900)))
        runs = search(port, "ups_kedro", n=1)
        if runs:
            shots.append(viz.browser_screenshot(
                f"{base}/experiments/{runs[0]['experiment_id']}/runs",
                args.out_dir / "mlflow_runs.png", setup=_UI_SETUP, after_load=_UI_AFTER))
        shots.append(viz.browser_screenshot(f"{base}/models/ups_kedro_surrogate",
                                            args.out_dir / "mlflow_registry.png",
                                            setup=_UI_SETUP, after_load=_UI_AFTER))
    finally:
        viz.stop(proc)
    for shot in shots:
        print(f"screenshot: {shot['path']} (sidebar: {shot['after_load']})")
    print(f"mlflow server log: {log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
