"""A killed run does not hold its pool slot forever: with the instance settings of dagster.yaml,
run monitoring marks a run whose process died as failed and frees its ``dask`` slot.

A real run (``dagster asset materialize`` in a subprocess, against a scratch instance) takes the
slot and is killed with SIGKILL; the daemon's monitoring and slot-freeing iterations then run
in this process, as the daemon would run them every ``poll_interval_seconds``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._daemon.monitoring import (
    execute_concurrency_slots_iteration,
    execute_run_monitoring_iteration,
)

from entropice_dagster.run_launcher import LocalRunLauncher, run_worker_pid

REPO = Path(__file__).resolve().parents[1]
#: Generous bounds for a loaded machine (the quiet run takes a few seconds).
START_DEADLINE_S = 240.0
FREE_DEADLINE_S = 120.0

DEFS = """
import os
import time
from pathlib import Path

import dagster as dg


@dg.asset(pool="dask")
def held() -> None:
    Path(os.environ["HELD_MARKER"]).write_text(str(os.getpid()))
    time.sleep(600)


defs = dg.Definitions(assets=[held])
"""


def _wait(condition: Callable[[], bool], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what}")
        time.sleep(0.5)


def test_the_instance_settings_enable_bounded_run_monitoring() -> None:
    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert settings["run_launcher"] == {
        "module": "entropice_dagster.run_launcher",
        "class": "LocalRunLauncher",
    }
    monitoring = settings["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["max_resume_run_attempts"] == 0  # the default launcher cannot resume
    # a dead run's slot is free within poll + free delay: bounded, a few minutes at most
    bound = monitoring["poll_interval_seconds"] + monitoring["free_slots_after_run_end_seconds"]
    assert bound <= 300
    packaged = (REPO / "entropice_dagster" / "dagster.yaml").read_text()
    assert (REPO / "dagster.yaml").read_text() == packaged


@pytest.mark.slow
def test_a_killed_run_is_marked_failed_and_its_pool_slot_freed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    settings = yaml.safe_load((REPO / "dagster.yaml").read_text())
    settings["run_monitoring"]["free_slots_after_run_end_seconds"] = 1  # not a minute, in a test
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    (tmp_path / "defs.py").write_text(DEFS)
    marker = tmp_path / "started"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "HELD_MARKER": str(marker),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "--select", "held"]
    run = subprocess.Popen(
        [*command, "-f", str(tmp_path / "defs.py")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the step worker too
    )
    instance = dg.DagsterInstance.from_config(str(home))
    logger = logging.getLogger("test_run_monitoring")
    # The daemon's iterations, with the parts of its workspace context they use.
    context = SimpleNamespace(instance=instance, create_request_context=lambda: None)

    def claimed() -> int:
        return len(instance.event_log_storage.get_concurrency_info("dask").claimed_slots)

    def status() -> DagsterRunStatus:
        (record,) = instance.get_run_records()
        return record.dagster_run.status

    try:
        assert isinstance(instance.run_launcher, LocalRunLauncher)
        _wait(lambda: marker.exists() and claimed() == 1, START_DEADLINE_S, "the run's slot")
        (record,) = instance.get_run_records()
        assert record.dagster_run.status == DagsterRunStatus.STARTED
        found = run_worker_pid(instance, record.dagster_run.run_id)
        assert found is not None and found[0] == run.pid
        # alive: monitoring leaves it alone
        list(execute_run_monitoring_iteration(context, logger))  # type: ignore[arg-type]
        assert status() == DagsterRunStatus.STARTED and claimed() == 1
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=60)
    try:
        # the run still claims its slot until monitoring finds the dead worker
        assert status() == DagsterRunStatus.STARTED and claimed() == 1
        list(execute_run_monitoring_iteration(context, logger))  # type: ignore[arg-type]
        assert status() == DagsterRunStatus.FAILURE
        failure = instance.all_logs(
            record.dagster_run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        )
        assert f"run worker process (pid {run.pid}) is gone" in failure[-1].message

        def freed() -> bool:
            list(execute_concurrency_slots_iteration(context, logger))  # type: ignore[arg-type]
            return claimed() == 0

        _wait(freed, FREE_DEADLINE_S, "the dead run's slot to be freed")
    finally:
        instance.dispose()
