"""Shared fixtures, built once per session: the sample region, the whole asset graph
materialised on it, and Dagster resources under a temporary data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from entropice_core.sample import SampleRegionFiles, generate_sample_region, sample_region_files

if TYPE_CHECKING:
    import dagster as dg

#: The seed of the sample region the tests share (the default seed of `make demo`).
SEED = 42
REPO = Path(__file__).resolve().parents[1]
#: Debian's chromium, which Playwright drives in the browser tests (it cannot download its own).
CHROMIUM = os.environ.get("ENTROPICE_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(autouse=True, scope="module")
def dask_scheduler_left_as_found() -> Any:
    """Each module leaves dask's scheduler as it found it.

    A joblib loop nested in a task of an in-process cluster (the model searches on dask)
    makes the worker create a client with ``set_as_default=True``: in this process, it
    becomes dask's default. When the module's cluster closes, that client keeps trying to
    reconnect, and the next module's plain ``.compute()`` in the same test worker goes to it
    and fails with "No scheduler connected" (twice in full parallel runs).
    """
    import dask
    from distributed.client import _current_client, _get_global_client, _set_global_client

    default, current = _get_global_client(), _current_client.get()
    scheduler = dask.config.get("scheduler", None)
    yield
    if _get_global_client() is not default:
        _set_global_client(default if default is not None and default.status == "running" else None)
    if _current_client.get() is not current:
        _current_client.set(current)
    if dask.config.get("scheduler", None) != scheduler:
        dask.config.config.pop("scheduler", None)
        if scheduler is not None:
            dask.config.set(scheduler=scheduler)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser of the real-browser tests: skipped without it, failed under ``CI`` (whose
    ``.ci/run`` installs it)."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def dagster_resources(data_dir: Path, aoi: str = "sample") -> dict[str, object]:
    """The resources of ``definitions.defs``, pointed at ``data_dir``.

    The Dask cluster is the sample region's (threads in this process, shared by its runs)
    whatever the area: a cluster of worker processes per run costs seconds, and each stage's
    cluster path is tested on its own (tests/test_scale_dask.py).
    """
    # Imported here so that the core tests never import dagster.
    from entropice_dagster.resources import project_resources

    resources = project_resources(data_dir, aoi)
    resources["dask"] = project_resources(data_dir, "sample")["dask"]
    return resources


def backfill_from_cli(
    tmp_path: Path,
    job: str,
    dynamic: dict[str, list[str]] | None = None,
    partitions: tuple[str, ...] = ("--all",),
):
    """Run ``dagster job backfill -j <job> --all`` (or other ``partitions`` options, e.g.
    ``--from A --to B``) as a user would, against a fresh instance under ``tmp_path``
    (``dynamic`` partitions added first); returns its runs and backfill."""
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    if dynamic:
        instance = dg.DagsterInstance.from_config(str(home))
        for name, keys in dynamic.items():
            instance.add_dynamic_partitions(name, keys)
        instance.dispose()
    env = os.environ | {"DAGSTER_HOME": str(home), "ENTROPICE_DATA_DIR": str(tmp_path / "data")}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "job", "backfill", "-j", job, *partitions, "--noprompt"]
    done = subprocess.run(
        [*command, "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        (backfill,) = instance.get_backfills()
    finally:
        instance.dispose()
    return runs, backfill


@pytest.fixture(scope="session")
def cli_backfill():
    """``cli_backfill(tmp_path, job, dynamic=None)``: see :func:`backfill_from_cli`."""
    return backfill_from_cli


@pytest.fixture(scope="session")
def make_resources():
    """``make_resources(data_dir, aoi="sample")`` builds the resources (usable in any scope)."""
    return dagster_resources


@pytest.fixture
def dagster_instance():
    """An ephemeral Dagster instance, closed after the test: it holds in-memory SQLite
    connections, and one left to the garbage collector fails whichever later test collects it
    (``ResourceWarning: unclosed database``)."""
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(scope="session")
def region(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> tuple[Path, SampleRegionFiles, float]:
    """The sample region for SEED in a data directory of this session (worker): the data dir,
    its files, and the seconds it took to get them.

    The source files are generated once per test run: under pytest-xdist the first worker
    writes them to the run's shared temporary folder (holding a lock meanwhile) and every
    worker copies them into a data directory of its own, where its runs write their outputs.
    """
    import fcntl

    started = time.perf_counter()
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if worker_id != "master" else base) / "sample-region-sources"
    shared.mkdir(exist_ok=True)
    with (shared / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        generate_sample_region(shared, seed=SEED)  # at once where a worker already wrote them
    data_dir = tmp_path_factory.mktemp("sample-region")
    shutil.copytree(shared / "sources", data_dir / "sources")
    return data_dir, sample_region_files(data_dir, SEED), time.perf_counter() - started


#: The grid levels of the end-to-end run: one coarse level per grid family where the sample
#: region still has enough cells with and without RTS, and enough spatial blocks, to train and
#: check a model (h3_5: ~380 cells in ~66 blocks of h3_4; healpix_9: ~550 cells in ~47 blocks
#: of healpix_7; healpix_8 is too small: a CV fold holds one class). `make demo` covers all
#: nine levels.
GRAPH_LEVELS = ("h3_5", "healpix_9")
#: Experiments trained at the H3 level: every model on every source, the count task (its bins),
#: a single-source variant and yearly mode (the other configs differ only in those keys).
H3_EXPERIMENTS = (
    "espa-binary",
    "xgboost-binary",
    "rf-binary",
    "knn-binary",
    "xgboost-count",
    "xgboost-binary-terrain",
    "xgboost-binary-all-yearly",
)
#: At the HEALPix level one model suffices to materialise trained_model and predictions.
HEALPIX_EXPERIMENTS = ("espa-binary",)
#: A smaller search and importance budget than the experiment files' (as `make demo` uses).
GRAPH_BUDGET = {"n_iter": 3, "importance_repeats": 2}
#: Three Arctic years: the first two have complete thaw seasons (each needs the next year's
#: October-December), the last one's is not; yearly mode's lag 1 leaves 2022 with complete
#: rows (its climate and 2021's).
GRAPH_YEARS = ("2021", "2022", "2023")
#: Pixels per cell of the graph's terrain statistics (the explicit sampled option).
GRAPH_SAMPLE = 2500


@dataclass(frozen=True)
class GraphRun:
    """One ``dg.materialize`` call of the end-to-end run."""

    selection: tuple[str, ...]
    partition: str | None
    result: dg.ExecuteInProcessResult


@dataclass(frozen=True)
class SampleGraph:
    """Every asset of the graph materialised on the sample region (see ``sample_graph``)."""

    data_dir: Path
    runs: tuple[GraphRun, ...]
    levels: tuple[str, ...]
    years: tuple[str, ...]
    #: grid level -> the experiments trained at it
    experiments: dict[str, tuple[str, ...]]

    def run(self, asset: str, partition: Any = None) -> dg.ExecuteInProcessResult:
        """The run that materialised ``asset`` (for ``partition``, a key or MultiPartitionKey)."""
        wanted = None if partition is None else str(partition)
        found = [r for r in self.runs if asset in r.selection and r.partition == wanted]
        assert len(found) == 1, f"{len(found)} runs of {asset} {wanted}"
        return found[0].result

    def metadata(self, asset: str, partition: Any = None) -> dict[str, Any]:
        """The values of the metadata of ``asset``'s materialisation."""
        (event,) = self.run(asset, partition).asset_materializations_for_node(asset)
        return {name: getattr(v, "value", v) for name, v in event.metadata.items()}

    def checks(self, asset: str, partition: Any = None) -> dict[str, Any]:
        """Check name -> evaluation, for the checks of ``asset`` in its run."""
        evaluations = self.run(asset, partition).get_asset_check_evaluations()
        return {e.check_name: e for e in evaluations if e.asset_key.to_user_string() == asset}


def _materialise_graph(data_dir: Path) -> SampleGraph:
    """Materialise every asset once per partition of the end-to-end run, in-process, as the
    demo orders the runs: sources, Arctic years (all daily stores before the yearly indices,
    which read the next year), grid levels, then each (grid level, experiment)."""
    import dagster as dg

    from entropice_dagster.assets import all_assets
    from entropice_dagster.partitions import (
        arctic_year_partitions,
        experiment_partitions,
        grid_partitions,
        model_partitions,
    )

    def named(partitions_def, exclude=()) -> tuple[str, ...]:
        return tuple(
            a.key.to_user_string()
            for a in all_assets
            if a.partitions_def == partitions_def and a.key.to_user_string() not in exclude
        )

    # era5_yearly of a year reads the next year's daily store (the end of its thaw season)
    after_every_year = ("era5_yearly",)
    experiments = {
        key: H3_EXPERIMENTS if key.startswith("h3") else HEALPIX_EXPERIMENTS for key in GRAPH_LEVELS
    }
    assert set(H3_EXPERIMENTS) <= set(experiment_partitions.get_partition_keys())
    # the leaderboard reads the trained models: last
    # terrain_statistics and alphaearth_statistics serve every level in one pass once their
    # grid cells exist; each level's terrain_features and alphaearth_features (and the
    # dataset built on them) then take their part
    all_levels = ("terrain_statistics", "alphaearth_statistics")
    from_statistics = ("terrain_features", "alphaearth_features", "training_dataset")
    plan: list[tuple[tuple[str, ...], Any]] = [
        (named(None, ("experiment_summary", *all_levels)), None)
    ]
    plan += [(named(arctic_year_partitions, after_every_year), y) for y in GRAPH_YEARS]
    plan += [(after_every_year, y) for y in GRAPH_YEARS]
    plan += [(named(grid_partitions, from_statistics), key) for key in GRAPH_LEVELS]
    plan.append((all_levels, None))
    plan += [(from_statistics, key) for key in GRAPH_LEVELS]
    plan += [
        (named(model_partitions), dg.MultiPartitionKey({"grid_level": key, "experiment": e}))
        for key in GRAPH_LEVELS
        for e in experiments[key]
    ]
    plan.append((("experiment_summary",), None))
    configs = {
        "trained_model": {"config": GRAPH_BUDGET},
        # the whole region's exact pass takes about a minute on two cores (three under the
        # suite's load): the graph takes the explicit pixel sample, the exact default is
        # materialised on one tile in test_dagster_terrain
        "terrain_statistics": {
            "config": {"grid_levels": list(GRAPH_LEVELS), "min_pixels_per_cell": GRAPH_SAMPLE}
        },
        "alphaearth_statistics": {"config": {"grid_levels": list(GRAPH_LEVELS)}},
    }
    resources = dagster_resources(data_dir)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    runs = []
    # closed when done (see the dagster_instance fixture)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(arctic_year_partitions.name, list(GRAPH_YEARS))
        for selection, partition in plan:
            result = dg.materialize(
                all_assets,
                selection=list(selection),
                partition_key=partition,
                instance=instance,
                resources=resources,
                run_config=quiet | {"ops": {k: v for k, v in configs.items() if k in selection}},
                raise_on_error=False,
            )
            key = None if partition is None else str(partition)
            runs.append(GraphRun(selection, key, result))
    return SampleGraph(data_dir, tuple(runs), GRAPH_LEVELS, GRAPH_YEARS, experiments)


@pytest.fixture(scope="session")
def sample_graph(region) -> SampleGraph:
    """Every asset of the graph materialised once on the sample region (in the region's data
    directory) at GRAPH_LEVELS, for GRAPH_YEARS, with H3_EXPERIMENTS at the H3 level and
    HEALPIX_EXPERIMENTS at the HEALPix one, then the leaderboard; shared by the tests of each
    stage. Failed runs are kept (``raise_on_error=False``) for the tests to report."""
    data_dir, _, _ = region
    return _materialise_graph(data_dir)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of the end-to-end run are slow (the run takes minutes the first time), so that
    ``pytest -m "not slow"`` never starts it; under pytest-xdist (``--dist loadgroup``) they
    all go to one worker, so that the graph is built once while the other workers run the
    rest (first, before xdist's own hook reads the groups)."""
    for item in items:
        if "sample_graph" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group("sample_graph"))
