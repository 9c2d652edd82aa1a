"""A backfill of every grid level from the command line queues one run per partition."""

from pathlib import Path

import dagster as dg
import pytest

from entropice_core.config import DEFAULT_GRID_LEVELS


@pytest.mark.slow  # a `dagster` subprocess loads the code location
def test_cli_backfill_queues_all_nine_grid_levels(tmp_path: Path, cli_backfill) -> None:
    runs, backfill = cli_backfill(tmp_path, "per_cell_assets")
    # Queued for the daemon that `make ui` (dagster dev) runs.
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(DEFAULT_GRID_LEVELS)
    assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}
    assert sorted(backfill.partition_names) == sorted(DEFAULT_GRID_LEVELS)
    assert {r.job_name for r in runs} == {"per_cell_assets"}
