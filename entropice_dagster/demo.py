"""Materialise the whole asset graph on the configured area, as runs the Dagster UI shows.

``python -m entropice_dagster.demo`` (called by ``entropice demo`` / ``make demo``) runs the
graph as in-process runs (at most one per partition key and stage, see ``_steps``) on the
persistent instance in ``$DAGSTER_HOME``, so the history, metadata, check results and maps
are there when ``make ui`` opens the UI afterwards. Runs that do not read each other's
assets run side by side in worker processes (one per core, at most ``DEMO_WORKERS``), each
of which imports the stack once. It ends with the wall time per stage.
"""

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from entropice_core.config import Settings
from entropice_core.layout import ASSET_PATHS, Layout
from entropice_core.sample import generate_sample_region
from entropice_core.sample.era5 import ARCTIC_YEARS
from entropice_dagster.assets import all_assets
from entropice_dagster.assets.alphaearth import alphaearth_features, alphaearth_statistics
from entropice_dagster.assets.climate import climate_features, era5_daily, era5_hourly, era5_yearly
from entropice_dagster.assets.grids import grid_cells, watermask
from entropice_dagster.assets.labels import darts_coverage, darts_polygons, rts_labels
from entropice_dagster.assets.models import (
    experiment_summary,
    predictions,
    trained_model,
    training_dataset,
)
from entropice_dagster.assets.terrain import (
    arcticdem_tiles,
    terrain_derivatives,
    terrain_features,
    terrain_statistics,
)
from entropice_dagster.partitions import arctic_year_partitions, grid_partitions
from entropice_dagster.pools import DASK_POOL, ensure_pool_limits
from entropice_dagster.resources import project_resources
from entropice_dashboard import DASHBOARD_URL

UI_URL = "http://127.0.0.1:3000"
# Step logs stay in the instance (and the UI); the terminal shows the progress bar and, on
# failure, the root cause.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
#: Experiments trained per grid level: one level per grid type where the sample region has
#: enough cells with and without RTS and enough spatial blocks (~70 blocks of h3_4, ~47 of
#: healpix_7). At h3_6 the four models on every source, a source ablation, the count task and
#: yearly mode; every other experiment is a partition to materialise from the UI.
DEMO_EXPERIMENTS = {
    "h3_6": (
        "espa-binary",
        "xgboost-binary",
        "rf-binary",
        "knn-binary",
        "xgboost-binary-terrain",
        "xgboost-binary-climate",
        "xgboost-binary-alphaearth",
        "xgboost-count",
        "xgboost-binary-all-yearly",
    ),
    "healpix_9": ("espa-binary", "xgboost-binary"),
}
#: The demo's search budget (the experiment files' is larger): a few minutes for the whole graph.
DEMO_BUDGET = {"n_iter": 3, "importance_repeats": 2}
#: Runs at once at most (fewer on fewer cores): each worker holds a run's inputs in memory, and
#: the terrain statistics pass alone takes about 7 GB on the sample region.
DEMO_WORKERS = 2
#: The assets whose metadata the per-level summary table shows.
SUMMARY_ASSETS = ("grid_cells", "rts_labels", "terrain_features", "climate_features")

Step = tuple[str, list[dg.AssetsDefinition], Any]


@cache
def _instance() -> dg.DagsterInstance:
    """The persistent instance; without DAGSTER_HOME, the one `make ui` opens (.dagster_home)."""
    if "DAGSTER_HOME" not in os.environ:
        home = Path(".dagster_home").absolute()
        home.mkdir(exist_ok=True)
        if not (home / "dagster.yaml").exists():
            template = files("entropice_dagster").joinpath("dagster.yaml")
            (home / "dagster.yaml").write_text(template.read_text())
        os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def _root_cause(event: dg.DagsterEvent) -> str:
    error = event.step_failure_data.error
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error is not None else "no error recorded"


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """The root causes of failed steps and the failed checks of a run, one per line."""
    lines = [f"{e.step_key}: {_root_cause(e)}" for e in result.all_events if e.is_step_failure]
    lines += [
        f"check {e.asset_key.to_user_string()}.{e.check_name} failed: {dict(e.metadata)}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    return "\n".join(lines) or "the run failed; see its logs in the UI"


def _summary(rows: list[tuple[Any, ...]], aoi: str) -> Table:
    table = Table(title=f"Per grid level on {aoi!r}")
    columns = (
        "partition",
        "cells",
        "land km²",
        "cells with RTS",
        "slumps",
        "RTS km²",
        "mean m",
        "slope °",
        "TDD °C·d",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for key, cells, labels, terrain, climate in rows:
        table.add_row(
            key,
            f"{cells['dagster/partition_row_count']:,}",
            f"{cells['land_area_km2']:,.0f}",
            f"{labels['cells_with_rts']:,}",
            f"{labels['slumps']:,}",
            f"{labels['rts_area_km2']:,.2f}",
            f"{terrain['mean_elevation_m']:,.0f}",
            f"{terrain['mean_slope_deg']:.2f}",
            f"{climate['mean_tdd']:,.0f}",
        )
    return table


def _leaderboard(summary: pd.DataFrame) -> Table:
    """The experiment_summary table, narrow enough for 80 columns: CV and test F1 per level."""
    table = Table(
        title="Leaderboard (experiment_summary, best first)",
        box=box.SIMPLE_HEAD,
        caption="F1 macro; base: the majority-class baseline in CV. Every score, ROC AUC and "
        "the data versions: training-results/summary.parquet",
    )
    for column in ("level", "experiment"):
        table.add_column(column, no_wrap=True)
    for column in ("CV F1 ± std", "test F1", "base F1"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in summary.itertuples():
        table.add_row(
            row.grid_level,
            row.experiment,
            f"{row.cv_f1_macro:.3f} ± {row.cv_f1_macro_std:.3f}",
            f"{row.test_f1_macro:.3f}",
            f"{row.baseline_cv_f1_macro:.3f}",
        )
    return table


def _steps(years: list[str]) -> list[Step]:
    """(stage, assets, partition key) of each run, in the order they start when ready.

    The ``dask`` pool (limit one) runs the terrain derivatives and then the terrain
    statistics, and that chain is the demo's critical path; what takes no pool is split from
    it to run beside it, and a pooled run waits for the other worker's pooled run to end
    (``_can_start``) rather than hold a worker idle. So the watermask and the DARTS layers
    are a run of their own, and the grid cells, the RTS labels and the AlphaEarth statistics
    run beside the terrain derivatives, the ERA5 years (each year's download, daily
    aggregates and indices together, newest year first: a year's indices read the next
    year's daily store), the climate features and the AlphaEarth features beside the terrain
    statistics. The levels with models come first: their climate and AlphaEarth features,
    then, after the terrain statistics, their training datasets and models; the other
    levels' climate features fill the workers until the models can start (a step starts
    before the later ones that are ready too), and their AlphaEarth and terrain features (one
    run per level: by then both statistics are stored) end the demo.
    """
    keys = grid_partitions.get_partition_keys()
    trained = [key for key in keys if key in DEMO_EXPERIMENTS]
    untrained = [key for key in keys if key not in DEMO_EXPERIMENTS]
    steps: list[Step] = [
        ("sources", [watermask, darts_polygons, darts_coverage], None),
        ("terrain derivatives", [arcticdem_tiles, terrain_derivatives], None),
    ]
    steps += [("grid levels", [grid_cells, rts_labels], key) for key in trained + untrained]
    steps += [
        ("statistics", [terrain_statistics], None),
        ("statistics", [alphaearth_statistics], None),
    ]
    steps += [("era5", [era5_hourly, era5_daily, era5_yearly], y) for y in sorted(years)[::-1]]
    steps += [("climate", [climate_features], key) for key in trained]
    steps += [("level features", [alphaearth_features], key) for key in trained]
    steps += [("level features", [terrain_features, training_dataset], key) for key in trained]
    steps += [
        ("models", [trained_model, predictions], _model_key(key, experiment))
        for key, experiments in DEMO_EXPERIMENTS.items()
        for experiment in experiments
    ]
    steps += [("climate", [climate_features], key) for key in untrained]
    steps += [("level features", [alphaearth_features, terrain_features], k) for k in untrained]
    steps.append(("models", [experiment_summary], None))
    return steps


def _model_key(grid_level: str, experiment: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"grid_level": grid_level, "experiment": experiment})


def _reads(step: Step, earlier: Step) -> bool:
    """Whether ``step`` reads an asset partition that the ``earlier`` step writes.

    A run reads the parents of its assets: all partitions of an unpartitioned child's parents,
    the same grid level of a per-level parent, and (conservatively) every partition where the
    partitions differ in kind (climate features read every Arctic year; a year's indices read
    the next year's daily store).
    """
    (_, assets, key), (_, written, written_key) = step, earlier
    parents = {parent for a in assets for k in a.keys for parent in a.asset_deps[k]}
    if not parents & {k for a in written for k in a.keys}:
        return False
    if key is None or written_key is None:
        return True
    if isinstance(key, dg.MultiPartitionKey):  # a model reads its own grid level
        own = (
            key
            if isinstance(written_key, dg.MultiPartitionKey)
            else key.keys_by_dimension["grid_level"]
        )
        return written_key == own
    levels = set(grid_partitions.get_partition_keys())
    if key in levels and written_key in levels:
        return key == written_key
    return True


def _prerequisites(steps: list[Step]) -> list[set[int]]:
    """For each step, the earlier steps whose outputs it reads (they run before it)."""
    return [{j for j in range(i) if _reads(step, steps[j])} for i, step in enumerate(steps)]


def _pooled(step: Step) -> bool:
    """Whether a run of ``step`` takes a slot of the ``dask`` pool (limit one in dagster.yaml;
    the ``gpu`` pool holds as many slots as the demo runs at once, see pools)."""
    return any(asset.op.pool == DASK_POOL for asset in step[1])


def _can_start(step: Step, running: list[Step]) -> bool:
    """Whether ``step`` can start beside the ``running`` ones without waiting for a pool slot.

    A pooled run started beside another would hold a worker while it waits for the slot; a
    run that takes no pool can use that worker meanwhile.
    """
    return not (_pooled(step) and any(_pooled(other) for other in running))


@dataclass
class _Outcome:
    """What a worker reports of one run: picklable, unlike the run's result."""

    seconds: float
    failure: str | None = None
    run_id: str = ""
    #: {asset: {metadata key: plain value}} of the SUMMARY_ASSETS the run materialised
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)


def _warm() -> None:
    """Import the stack in a new worker while the parent builds the sample region's world."""
    _instance()


def _run_step(index: int, years: list[str]) -> _Outcome:
    """Materialise step ``index`` of ``_steps(years)`` here, on the persistent instance."""
    _, selection, key = _steps(years)[index]
    settings = Settings.from_env()
    started = time.perf_counter()
    budget = {"ops": {"trained_model": {"config": DEMO_BUDGET}}}
    result = dg.materialize(
        all_assets,
        selection=selection,
        partition_key=key,
        instance=_instance(),
        resources=project_resources(settings.data_dir, settings.aoi),
        run_config=QUIET | (budget if trained_model in selection else {}),
        raise_on_error=False,
    )
    outcome = _Outcome(time.perf_counter() - started, run_id=result.run_id)
    if not result.success:
        outcome.failure = _failure(result)
        return outcome
    for asset in selection:
        name = asset.key.to_user_string()
        if name in SUMMARY_ASSETS:
            (event,) = result.asset_materializations_for_node(name)
            outcome.metadata[name] = {k: v.value for k, v in event.metadata.items()}
    return outcome


def _run_steps(
    steps: list[Step], years: list[str], pool: ProcessPoolExecutor, console: Console, workers: int
) -> tuple[list[tuple[str, str, float]], dict[Any, dict[str, Any]]] | None:
    """Run every step as soon as the steps it reads are done, ``workers`` at a time.

    A pooled step starts only while no other pooled step runs (``_can_start``).

    Returns the wall time of each run and the summary metadata by (partition, asset), or None
    after printing the cause where a run failed (the runs under way finish first).
    """
    prerequisites = _prerequisites(steps)
    pending, running, done = set(range(len(steps))), dict[Future[_Outcome], int](), set[int]()
    durations: list[tuple[str, str, float]] = []
    summary: dict[Any, dict[str, Any]] = {}
    failed = False
    columns = (TextColumn("{task.description:<40}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("materialising", total=len(steps))
        while (pending and not failed) or running:
            for i in sorted(pending) if not failed else []:
                under_way = [steps[j] for j in running.values()]
                ready = len(running) < workers and prerequisites[i] <= done
                if ready and _can_start(steps[i], under_way):
                    running[pool.submit(_run_step, i, years)] = i
                    pending.discard(i)
            assert running, f"no step can start: {sorted(pending)}"
            names = [_describe(steps[i]) for i in sorted(running.values())]
            progress.update(task, description=" | ".join(names))
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                i = running.pop(future)
                stage, _, key = steps[i]
                outcome = future.result()
                durations.append((stage, str(key or "-"), outcome.seconds))
                if outcome.failure is not None:
                    failed = True
                    progress.console.print(
                        f"[red]{_describe(steps[i])} failed (run {outcome.run_id}):[/red]"
                    )
                    progress.console.print(outcome.failure, markup=False)
                    continue
                for asset, metadata in outcome.metadata.items():
                    summary[key, asset] = metadata
                done.add(i)
                progress.advance(task)
    return None if failed else (durations, summary)


def _describe(step: Step) -> str:
    _, selection, key = step
    names = " + ".join(asset.key.to_user_string() for asset in selection)
    return " ".join(filter(None, (names, str(key) if key is not None else None)))


def _timings(durations: list[tuple[str, str, float]], workers: int) -> Table:
    """Time per stage (runs, total, slowest run), for seeing where the demo's time goes."""
    table = Table(title=f"Time per stage (wall clock of each run; {workers} runs at a time)")
    for column in ("stage", "runs", "total s", "mean s", "slowest run", "s"):
        table.add_column(column, justify="right" if column != "slowest run" else "left")
    for stage in dict.fromkeys(stage for stage, _, _ in durations):
        runs = [(name, s) for st, name, s in durations if st == stage]
        total = sum(s for _, s in runs)
        slowest = max(runs, key=lambda r: r[1])
        row = (stage, str(len(runs)), f"{total:.1f}", f"{total / len(runs):.1f}", *slowest)
        table.add_row(*row[:-1], f"{slowest[1]:.1f}")
    return table


def main() -> int:
    console = Console()
    try:
        settings = Settings.from_env()
    except ValueError as err:  # a bad ENTROPICE_AOI: the cause and the valid forms, no traceback
        console.print(Text.assemble(("error: ", "bold red"), str(err)), soft_wrap=True)
        return 1
    started = time.perf_counter()
    instance = _instance()
    ensure_pool_limits(instance)  # the gpu pool: one model step per GPU, else no holding back
    workers = max(1, min(DEMO_WORKERS, os.cpu_count() or 1))
    # spawned, not forked: the parent holds Dagster's SQLite connections and threads
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_warm) as pool:
        for _ in range(workers):  # start the workers now: their imports overlap what follows
            pool.submit(time.sleep, 0)
        durations: list[tuple[str, str, float]] = []
        if settings.aoi == "sample":
            with console.status("writing the sample region's source files (first run: ~40 s)"):
                sources = generate_sample_region(settings.data_dir, executor=pool)
            console.print(f"sample region sources: {sources.manifest.parent}")
            durations.append(("sample region", "generate", time.perf_counter() - started))
        years = [str(y) for y in range(ARCTIC_YEARS[0], ARCTIC_YEARS[1] + 1)]
        name = str(arctic_year_partitions.name)
        known = set(instance.get_dynamic_partitions(name))
        instance.add_dynamic_partitions(name, sorted(set(years) - known))
        steps = _steps(years)
        outcome = _run_steps(steps, years, pool, console, workers)
    if outcome is None:
        return 1
    runs, summary = outcome
    rows = [
        (key, *(summary[key, asset] for asset in SUMMARY_ASSETS))
        for key in grid_partitions.get_partition_keys()
    ]
    console.print(_summary(rows, settings.aoi))
    leaderboard = pd.read_parquet(Layout(settings.data_dir).experiment_summary)
    console.print(_leaderboard(leaderboard))
    console.print(_timings(durations + runs, workers))
    console.print(
        f"{len(steps)} runs in {time.perf_counter() - started:.0f} s. Outputs in "
        f"{settings.data_dir} (storage layout: entropice_core/layout.py): "
        + ", ".join(ASSET_PATHS[a.key.to_user_string()] for a in all_assets)
    )
    console.print(
        f"Runs, metadata, checks and maps are in {os.environ['DAGSTER_HOME']}.\n"
        f"Open the UI with [bold]make ui[/bold] (dagster dev on 127.0.0.1), then {UI_URL}\n"
        f"Open the dashboard with [bold]make dashboard[/bold] (Streamlit on 127.0.0.1), then "
        f"{DASHBOARD_URL}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
