"""Materialise the whole asset graph on the configured area, as runs the Dagster UI shows.

``python -m entropice_dagster.demo`` (called by ``entropice demo`` / ``make demo``) runs each
partition as its own run on the persistent instance in ``$DAGSTER_HOME``, so the history,
metadata, check results and maps are there when ``make ui`` opens the UI afterwards.
"""

import os
import shutil
import sys
import warnings
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

UI_URL = "http://127.0.0.1:3000"
# Step logs stay in the instance (and the UI); the terminal shows the progress bar and, on
# failure, the root cause.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _instance() -> dg.DagsterInstance:
    """The persistent instance; without DAGSTER_HOME, the one `make ui` opens (.dagster_home)."""
    if "DAGSTER_HOME" not in os.environ:
        home = Path(".dagster_home").absolute()
        home.mkdir(exist_ok=True)
        config = Path(__file__).resolve().parents[1] / "dagster.yaml"
        if config.exists() and not (home / "dagster.yaml").exists():
            shutil.copy(config, home / "dagster.yaml")
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _root_cause(event: dg.DagsterEvent) -> str:
    error = event.step_failure_data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The root causes of failed steps and the failed checks of a run, one per line."""
    lines = [f"{e.step_key}: {_root_cause(e)}" for e in result.all_events if e.is_step_failure]
    lines += [
        f"check {e.asset_key.to_user_string()}.{e.check_name} failed: {dict(e.metadata)}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    return "\n".join(lines) or "the run failed; see its logs in the UI"


def _summary(rows: list[tuple[str, dict]], aoi: str, data_dir: Path) -> Table:
    table = Table(title=f"grid_cells on {aoi!r}, data in {data_dir}")
    table.add_column("partition")
    table.add_column("cells", justify="right")
    table.add_column("land km²", justify="right")
    table.add_column("path")
    for key, meta in rows:
        table.add_row(
            key,
            f"{meta['dagster/partition_row_count'].value:,}",
            f"{meta['land_area_km2'].value:,.0f}",
            str(Path(meta["path"].value).relative_to(data_dir)),
        )
    return table


def main() -> int:
    # Imported here so that the notices about beta parameters (backfill_policy) stay out of the
    # terminal of someone who just wants the demo; the UI and tests still show them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        from entropice_dagster.assets import all_assets
        from entropice_dagster.assets.grids import grid_cells, watermask
        from entropice_dagster.definitions import defs, settings
        from entropice_dagster.partitions import grid_partitions

    console = Console()
    instance = _instance()
    keys = grid_partitions.get_partition_keys()
    steps = [(watermask, None)] + [(grid_cells, key) for key in keys]
    rows = []
    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("materialising", total=len(steps))
        for asset, key in steps:
            name = " ".join(filter(None, (asset.key.to_user_string(), key)))
            progress.update(task, description=name)
            result = dg.materialize(
                all_assets,
                selection=[asset],
                partition_key=key,
                instance=instance,
                resources=defs.resources,
                run_config=QUIET,
                raise_on_error=False,
            )
            if not result.success:
                progress.stop()
                console.print(f"[red]{name} failed (run {result.run_id}):[/red]")
                console.print(_failure(result), markup=False)
                return 1
            if key is not None:
                (event,) = result.asset_materializations_for_node("grid_cells")
                rows.append((key, event.metadata))
            progress.advance(task)

    console.print(_summary(rows, settings.aoi, settings.data_dir))
    console.print(
        f"Runs, metadata, checks and maps are in {os.environ['DAGSTER_HOME']}.\n"
        f"Open the UI with [bold]make ui[/bold] (dagster dev on 127.0.0.1), then {UI_URL}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
