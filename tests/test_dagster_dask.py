"""DaskResource: starts and closes its cluster, or connects to an existing scheduler."""

import dagster as dg
import pytest
from distributed import LocalCluster

from entropice_dagster.resources import DaskResource


def test_local_cluster_runs_work_and_is_closed_after_the_run():
    resource = DaskResource(n_workers=1, threads_per_worker=2, processes=False)
    with resource.yield_for_execution(dg.build_init_resource_context()) as dask:
        assert dask.client.submit(sum, [1, 2, 3]).result() == 6
        metadata = dask.metadata()
        assert metadata["dask_workers"] == 1 and metadata["dask_threads"] == 2
        # the per-run cluster (and its dashboard) closes with the run: no dead link in the UI
        assert "dask_dashboard" not in metadata
        client = dask.client
    assert client.status == "closed"


def test_existing_scheduler_is_used_and_left_running():
    with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        resource = DaskResource(scheduler_address=cluster.scheduler_address)
        with resource.yield_for_execution(dg.build_init_resource_context()) as dask:
            assert dask.client.scheduler.address == cluster.scheduler_address
            assert dask.client.submit(max, [4, 2]).result() == 4
            link = dask.metadata()["dask_dashboard"].value
            assert link.startswith(("http://127.0.0.1:", "http://localhost:")), link
        assert cluster.status.name == "running"


def test_dask_work_runs_on_the_cluster_or_on_threads_for_an_in_process_one():
    import dask
    import dask.array as da
    import dask.threaded

    with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        resource = DaskResource(scheduler_address=cluster.scheduler_address)
        with resource.yield_for_execution(dg.build_init_resource_context()) as dask_resource:
            with dask_resource.computing():
                assert dask.base.get_scheduler() == dask_resource.client.get
                assert int(da.ones(10, chunks=5).sum().compute()) == 10
            (worker,) = cluster.workers.values()
            assert worker.state.executed_count > 0  # the sum ran on the scheduler's worker
    in_process = DaskResource(n_workers=1, processes=False)
    context = dg.build_init_resource_context()
    with in_process.yield_for_execution(context) as dask_resource, dask_resource.computing():
        assert dask.base.get_scheduler() is dask.threaded.get


def test_memory_limit_reaches_the_workers():
    resource = DaskResource(n_workers=1, processes=False, memory_limit="1GiB")
    with resource.yield_for_execution(dg.build_init_resource_context()) as dask:
        (worker,) = dask.client.scheduler_info()["workers"].values()
        assert worker["memory_limit"] == 2**30


def _gdal_cache_max() -> int:
    from rasterio.env import get_gdal_config

    return get_gdal_config("GDAL_CACHEMAX")


def test_gdal_block_cache_is_bounded_on_the_workers():
    # a worker process of a cluster the resource did not start: GDAL's default there is 5 %
    # of the machine's memory
    with LocalCluster(n_workers=1, processes=True, dashboard_address="127.0.0.1:0") as cluster:
        resource = DaskResource(scheduler_address=cluster.scheduler_address, gdal_cache="24MiB")
        with resource.yield_for_execution(dg.build_init_resource_context()) as dask:
            (limit,) = dask.client.run(_gdal_cache_max).values()
    assert limit == 24 * 2**20
    with pytest.raises(ValueError, match=r"gdal_cache='lots' is not a size; write e\.g\. '64MiB'"):
        DaskResource(gdal_cache="lots")


def test_jobqueue_without_the_package_says_how_to_install_it():
    pytest.importorskip("distributed")
    resource = DaskResource(jobqueue="SLURMCluster")
    with (
        pytest.raises(ImportError, match="dask-jobqueue"),
        resource.yield_for_execution(dg.build_init_resource_context()),
    ):
        pass


def test_client_outside_a_run_is_a_clear_error():
    with pytest.raises(RuntimeError, match="outside a run"):
        _ = DaskResource().client


@pytest.fixture
def shared_clients():
    """Close the process-wide clients a test started: a default distributed client left
    behind would run every later test's dask work in this worker process."""
    import dask

    from entropice_dagster.resources import _SHARED_CLIENTS

    scheduler = dask.config.get("scheduler", None)
    yield
    for client in _SHARED_CLIENTS.values():
        cluster = client.cluster
        client.close()
        if cluster is not None:
            cluster.close()
    _SHARED_CLIENTS.clear()
    dask.config.set(scheduler=scheduler)  # a default client sets "dask.distributed"


def test_a_shared_in_process_cluster_outlives_the_run_and_serves_the_next(shared_clients):
    resource = DaskResource(n_workers=1, threads_per_worker=1, processes=False, shared=True)
    with resource.yield_for_execution(dg.build_init_resource_context()) as dask:
        first = dask.client
        assert first.submit(sum, [1, 2]).result() == 3
    assert first.status == "running"  # not closed with the run
    with resource.yield_for_execution(dg.build_init_resource_context()) as dask:
        assert dask.client is first
    other = DaskResource(n_workers=1, threads_per_worker=2, processes=False, shared=True)
    with other.yield_for_execution(dg.build_init_resource_context()) as dask:
        assert dask.client is not first  # another sizing is another cluster
        assert dask.metadata()["dask_threads"] == 2
