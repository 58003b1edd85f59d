"""Serve kedro-viz on 127.0.0.1, check the graph it serves, and screenshot it headlessly.

    python scripts/viz_screenshot.py [--out docs/images/kedro_viz_operator.png] [--pipeline ID]

The server runs in its own process group and is stopped as a group (``kedro viz run`` starts a
server child that outlives its parent).  The API check (every pipeline present, every dataset on
a layer, layer bands in data-flow order in *every* pipeline's view) needs nothing else.  The
screenshot needs Chromium (``chromium``/``chromium-browser``/``google-chrome`` on PATH; skipped
with a message when there is none) and is driven through the DevTools protocol: the page opens
with ``?pid=<pipeline>``, the feature tour and the version banner are dismissed, the view is
zoomed to fit, and the pipeline the page actually shows is read back and must be the one asked
for.  Other hosts are unreachable from the browser (it would fetch fonts and a version check).
Exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
#: Layer names are the data folders' names: numbered, so that kedro-viz (which orders layers
#: that have no data-flow path between them alphabetically) draws the bands in this order in
#: every pipeline's view, not only in the full graph.
LAYERS = ["01_raw", "02_intermediate", "03_primary", "04_feature", "05_model_input", "06_models",
          "07_model_output", "08_reporting"]
WINDOW = (1600, 1000)


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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group.

    The whole group, even when the parent has already exited: ``kedro viz run``'s server child
    would otherwise keep serving the port.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if _group_alive(proc.pid):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + timeout
        while (proc.poll() is None or _group_alive(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc.poll() is not None and not _group_alive(proc.pid):
            return
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


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.load(r)


def check_graph(graph: dict, pipelines: set[str], port: int | None = None) -> list[str]:
    """Problems with the served graph (empty when it is what users should see).

    With ``port``, every pipeline's own view (``/api/pipelines/<id>``) is checked too: its layer
    bands must come in :data:`LAYERS` order.
    """
    problems = []
    served = {p["id"] for p in graph["pipelines"]}
    if not pipelines <= served:
        problems.append(f"pipelines missing from kedro-viz: {sorted(pipelines - served)}")
    if graph["layers"] != LAYERS:
        problems.append(f"layers {graph['layers']} != {LAYERS} (a layer cycle empties the list)")
    unlayered = [n["name"] for n in graph["nodes"] if n["type"] == "data" and not n.get("layer")]
    if unlayered:
        problems.append(f"datasets without a layer: {unlayered}")
    for pid in sorted(served) if port is not None else ():
        view = _get(port, f"/api/pipelines/{pid}")
        used = {n.get("layer") for n in view["nodes"] if pid in n.get("pipelines", [])}
        bands = [layer for layer in view["layers"] if layer in used]  # the bands drawn
        if bands != sorted(bands, key=LAYERS.index):
            problems.append(f"pipeline {pid}: layer bands {bands} out of data-flow order")
    return problems


# Injected into the page: no feature tour, no "Kedro-Viz None is here!" banner (the offline
# version check), light theme, no minimap.
_PAGE_SETUP = """
localStorage.setItem('KedroViz', JSON.stringify(Object.assign(
  JSON.parse(localStorage.getItem('KedroViz') || '{}'),
  {showFeatureHints: false, theme: 'light', visible: {graph: true, miniMap: false,
   sidebar: true, code: false, slicing: true, traceback: false}})));
document.addEventListener('DOMContentLoaded', () => {
  const style = document.createElement('style');
  style.textContent = '.feature-hints, .feature-hints__highlightDot, .update-reminder-unexpanded,'
    + ' .update-reminder-expanded, .update-reminder-dot { display: none !important; }';
  document.head.appendChild(style);
});
"""
# Read back after load: the pipeline the page shows and the node labels it draws.
_PAGE_STATE = """JSON.stringify({
  active: JSON.parse(localStorage.getItem('KedroViz') || '{}').pipeline?.active ?? null,
  selector: document.querySelector('.pipeline-list__select, [class*="pipeline-list"] input,'
    + ' [class*="dropdown__label"]')?.innerText ?? null,
  labels: [...document.querySelectorAll('.pipeline-node__text')].map(e => e.textContent),
  layers: [...document.querySelectorAll('.pipeline-layer-name')].map(e => e.textContent)})"""
_ZOOM_TO_FIT = """(() => { const b = [...document.querySelectorAll('button, [role=button]')]
  .find(e => /reset zoom/i.test(e.getAttribute('aria-label') || e.innerText || ''));
  if (b) b.click(); return !!b; })()"""


class _Tab:
    """A minimal DevTools-protocol client for one page (JSON over a websocket)."""

    def __init__(self, ws) -> None:
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        return result["result"].get("value")


async def _capture(debug_port: int, url: str, out: Path, settle_s: float, setup: str,
                   after_load: str, state: str, size: tuple[int, int]) -> dict:
    import websockets

    tabs = _get(debug_port, "/json")
    ws_url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
    async with websockets.connect(ws_url, max_size=64 * 2**20) as ws:
        tab = _Tab(ws)
        await tab.call("Page.enable")
        await tab.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1],
                       deviceScaleFactor=1, mobile=False)
        if setup:
            await tab.call("Page.addScriptToEvaluateOnNewDocument", source=setup)
        await tab.call("Page.navigate", url=url)
        await asyncio.sleep(settle_s)
        acted = await tab.js(after_load) if after_load else None
        await asyncio.sleep(1.5)
        shown = json.loads(await tab.js(state)) if state else {}
        shot = await tab.call("Page.captureScreenshot", format="png")
    out.write_bytes(base64.b64decode(shot["data"]))
    return {**shown, "after_load": acted, "path": str(out)}


def browser_screenshot(url: str, out: Path, settle_s: float = 10.0, setup: str = "",
                       after_load: str = "", state: str = "",
                       size: tuple[int, int] = WINDOW) -> dict | None:
    """Screenshot ``url`` in headless Chromium (``size`` pixels) through the DevTools
    protocol: ``setup`` runs before the page's own scripts, ``after_load`` once it settled,
    ``state`` (a JS expression giving JSON) is read back into the returned dict with ``path``.
    None when no Chromium is on PATH."""
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    debug_port = free_port()
    profile = tempfile.mkdtemp(prefix="viz_chromium_")
    proc = subprocess.Popen(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--remote-debugging-port={debug_port}", f"--user-data-dir={profile}",
         f"--window-size={WINDOW[0]},{WINDOW[1]}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(debug_port, "/json/version")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{browser} did not open its DevTools port") from None
                time.sleep(0.3)
        return asyncio.run(_capture(debug_port, url, out, settle_s, setup, after_load, state,
                                    size))
    finally:
        stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(port: int, pipeline: str, out: Path, settle_s: float = 10.0) -> dict | None:
    """Screenshot kedro-viz at ``?pid=<pipeline>`` (expanded, tour and banner dismissed, zoomed
    to fit); returns what the page showed (``active`` pipeline, node ``labels``, ``layers``
    bands, ``path``), or None without Chromium."""
    return browser_screenshot(
        f"http://127.0.0.1:{port}/?pid={pipeline}&expandAllPipelines=true", out, settle_s,
        _PAGE_SETUP, _ZOOM_TO_FIT, _PAGE_STATE)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs/images/kedro_viz_operator.png")
    parser.add_argument("--pipeline", default="operator")
    parser.add_argument("--project", type=Path, default=ROOT)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from ups_kedro.pipeline_registry import DEFAULT_CHAIN

    port = free_port()
    log = Path(tempfile.mkdtemp()) / "kedro_viz.log"
    proc = start_viz(port, args.project, log)
    try:
        graph = fetch_graph(port, proc)
        problems = check_graph(graph, {"__default__", *DEFAULT_CHAIN, "promotion", "inference"},
                               port)
        shot = screenshot(port, args.pipeline, args.out)
        if shot and shot["active"] != args.pipeline:
            problems.append(f"asked for pipeline {args.pipeline}, the page shows {shot['active']}")
    finally:
        stop(proc)
    if not port_is_free(port):
        problems.append(f"port {port} still served after stopping kedro viz")
    print(f"kedro-viz log: {log}")
    for p in problems:
        print(f"PROBLEM: {p}")
    n_data = sum(n["type"] == "data" for n in graph["nodes"])
    print(f"kedro-viz: {len(graph['pipelines'])} pipelines, {n_data} datasets on layers "
          f"{graph['layers']}")
    print(f"screenshot: {shot['path']} (pipeline {shot['active']}, {len(shot['labels'])} "
          f"nodes, layers {shot['layers']})" if shot else
          "screenshot skipped: no Chromium on PATH")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
