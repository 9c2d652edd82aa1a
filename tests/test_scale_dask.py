"""Every heavy stage's Dask path equals its in-process path (issue 20): terrain derivatives
and their Icechunk commit, the model search, cross-validation and permutation importance
under joblib's dask backend, and batched inference as dask tasks. One small in-process
LocalCluster of two workers serves the module."""

import dask
import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from benchmark_module import load_benchmark
from distributed import Client, LocalCluster, get_task_stream
from test_ml_training import config
from test_ml_training import data as data  # the module's synthetic training data (fixture)

from entropice_core.io.icechunk import commit_raster, read_dataset_version
from entropice_core.ml.inference import batch_size_for, predict_cells
from entropice_core.ml.training import train_experiment
from entropice_core.terrain.derivatives import TerrainConfig, terrain_derivatives
from entropice_core.terrain.overviews import GROUP, STRIDES


@pytest.fixture(scope="module")
def client():
    """Two single-threaded in-process workers; not the default client (nothing leaks into
    other tests' dask work)."""
    scheduler = dask.config.get("scheduler", None)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client
    dask.config.set(scheduler=scheduler)


def _dem(rows: int = 300, cols: int = 260) -> xr.DataArray:
    """A rough synthetic 32 m DEM in EPSG:3413 with a nodata hole and an edge of NaN."""
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(rows, cols)).cumsum(0).cumsum(1) * 0.05 + 300).astype(np.float32)
    z[100:130, 40:90] = np.nan
    z[:, -3:] = np.nan
    coords = {"y": 2_000_000 - 32.0 * np.arange(rows), "x": 100_000 + 32.0 * np.arange(cols)}
    return xr.DataArray(z, dims=("y", "x"), coords=coords, name="dem").rio.write_crs("EPSG:3413")


def _name(task: dict) -> str:
    """The key name of a task-stream entry (array chunks have tuple keys)."""
    key = task["key"]
    return key if isinstance(key, str) else key[0]


CONFIG = TerrainConfig(chunk=96, tpi_radii_m=(160.0,), vrm_windows=(3, 5))


def test_derivative_tiles_on_the_cluster_equal_the_in_process_ones(client):
    rasters = terrain_derivatives(_dem().chunk(96), CONFIG)
    expected = rasters.compute(scheduler="sync")
    with get_task_stream(client=client) as stream, client.as_current():
        got = rasters.compute()
    xr.testing.assert_identical(got, expected)
    assert any(_name(task).startswith("terrain-") for task in stream.data)  # ran there


def test_the_raster_commit_from_the_workers_equals_the_threaded_one(client, tmp_path):
    """Each worker writes its chunks into a fork of the session; the commit holds the same
    raster and overviews, and the same raster again commits nothing (three of the rasters:
    every variable is written the same way)."""
    rasters = terrain_derivatives(_dem().chunk(96), CONFIG)[["slope", "tri", "vrm_5"]]
    threads = commit_raster(rasters, tmp_path / "threads.icechunk", "t", STRIDES)
    with client.as_current():
        cluster = commit_raster(rasters, tmp_path / "cluster.icechunk", "c", STRIDES)
        again = commit_raster(rasters, tmp_path / "cluster.icechunk", "c2", STRIDES)
    assert again == cluster
    for group in (None, GROUP):
        xr.testing.assert_identical(
            read_dataset_version(tmp_path / "cluster.icechunk", group, cluster).load(),
            read_dataset_version(tmp_path / "threads.icechunk", group, threads).load(),
        )
    # a changed raster over the stored one: only its changed chunks, same result as fresh
    changed = rasters.copy()
    changed["slope"] = changed["slope"].where(changed["slope"].x > 104_000, 0.0)
    with client.as_current():
        commit_raster(changed, tmp_path / "cluster.icechunk", "c3", STRIDES)
    fresh = commit_raster(changed, tmp_path / "fresh.icechunk", "f", STRIDES)
    xr.testing.assert_identical(
        read_dataset_version(tmp_path / "cluster.icechunk", None).load(),
        read_dataset_version(tmp_path / "fresh.icechunk", None, fresh).load(),
    )


@pytest.mark.parametrize("model", ["rf", "knn"])
def test_model_search_on_dask_equals_the_local_processes(client, data, model):
    """Same seeds: the same candidates, CV scores, refitted model and importances."""
    experiment = config(model, n_jobs=2, importance_repeats=2)
    local = train_experiment(data, experiment)
    with get_task_stream(client=client) as stream:
        remote = train_experiment(data, experiment, client=client)
    assert stream.data  # the candidate fits ran on the cluster
    assert remote.stamp["best_params"] == local.stamp["best_params"]
    scores = [c for c in local.cv_results if c.startswith(("mean_test_", "param"))]
    pd.testing.assert_frame_equal(remote.cv_results[scores], local.cv_results[scores])
    pd.testing.assert_frame_equal(remote.scores, local.scores)
    pd.testing.assert_frame_equal(remote.importance, local.importance)
    X = data.X()[~data.mask("excluded")]
    np.testing.assert_array_equal(remote.model.predict_proba(X), local.model.predict_proba(X))


@pytest.mark.parametrize("chunked", [False, True])
def test_batched_inference_on_dask_equals_in_process(client, data, chunked):
    """Batches of cells as tasks (reading their features there when the dataset is
    Dask-backed, as when opened from Zarr) give the in-process frame exactly."""
    import geopandas as gpd
    import shapely

    result = train_experiment(data, config("rf", n_jobs=1, importance_repeats=1))
    ids = data.cell_ids
    cells = gpd.GeoDataFrame(
        {"cell_id": ids}, geometry=[shapely.Point(0, 0)] * ids.size, crs="EPSG:4326"
    )
    dataset = data.dataset.chunk({"cell_ids": 64}) if chunked else data.dataset
    args = (result.model, dataset, cells, result.classes, result.feature_names)
    local = predict_cells(*args, batch_size=50)
    with get_task_stream(client=client) as stream:
        remote = predict_cells(*args, batch_size=50, client=client)
    pd.testing.assert_frame_equal(pd.DataFrame(remote), pd.DataFrame(local))
    usable = ~data.mask("excluded")
    expected = sum(bool(usable[start : start + 50].any()) for start in range(0, ids.size, 50))
    assert sum(_name(t).startswith("predict_batch") for t in stream.data) == expected


def test_the_batch_size_follows_the_device_memory_budget():
    assert batch_size_for(2**30, 100) == 2**30 // (4 * 100 * 5)
    assert batch_size_for(2**30, 100, per_cell=4) == 2**30 // (4 * 100 * 4 * 5)
    assert batch_size_for(1, 1000) == 1


def _gpu_check():
    return load_benchmark("gpu_check")


SMALL = [
    "--tile",
    "128",
    "--agg-size",
    "200",
    "--rows",
    "600",
    "--espa-rows",
    "300",
    "--inference-rows",
    "2000",
]


@pytest.mark.parametrize("flag", [["--cpu-only"], []])
def test_gpu_check_runs_the_cpu_twins_and_names_what_each_skipped_row_lacks(capsys, flag):
    gpu_check = _gpu_check()
    if not flag and gpu_check.gpu_available() is None:
        pytest.skip("this machine has a GPU: the script runs the GPU rows instead")
    assert gpu_check.main([*flag, *SMALL]) == 0
    out = capsys.readouterr().out
    skipped = {
        line.split(":", 1)[0].removeprefix("SKIPPED ")
        for line in out.splitlines()
        if line.startswith("SKIPPED ")
    }
    assert len(skipped) == len(gpu_check.ROWS)
    reason = "--cpu-only" if flag else "cupy is not installed"
    for line in out.splitlines():
        if line.startswith("SKIPPED "):
            assert reason in line or "no CUDA device" in line, line
    assert "failed" not in out
    # the CPU twins ran: a time in each row
    assert out.count("│ 0.") + out.count("│ 1.") >= len(gpu_check.ROWS)
