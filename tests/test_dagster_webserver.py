"""The UI's server loads workspace.yaml and lists the assets (what `make ui` shows)."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSET_KEYS = "{ assetNodes { assetKey { path } } }"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _asset_keys(port: int, server: subprocess.Popen, log: Path, timeout_s: float) -> set[str]:
    """Poll until the server answers with a loaded code location, or fail with its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {server.returncode}:\n{log.read_text()}")
        try:
            nodes = _graphql(port, ASSET_KEYS)["data"]["assetNodes"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            nodes = []
        if nodes:
            return {"/".join(node["assetKey"]["path"]) for node in nodes}
        time.sleep(1)
    pytest.fail(f"no assets from dagster-webserver within {timeout_s} s:\n{log.read_text()}")


@pytest.mark.slow
def test_webserver_lists_the_assets(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = os.environ | {"DAGSTER_HOME": str(home), "ENTROPICE_DATA_DIR": str(tmp_path / "data")}
    port = _free_port()
    log = tmp_path / "webserver.log"
    webserver = Path(sys.executable).with_name("dagster-webserver")
    with log.open("w") as out:
        server = subprocess.Popen(
            [webserver, "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server goes with it
        )
        try:
            assert {"watermask", "grid_cells"} <= _asset_keys(port, server, log, 120)
        finally:
            server.terminate()
            try:
                returncode = server.wait(timeout=30)
            finally:
                # the code server it started should be gone already; make sure it is
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
    assert returncode == 0, log.read_text()  # SIGTERM is a clean shutdown
