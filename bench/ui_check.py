"""Check the MLflow UI as a researcher sees it, in a real headless Chromium.

    python bench/ui_check.py PROJECT [--experiment NAME] [--out DIR]

PROJECT holds an MLflow store (mlruns/mlflow.db, artifacts under mlruns/artifacts). The script
starts `mlflow server` on 127.0.0.1 at a free port over that store (read-only use: it creates
nothing in PROJECT), opens the experiment's training runs view as `netgeom ui` links it
(`#/experiments/<id>/runs?workflowType=machine_learning&viewStateShareKey=netgeom-compare`) in headless Chromium driven over the
DevTools protocol, and asserts:
- every run of the experiment is listed, each with its logged models (the Models column is not "-"),
  its dataset and its source (the Dataset and Source columns are not "-");
- a run's model-metrics (chart) view starts with the train and eval sections.
It saves two screenshots to --out (runs_table.png, run_charts.png), prints what it saw, and exits
0 when every check passes, 1 when one fails, 2 on bad input. Without Chromium it prints one line
and exits 0 (nothing to check on this machine).

The DevTools websocket is spoken with the standard library only (a text-frame client of ~60
lines), so the check needs no package beyond mlflow itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

SECTIONS_FIRST = ("train", "eval")


# --------------------------------------------------------------------------- a minimal websocket


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: client-masked text frames out, text frames
    in (continuations joined), pings answered, no extensions."""

    def __init__(self, url: str, timeout: float = 30.0):
        parts = urlparse(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.reader = self.sock.makefile("rb")
        status = self.reader.readline()
        if b" 101 " not in status:
            raise ConnectionError(f"websocket handshake refused: {status!r}")
        while self.reader.readline() not in (b"\r\n", b""):
            pass

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytes([0x81])  # FIN + text
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _frame(self) -> tuple[int, bool, bytes]:
        first, second = self._read(2)
        n = second & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if second & 0x80 else None
        data = self._read(n)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        return first & 0x0F, bool(first & 0x80), data

    def _read(self, n: int) -> bytes:
        data = self.reader.read(n)
        if len(data) < n:
            raise ConnectionError("websocket closed")
        return data

    def receive(self) -> str:
        parts: list[bytes] = []
        while True:
            opcode, final, data = self._frame()
            if opcode == 0x9:  # ping -> pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(data)]) + b"\0\0\0\0" + data)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            parts.append(data)
            if final:
                return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class DevTools:
    """Synchronous DevTools protocol calls on one page target."""

    def __init__(self, ws_url: str):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events: list[dict] = []  # notifications received while waiting for replies

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails'].get('text')}: {expression[:80]}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str):
        """Poll `expression` until it returns a truthy value; the value, or TimeoutError naming `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.ws.close()


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def wait_until(check, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {process.returncode}")
        with contextlib.suppress(OSError, ValueError):
            value = check()
            if value:
                return value
        time.sleep(0.3)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    """Stop a process we started, and its children (it leads its own process group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()


@contextlib.contextmanager
def mlflow_server(store_uri: str, artifacts: Path, workdir: Path, log: Path) -> Iterator[int]:
    """`mlflow server` over the store on 127.0.0.1:<free port>; yields the port once /health answers.
    Run from `workdir` so nothing it may create lands in the caller's folders."""
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store_uri, "--default-artifact-root",
        artifacts.resolve().as_uri(), "--no-serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: http_get(port, "/health")[0] == 200, 120, "mlflow server /health", process)
        yield port
    finally:
        stop(process)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@contextlib.contextmanager
def chromium(binary: str, profile: Path, width: int = 1600, height: int = 1000) -> Iterator[DevTools]:
    """Headless Chromium with a DevTools port; yields a connection to a fresh blank page."""
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        active = profile / "DevToolsActivePort"
        port = int(wait_until(lambda: active.exists() and active.read_text().split("\n")[0], 60, "chromium DevTools port", process))
        status, body = http_get(port, "/json/new?about:blank", method="PUT")
        if status != 200:
            raise RuntimeError(f"chromium refused a new page: {status} {body[:200]}")
        tools = DevTools(json.loads(body)["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        try:
            yield tools
        finally:
            tools.close()
    finally:
        stop(process)


# --------------------------------------------------------------------------- what the store holds


def store_uri(project: Path) -> str:
    return f"sqlite:///{(project / 'mlruns' / 'mlflow.db').resolve()}"


def configured_experiment(project: Path) -> str | None:
    """params.yaml's mlflow.experiment, when the project has one."""
    import yaml

    params = project / "params.yaml"
    if not params.exists():
        return None
    loaded = yaml.safe_load(params.read_text()) or {}
    return (loaded.get("mlflow") or {}).get("experiment")


def expected_runs(uri: str, experiment: str | None) -> tuple[str, str, dict[str, dict]]:
    """(experiment id, name, {run id: {"name", "models": [logged model names]}}) straight from the store."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    chosen = [e for e in experiments if e.name == experiment] if experiment else experiments
    if len(chosen) != 1:
        names = ", ".join(sorted(e.name for e in experiments)) or "none"
        wanted = f"experiment {experiment!r} not found" if experiment else "several experiments; pick one with --experiment"
        print(f"ui_check: {wanted} (the store has: {names})", file=sys.stderr)
        raise SystemExit(2)
    found = chosen[0]
    runs = {
        r.info.run_id: {"name": r.info.run_name, "models": [], "trained": "netgeom.run" in r.data.tags}
        for r in client.search_runs([found.experiment_id], max_results=10_000)
    }
    mlflow.set_tracking_uri(uri)
    for model in mlflow.search_logged_models(experiment_ids=[found.experiment_id], output_format="list"):
        if model.source_run_id in runs:
            runs[model.source_run_id]["models"].append(model.name)
    return found.experiment_id, found.name, runs


# --------------------------------------------------------------------------- what the UI shows

# The runs table is an ag-grid: a row's cells share its row-id (the run id) across the pinned and
# scrolling containers; the Models cell links the models it shows and adds "+N" for the rest.
RUNS_TABLE_JS = r"""
(() => {
  const rows = new Map();
  for (const cell of document.querySelectorAll('[row-id] [col-id]')) {
    const id = cell.closest('[row-id]').getAttribute('row-id');
    const row = rows.get(id) || {id, name: null, models: [], modelsText: null, dataset: null, source: null};
    const column = cell.getAttribute('col-id');
    if (column === 'attributes.`Dataset`') row.dataset = cell.innerText.replace(/\s+/g, ' ').trim();
    if (column === 'attributes.`Source`') row.source = cell.innerText.replace(/\s+/g, ' ').trim();
    if (column === 'attributes.`Run Name`') row.name = (cell.querySelector('a') || cell).innerText.trim();
    if (column === 'attributes.`Models`') {
      row.modelsText = cell.innerText.replace(/\s+/g, ' ').trim();
      row.models = [...cell.querySelectorAll('a')].map((a) => a.innerText.trim());
    }
    rows.set(id, row);
  }
  return [...rows.values()];
})()
"""
SECTIONS_JS = r"""
[...document.querySelectorAll('[data-testid="experiment-view-compare-runs-section-header"]')]
  .map((h) => h.innerText.replace(/\s+/g, ' ').replace(/ ?Add chart$/, '').trim())
"""
CLOSE_ASSISTANT_JS = r"""
(() => {
  const close = [...document.querySelectorAll('button[aria-label="Close"]')];
  close.forEach((b) => b.click());
  return close.length;
})()
"""


def section_name(header: str) -> str:
    """'train (4)' -> 'train'."""
    return header.rsplit(" (", 1)[0].strip()


def settled(tools: DevTools, expression: str, timeout: float, ready=bool, quiet: float = 4.0):
    """The value of `expression` once `ready(value)` and unchanged for `quiet` seconds; at the
    timeout, the last value seen (the UI loads its parts by separate requests, and "-" in a cell
    reads the same while loading as when there is nothing)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        value = tools.evaluate(expression)
        if value != last:
            last, since = value, time.monotonic()
        elif ready(value) and time.monotonic() - since >= quiet:
            break
        time.sleep(0.5)
    return last


def read_runs_table(tools: DevTools, url: str, expected: dict[str, dict], timeout: float) -> list[dict]:
    """The runs view's rows (run id, name, Models cell) once the table has settled."""
    tools.navigate(url)
    rows = settled(tools, RUNS_TABLE_JS, timeout, ready=lambda rows: bool(rows) and len(rows) >= len(expected))
    tools.evaluate(CLOSE_ASSISTANT_JS)  # the assistant panel covers a third of the table
    time.sleep(1.0)
    return rows or []


def read_sections(tools: DevTools, url: str, timeout: float) -> list[str]:
    """The section headers of a run's model-metrics view, top to bottom."""
    tools.navigate(url)
    headers = settled(tools, SECTIONS_JS, timeout, quiet=3.0)
    tools.evaluate(CLOSE_ASSISTANT_JS)
    time.sleep(1.0)
    return [section_name(h) for h in headers or []]


# --------------------------------------------------------------------------- the checks


def check_runs(rows: list[dict], expected: dict[str, dict]) -> list[str]:
    """Failures: runs missing from the table, runs whose Models cell is '-' or names another run's models."""
    shown = {row["id"]: row for row in rows}
    problems = [f"run {info['name']} ({run_id[:8]}) is not listed" for run_id, info in expected.items() if run_id not in shown]
    for run_id, info in expected.items():
        row = shown.get(run_id)
        if row is None:
            continue
        if row["name"] != info["name"]:
            problems.append(f"run {info['name']}: listed as {row['name']!r}")
        if not row["models"] and info.get("trained", True):  # the report run has no model, by design
            problems.append(f"run {info['name']}: Models column shows {row['modelsText'] or 'nothing'!r} ({len(info['models'])} logged)")
        elif not set(row["models"]) <= set(info["models"]):
            problems.append(f"run {info['name']}: Models column shows {row['models']}, not among its own {len(info['models'])} models")
        for column in ("dataset", "source"):  # what it was trained on, from which code
            if info.get("trained", True) and row.get(column) in (None, "", "-"):
                problems.append(f"run {info['name']}: {column.capitalize()} column shows {row.get(column)!r}")
    return problems


def check_sections(sections: list[str], first: tuple[str, ...] = SECTIONS_FIRST) -> list[str]:
    """The chart view must open with the train and eval sections (in either order, any case)."""
    leading = {s.lower() for s in sections[: len(first)]}
    if leading != set(first):
        return [f"chart sections start with {sections[: len(first)]}, not {list(first)} (all: {sections})"]
    return []


def run_check(project: Path, experiment: str | None, out: Path, timeout: float) -> int:
    binary = chromium_binary()
    if binary is None:
        print("ui_check: skipped, chromium is not installed (Debian: apt-get install -y chromium)")
        return 0
    if not (project / "mlruns" / "mlflow.db").exists():
        print(f"ui_check: no MLflow store at {project / 'mlruns' / 'mlflow.db'}", file=sys.stderr)
        return 2
    uri = store_uri(project)
    experiment_id, name, expected = expected_runs(uri, experiment or configured_experiment(project))
    if not expected:
        print(f"ui_check: experiment {name!r} has no runs", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    height = max(1000, 360 + 34 * len(expected))  # every row rendered: ag-grid draws only visible rows
    first_run = sorted(expected, key=lambda r: expected[r]["name"])[0]
    with tempfile.TemporaryDirectory(prefix="ui_check-") as scratch:
        scratch = Path(scratch)
        try:
            with mlflow_server(uri, project / "mlruns" / "artifacts", scratch, scratch / "server.log") as port, chromium(binary, scratch / "profile", height=height) as tools:
                # workflowType keeps MLflow 3 in its "Model training" mode (else: the GenAI views)
                base = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}"
                # the comparison view `netgeom ui` prints (sorted by test error, the compared columns)
                rows = read_runs_table(tools, f"{base}/runs?workflowType=machine_learning&viewStateShareKey=netgeom-compare", expected, timeout)
                tools.screenshot(out / "runs_table.png")
                sections = read_sections(tools, f"{base}/runs/{first_run}/model-metrics?workflowType=machine_learning", timeout)
                tools.screenshot(out / "run_charts.png")
        except (RuntimeError, TimeoutError, ConnectionError) as exc:
            log = (scratch / "server.log").read_text(errors="replace")[-2000:] if (scratch / "server.log").exists() else ""
            print(f"ui_check: error: {exc}\n{log}", file=sys.stderr)
            return 1
    problems = check_runs(rows, expected) + check_sections(sections)
    report(name, expected, rows, sections, first_run, out)
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"ui_check: {'FAILED' if problems else 'passed'}: {len(problems)} problem(s); screenshots in {out}")
    return 1 if problems else 0


def report(experiment: str, expected: dict, rows: list[dict], sections: list[str], first_run: str, out: Path) -> None:
    """What the UI showed, for a person deciding on names: rows, their Models cell, section order."""
    shown = {row["id"]: row for row in rows}
    print(f"experiment {experiment!r}: {len(expected)} runs in the store, {len(rows)} rows in the UI")
    for run_id, info in sorted(expected.items(), key=lambda item: item[1]["name"]):
        row = shown.get(run_id, {})
        print(f"  {info['name']:<28} models logged {len(info['models']):>3}  Models cell: {row.get('modelsText', '(not listed)')}")
    print(f"chart sections of {expected[first_run]['name']}: {sections}")
    summary = {"experiment": experiment, "runs": [{**info, "id": run_id, "shown": shown.get(run_id)} for run_id, info in expected.items()], "sections": sections}
    (out / "ui_check.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="project folder holding mlruns/mlflow.db")
    parser.add_argument("--experiment", help="experiment name (default: params.yaml's mlflow.experiment, or the only one)")
    parser.add_argument("--out", type=Path, default=Path("ui_check"), help="folder for the screenshots and ui_check.json")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each view to render")
    args = parser.parse_args(argv)
    return run_check(args.project.resolve(), args.experiment, args.out, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
