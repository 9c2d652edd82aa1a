"""The run launcher of the instance: Dagster's default one, plus a run-worker health check.

Run monitoring (``run_monitoring`` in ``dagster.yaml``, done by the daemon that ``make ui``
starts) marks a run failed when its launcher says the run's worker process is gone, and then
frees the pool slots the run held (``free_slots_after_run_end_seconds``). Dagster's
``DefaultRunLauncher`` cannot tell, so a run whose process was killed (``kill -9``, the OOM
killer, a closed terminal) would stay STARTED and hold its ``dask`` slot forever.

:class:`LocalRunLauncher` answers from the process id each run worker writes into the run's
event log when it starts ("Started process for run (pid: ...)", "Executing steps ... (pid:
...)"), for runs launched from the UI, by schedules and backfills, or from the command line
(``dagster asset materialize``) alike. It judges processes on its own machine, so it suits
the single-machine deployment this project ships (SQLite under ``DAGSTER_HOME``); a deployment
whose runs execute on other hosts needs a launcher of that platform (Docker, Kubernetes),
which checks health its own way.
"""

from __future__ import annotations

from typing import Any, Self

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._serdes import ConfigurableClassData

#: Seconds a process may have started after its pid was logged and still be the run's worker
#: (the event is written by the worker itself, after it started). A later start time means the
#: pid was reused by another process.
PID_REUSE_SLACK_S = 5.0


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """Return the pid of a run's worker process and when it was logged, or None if not yet.

    Parameters
    ----------
    instance : dagster.DagsterInstance
        The instance holding the run's event log.
    run_id : str
        The run.

    Returns
    -------
    tuple of int and float, or None
        ``(pid, timestamp)`` of the latest run-level engine event that names a pid (step
        workers log theirs in other events), None before the worker logged one.
    """
    found = None
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or event.step_key is not None:
            continue
        data = event.engine_event_data
        pid = data.metadata.get("pid") if data is not None and data.metadata else None
        if pid is not None and str(pid.value).isdigit():
            found = (int(str(pid.value)), entry.timestamp)
    return found


def process_alive(pid: int, logged_at: float) -> bool:
    """Tell whether process ``pid`` runs and is the one that logged itself at ``logged_at``.

    Parameters
    ----------
    pid : int
        Process id.
    logged_at : float
        When the run worker logged its pid (seconds since the epoch).

    Returns
    -------
    bool
        False if no such process exists, it is a zombie, or it started after ``logged_at``
        (the pid now belongs to another process).
    """
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= logged_at + PID_REUSE_SLACK_S
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # exists, owned by someone else: assume it is the worker
        return True


class LocalRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` that tells run monitoring whether a run's worker is alive.

    Configure it in ``dagster.yaml`` as ``run_launcher: {module: entropice_dagster.run_launcher,
    class: LocalRunLauncher}``, with ``run_monitoring.enabled: true``.
    """

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Any) -> Self:
        """Build the launcher from ``dagster.yaml`` (it takes no settings)."""
        return cls(inst_data=inst_data)

    @property
    def supports_check_run_worker_health(self) -> bool:
        """Run monitoring asks :meth:`check_run_worker_health` about every STARTED run."""
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        """Report whether the run's worker process is alive on this machine.

        Parameters
        ----------
        run : dagster.DagsterRun
            A STARTED run.

        Returns
        -------
        CheckRunHealthResult
            RUNNING while the process lives (or before it logged its pid), FAILED once it is
            gone; run monitoring then marks the run failed and its pool slots are freed.
        """
        found = run_worker_pid(self._instance, run.run_id)
        if found is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker pid logged yet")
        pid, logged_at = found
        if process_alive(pid, logged_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run worker process (pid {pid}) is gone: it was killed or crashed without "
            "reporting an end to the run",
        )
