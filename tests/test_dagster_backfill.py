"""A backfill of every grid level from the command line queues one run per partition."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from entropice_core.config import DEFAULT_GRID_LEVELS

REPO = Path(__file__).resolve().parents[1]


def test_cli_backfill_queues_all_nine_grid_levels(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = os.environ | {"DAGSTER_HOME": str(home), "ENTROPICE_DATA_DIR": str(tmp_path / "data")}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [
            str(dagster),
            "job",
            "backfill",
            "-j",
            "per_cell_assets",
            "--all",
            "--noprompt",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        (backfill,) = instance.get_backfills()
    finally:
        instance.dispose()
    # Queued for the daemon that `make ui` (dagster dev) runs.
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(DEFAULT_GRID_LEVELS)
    assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}
    assert sorted(backfill.partition_names) == sorted(DEFAULT_GRID_LEVELS)
    assert {r.job_name for r in runs} == {"per_cell_assets"}
