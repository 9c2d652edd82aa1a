"""The Dagster deployment as `make ui` runs it, for the tests that operate it from outside:
``dagster-webserver`` and ``dagster-daemon`` as subprocesses on a loopback port, over a scratch
instance (``DAGSTER_HOME``) and data directory, with helpers to talk to its GraphQL API.

No wall-clock asserts: every wait polls with a generous deadline (the machine may be shared)
and fails with the servers' logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Loading the code location takes 5 s on a quiet machine, several times that under load.
LOAD_S = 240.0
#: A run of a light asset (process start, definitions import, step), queued behind others.
RUN_S = 420.0
SUCCESS = "SUCCESS"
FAILED = {"FAILURE", "CANCELED"}

RUNS = """{ runsOrError { ... on Runs { results {
  runId status tags { key value } assetSelection { path } } } } }"""
MATERIALISATIONS = """query ($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
  ... on Asset { assetMaterializations { partition runId } } } }"""
BACKFILLS = """{ partitionBackfillsOrError { ... on PartitionBackfills {
  results { id status partitionNames } } } }"""
BACKFILL = """query ($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { id status partitionNames } ... on PythonError { message } } }"""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class DagsterStack:
    """A running webserver and daemon: where they listen, their instance and logs."""

    port: int
    home: Path
    data_dir: Path
    logs: tuple[Path, ...]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-6000:]}" for log in self.logs)

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a query; its ``data`` (errors fail the test)."""
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the instance, newest first, with its partition under ``partition``."""
        results = self.graphql(RUNS)["runsOrError"]["results"]
        for run in results:
            tags = {tag["key"]: tag["value"] for tag in run["tags"]}
            run["partition"] = tags.get("dagster/partition")
            run["backfill"] = tags.get("dagster/backfill")
        return results

    def materialised_partitions(self, asset: str) -> dict[str | None, str]:
        """Partition -> run id of each materialisation of ``asset`` (the latest one wins)."""
        found = self.graphql(MATERIALISATIONS, {"path": [asset]})["assetOrError"]
        events = found.get("assetMaterializations", [])
        return {event["partition"]: event["runId"] for event in reversed(events)}

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        """One backfill: id, status, partitionNames."""
        return self.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]

    def backfills(self) -> list[dict[str, Any]]:
        """Every backfill, newest first."""
        return self.graphql(BACKFILLS)["partitionBackfillsOrError"]["results"]

    def wait_for_backfill(self, backfill_id: str) -> list[dict[str, Any]]:
        """Wait until the daemon has completed the backfill; its runs (all successful)."""
        done = {"COMPLETED", "COMPLETED_SUCCESS"}
        failed = {"FAILED", "CANCELED", "COMPLETED_FAILED", "FAILING"}

        def completed() -> bool:
            status = self.backfill(backfill_id)["status"]
            if status in failed:
                pytest.fail(f"backfill {backfill_id}: {status}\n{self.log_text()}")
            return status in done

        self.wait_for(f"backfill {backfill_id} to complete", completed)
        runs = [run for run in self.runs() if run["backfill"] == backfill_id]
        assert runs, "a completed backfill without runs"
        assert {run["status"] for run in runs} == {SUCCESS}, runs
        return runs

    def wait_for(self, what: str, done: Callable[[], Any], timeout_s: float = RUN_S) -> Any:
        """Poll ``done()`` every 2 s until it returns something truthy; fail with the logs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = done()
            if value:
                return value
            time.sleep(2)
        pytest.fail(f"{what}: not within {timeout_s} s\n{self.log_text()}")

    def wait_for_runs(self, selected: Callable[[dict[str, Any]], bool], count: int) -> list:
        """Wait until ``count`` runs match ``selected`` and all have ended; fail on a failed one."""

        def ended() -> list[dict[str, Any]] | None:
            runs = [run for run in self.runs() if selected(run)]
            failed = [run for run in runs if run["status"] in FAILED]
            if failed:
                pytest.fail(f"runs failed: {failed}\n{self.log_text()}")
            if len(runs) >= count and all(run["status"] == SUCCESS for run in runs):
                return runs
            return None

        return self.wait_for(f"{count} successful runs", ended)


def _wait_loaded(stack: DagsterStack, server: subprocess.Popen) -> None:
    """Poll until the webserver answers with the code location's assets."""
    deadline = time.monotonic() + LOAD_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {server.returncode}\n{stack.log_text()}")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            nodes = stack.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]
            if nodes:
                return
        time.sleep(1)
    pytest.fail(f"no assets from dagster-webserver within {LOAD_S} s\n{stack.log_text()}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group (the server, its code server, run processes), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@contextlib.contextmanager
def dagster_stack(
    root: Path,
    instance_yaml: Path,
    env: dict[str, str] | None = None,
    setup: Callable[[Path, Path], None] | None = None,
) -> Iterator[DagsterStack]:
    """Run ``dagster-daemon`` and ``dagster-webserver`` (workspace.yaml, the code under test)
    over ``root/home`` (``instance_yaml`` as its dagster.yaml) and the data dir ``root/data``,
    until the block ends; yields once the webserver lists the assets. ``setup(home, data_dir)``
    runs before the servers start."""
    home, data_dir = root / "home", root / "data"
    home.mkdir()
    data_dir.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml.read_text())
    if setup is not None:
        setup(home, data_dir)
    environment = os.environ | (env or {})
    environment |= {
        "DAGSTER_HOME": str(home),
        "ENTROPICE_DATA_DIR": str(data_dir),
        # the automation sensor stopped: the instance runs only what the test launches
        "ENTROPICE_AUTOMATION": "off",
        # run processes import the code under test, whichever checkout installed the package
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    port = free_port()
    bin_dir = Path(sys.executable).parent
    commands = {
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        "webserver": [
            str(bin_dir / "dagster-webserver"),
            *("-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"),
        ],
    }
    logs = {name: root / f"{name}.log" for name in commands}
    stack = DagsterStack(port, home, data_dir, tuple(logs.values()))
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name, command in commands.items():
            with logs[name].open("w") as out:
                processes[name] = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=environment,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: children go with it
                )
        _wait_loaded(stack, processes["webserver"])
        yield stack
    finally:
        for process in processes.values():
            _stop(process)
