"""Data integrity under kill, concurrency and repetition (issue 17, points 1 and 2).

Zarr stores and multi-file outputs are published as versions behind one atomic pointer
(``entropice_core.io.atomic``): writers killed at random points never show a reader a partial
or missing version, killed swaps are recovered and their temporaries swept. Icechunk
repositories do not grow on identical writes, shrink under maintenance, and tell a second
writer what happened (``entropice_core.io.icechunk``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from entropice_core.io import atomic
from entropice_core.io.atomic import (
    atomic_dirs,
    atomic_path,
    published_versions,
    resolve_together,
    sweep_temporaries,
)
from entropice_core.io.icechunk import (
    ConcurrentWriteError,
    commit_dataset,
    commit_raster,
    maintain_repository,
    read_dataset_version,
    repository_bytes,
)
from entropice_core.io.zarr import read_dataset, write_dataset, write_store
from entropice_core.terrain.derivatives import TerrainConfig, terrain_derivatives
from entropice_core.terrain.overviews import STRIDES

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONPATH": str(REPO)}


def l2(values, level: int = 1) -> xr.Dataset:
    ids = np.arange(len(values), dtype=np.uint64)
    attrs = {"grid_name": "healpix", "level": level, "indexing_scheme": "nested"}
    return xr.Dataset(
        {"a": ("cell_ids", np.asarray(values, float))},
        coords={"cell_ids": ("cell_ids", ids, attrs)},
    )


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.suffix == ".link")


# -- writes killed at random points, a reader beside them ---------------------------------

#: A writer publishing versions of a store folder (FILES files) with a companion table, in
#: a loop, slowly enough that a kill lands in the middle of a version.
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from entropice_core.io.atomic import atomic_dirs
    store, table, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    print("ready", flush=True)
    for i in range(10_000):
        version = f"{{name}}-{{i}}"
        with atomic_dirs(store, table) as (tmp, tmp_table):
            tmp.mkdir()
            for k in range({files}):
                (tmp / f"c{{k}}").write_text(version)
                time.sleep(0.002)
            tmp_table.write_text(version)
    """
)
FILES = 8


def read_version(store: Path, table: Path) -> str:
    """Read one whole version as a reader would (resolved once); raise if it is not whole."""
    real_store, real_table = resolve_together(store, table)
    chunks = sorted(real_store.iterdir())
    if len(chunks) != FILES:
        raise AssertionError(f"{len(chunks)} of {FILES} files in {real_store}")
    versions = {p.read_text() for p in chunks} | {real_table.read_text()}
    if len(versions) != 1:
        raise AssertionError(f"mixed versions {versions}")
    return versions.pop()


def test_writes_killed_at_random_points_never_show_a_partial_or_missing_version(
    tmp_path, monkeypatch
):
    """Two writers at a time, each killed with SIGKILL at a random moment, 15 rounds (at
    least 20 kills); a reader reading all the while must always find one whole version."""
    store, table = tmp_path / "labels.zarr", tmp_path / "labels.parquet"
    script = WRITER.format(files=FILES)
    with atomic_dirs(store, table) as (tmp, tmp_table):  # a first version to read
        tmp.mkdir()
        for k in range(FILES):
            (tmp / f"c{k}").write_text("seed")
        tmp_table.write_text("seed")
    stop, counts, failures, seen = threading.Event(), {"reads": 0}, [], set()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(read_version(store, table))
            except Exception as err:  # every failure counts, of any kind
                failures.append(repr(err))
            counts["reads"] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    rng, killed = random.Random(17), 0
    try:
        for round_ in range(15):
            writers = [
                subprocess.Popen(
                    [sys.executable, "-c", script, str(store), str(table), f"w{round_}{j}"],
                    env=ENV,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for j in range(2)
            ]
            for writer in writers:
                assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
            for writer in writers:
                time.sleep(rng.uniform(0.0, 0.15))
                if writer.poll() is None:
                    writer.send_signal(signal.SIGKILL)
                    killed += 1
                writer.wait()
                writer.stdout.close()
    finally:
        stop.set()
        thread.join()
    print(
        f"\nwrites killed: {killed}, reads made: {counts['reads']}, reads failed: "
        f"{len(failures)}, versions seen: {len(seen)}"
    )
    assert killed >= 20
    assert failures == []
    assert counts["reads"] > 100 and len(seen) > 2
    # the next write sweeps what the killed ones left; two versions stay (current, previous)
    monkeypatch.setattr(atomic, "SUPERSEDED_GRACE_S", 0.0)
    with atomic_dirs(store, table) as (tmp, tmp_table):
        tmp.mkdir()
        for k in range(FILES):
            (tmp / f"c{k}").write_text("last")
        tmp_table.write_text("last")
    assert read_version(store, table) == "last"
    assert temporaries(tmp_path) == []
    assert len(published_versions(store)) == 2


ZARR_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np, xarray as xr
    from entropice_core.io.zarr import write_dataset
    store, table = sys.argv[1], sys.argv[2]
    ids = np.arange(500, dtype=np.uint64)
    attrs = {"grid_name": "healpix", "level": 4, "indexing_scheme": "nested"}
    print("ready", flush=True)
    for i in range(1, 10_000):
        data = {f"v{k}": ("cell_ids", np.full(500, float(i))) for k in range(6)}
        ds = xr.Dataset(data, coords={"cell_ids": ("cell_ids", ids, attrs)}).chunk(50)
        write_dataset(ds, store, table=table)
    """
)


@pytest.mark.slow
def test_killed_zarr_writes_leave_a_readable_store_and_table(tmp_path):
    """Real Zarr stores and tables (rts_labels' pair) written in subprocesses killed at random
    points, 20 times; a reader opening the store with ``read_dataset`` and the table beside it
    always gets one complete version."""
    store, table = tmp_path / "labels_h3_3.zarr", tmp_path / "labels_h3_3.parquet"
    write_dataset(l2(np.zeros(500), level=4).chunk(50).rename(a="v0"), store, table=table)
    stop, counts, failures = threading.Event(), {"reads": 0}, []

    def reader() -> None:
        while not stop.is_set():
            try:
                real_store, real_table = resolve_together(store, table)
                ds = read_dataset(real_store).load()
                frame = pd.read_parquet(real_table)
                value = float(ds["v0"][0])
                assert (ds["v0"].to_numpy() == value).all()
                assert (frame["v0"].to_numpy() == value).all()
            except Exception as err:
                failures.append(repr(err))
            counts["reads"] += 1
            time.sleep(0.01)

    thread = threading.Thread(target=reader)
    thread.start()
    rng, killed = random.Random(7), 0
    try:
        for _ in range(20):
            writer = subprocess.Popen(
                [sys.executable, "-c", ZARR_WRITER, str(store), str(table)],
                env=ENV,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.05, 1.0))
            if writer.poll() is None:
                writer.send_signal(signal.SIGKILL)
                killed += 1
            writer.wait()
            writer.stdout.close()
    finally:
        stop.set()
        thread.join()
    print(f"\nzarr writes killed: {killed}, reads made: {counts['reads']}, failed: {len(failures)}")
    assert killed == 20 and failures == []
    write_dataset(l2(np.ones(500), level=4).rename(a="v0"), store, table=table)
    assert temporaries(tmp_path) == []
    assert pd.read_parquet(table)["v0"].tolist() == [1.0] * 500


# -- recovery after a kill between steps ---------------------------------------------------


def test_a_backup_left_by_the_earlier_two_rename_swap_is_restored_on_read_and_write(tmp_path):
    store = tmp_path / "h3_6.zarr"
    l2([1.0, 2.0]).to_zarr(store, zarr_format=3, consolidated=False)
    os.rename(store, tmp_path / ".h3_6.zarr.1a2b3c4d.old")  # killed between the renames
    (tmp_path / ".h3_6.zarr.1a2b3c4d.tmp").mkdir()  # the new store it was swapping in
    assert read_dataset(store)["a"].values.tolist() == [1.0, 2.0]  # a read recovers it
    write_dataset(l2([3.0, 4.0]), store)
    assert read_dataset(store)["a"].values.tolist() == [3.0, 4.0]
    assert store.is_symlink() and not list(tmp_path.glob("*.old"))


def test_a_plain_store_of_the_earlier_layout_becomes_a_version_on_the_next_write(tmp_path):
    store, table = tmp_path / "labels_h3_3.zarr", tmp_path / "labels_h3_3.parquet"
    l2([1.0]).to_zarr(store, zarr_format=3, consolidated=False)
    pd.DataFrame({"a": [1.0]}).to_parquet(table)
    write_dataset(l2([5.0]), store, table=table)
    assert store.is_symlink() and table.is_symlink()
    assert read_dataset(store)["a"].values.tolist() == [5.0]
    assert pd.read_parquet(table)["a"].tolist() == [5.0]


def test_a_kill_after_the_pointer_moved_but_before_the_link_is_recovered(tmp_path):
    """Killed between the pointer and the public link (a first write, or converting a plain
    store): readers read the pointer's version, and the link is made on the read."""
    store = tmp_path / "h3_6.zarr"
    write_dataset(l2([1.0]), store)
    store.unlink()
    assert read_dataset(store)["a"].values.tolist() == [1.0]
    assert store.is_symlink()


def test_a_version_published_by_no_pointer_and_dead_link_temporaries_are_swept(tmp_path):
    """Killed after renaming its version into place, or after making the new link: the next
    write deletes what no pointer names."""
    store = tmp_path / "h3_6.zarr"
    write_dataset(l2([1.0]), store)
    (tmp_path / ".h3_6.zarr.v0123456789ab" / "h3_6.zarr").mkdir(parents=True)
    link = f"..h3_6.zarr.current.{atomic._HOST}-{dead_pid()}-0123abcd.link"
    os.symlink("nowhere", tmp_path / link)
    old = time.time() - 3600  # replaced versions are kept for a grace period
    os.utime(tmp_path / ".h3_6.zarr.v0123456789ab", (old, old))
    write_dataset(l2([2.0]), store)
    assert read_dataset(store)["a"].values.tolist() == [2.0]
    assert not (tmp_path / ".h3_6.zarr.v0123456789ab").exists()
    assert len(published_versions(store)) == 2 and temporaries(tmp_path) == []


def test_a_reader_keeps_its_version_through_the_next_write(tmp_path):
    store = tmp_path / "h3_6.zarr"
    write_dataset(l2(np.arange(4.0)).chunk(2), store)
    opened = read_dataset(store)  # lazy, resolved once
    write_dataset(l2(np.arange(4.0) * 10).chunk(2), store)
    assert opened["a"].values.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert read_dataset(store)["a"].values.tolist() == [0.0, 10.0, 20.0, 30.0]


# -- temporaries of killed writes ----------------------------------------------------------


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


def test_temporaries_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    host, dead, me = atomic._HOST, dead_pid(), os.getpid()
    target = tmp_path / "h3_6.parquet"
    names = {
        f".h3_6.{host}-{dead}-0000aaaa.tmp.parquet": False,  # 0-byte file of a killed write
        f".h3_6.parquet.{host}-{dead}-0000bbbb.tmp": False,
        f".h3_6.{host}-{me}-0000cccc.tmp.parquet": True,  # a live writer (this process)
        f".h3_6.otherhost-{dead}-0000dddd.tmp.parquet": True,  # another host, recent
        ".h3_6.0000eeee.tmp.parquet": True,  # the earlier naming, recent
        ".h3_6.0000ffff.tmp.parquet": False,  # the earlier naming, old
        f".h3_6.otherhost-{dead}-00001111.tmp.parquet": False,  # another host, old
    }
    for name in names:
        (tmp_path / name).touch()
    old = time.time() - 30 * 86_400
    for name in (".h3_6.0000ffff.tmp.parquet", f".h3_6.otherhost-{dead}-00001111.tmp.parquet"):
        os.utime(tmp_path / name, (old, old))
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    left = {p.name for p in tmp_path.iterdir()} - {"h3_6.parquet"}
    assert left == {name for name, kept in names.items() if kept}


def test_a_partial_store_of_a_killed_write_is_swept_by_the_next_write(tmp_path):
    store = tmp_path / "labels_h3_6.zarr"
    partial = tmp_path / f".labels_h3_6.zarr.{atomic._HOST}-{dead_pid()}-0000abcd.tmp"
    (partial / "labels_h3_6.zarr" / "a").mkdir(parents=True)
    write_store(l2([1.0]), store)
    assert not partial.exists()
    assert sweep_temporaries(store) == []


# -- outputs that belong together ----------------------------------------------------------


def test_a_failure_while_writing_the_table_publishes_neither(tmp_path, monkeypatch):
    store, table = tmp_path / "labels_h3_3.zarr", tmp_path / "labels_h3_3.parquet"
    write_dataset(l2([1.0, 2.0]), store, table=table)

    def full(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(l2([7.0, 8.0]), store, table=table)
    monkeypatch.undo()
    assert read_dataset(store)["a"].values.tolist() == [1.0, 2.0]
    assert pd.read_parquet(table)["a"].tolist() == [1.0, 2.0]
    assert temporaries(tmp_path) == []


def experiment(value: float) -> SimpleNamespace:
    import sklearn
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier(strategy="constant", constant=1).fit([[0], [1]], [0, 1])
    frame = pd.DataFrame({"value": [value]})
    config = SimpleNamespace(model_dump=lambda mode: {"value": value})
    stamp = {"versions": {"scikit-learn": sklearn.__version__}, "value": value}
    return SimpleNamespace(
        model=model, stamp=stamp, cv_results=frame, scores=frame, importance=frame, config=config
    )


def test_an_experiment_is_replaced_as_a_whole_and_keeps_its_predictions(tmp_path, monkeypatch):
    from entropice_core.ml import training

    folder = tmp_path / "training-results" / "h3_3" / "espa-binary"
    training.save_experiment(experiment(1.0), folder)
    (folder / "predictions.parquet").write_bytes(b"predictions")  # a later step's file
    pd_to_parquet = pd.DataFrame.to_parquet

    def fails_on_importance(self, path, *args, **kwargs):
        if Path(path).name == training.FEATURE_IMPORTANCE:
            raise OSError("disk full")
        return pd_to_parquet(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fails_on_importance)
    with pytest.raises(OSError, match="disk full"):
        training.save_experiment(experiment(2.0), folder)
    monkeypatch.undo()
    assert training.load_model(folder)[1]["value"] == 1.0  # model and stamp of the old run
    assert pd.read_parquet(folder / training.CV_RESULTS)["value"].tolist() == [1.0]
    training.save_experiment(experiment(3.0), folder)
    assert training.load_model(folder)[1]["value"] == 3.0
    assert pd.read_parquet(folder / training.SCORES)["value"].tolist() == [3.0]
    assert (folder / "predictions.parquet").read_bytes() == b"predictions"
    from entropice_core.layout import Layout

    assert Layout(tmp_path).experiment_folders() == [("h3_3", "espa-binary", folder)]


# -- Icechunk: bounded growth, maintenance, concurrent writers ------------------------------


def small_terrain(seed: int = 0, bump: bool = False) -> xr.Dataset:
    """Derivatives of a 256 x 256 DEM in 64-pixel chunks (16 per variable)."""
    from scipy import ndimage

    n = 256
    z = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(n, n)), 3) * 400 + 300
    if bump:
        z[10:20, 10:20] += 50.0  # changes the chunks around one corner only
    dem = xr.DataArray(
        z.astype(np.float32),
        dims=("y", "x"),
        coords={"y": 1e5 - 32 * (np.arange(n) + 0.5), "x": 2e5 + 32 * (np.arange(n) + 0.5)},
        name="dem",
    ).rio.write_crs("EPSG:3413")
    config = TerrainConfig(tpi_radii_m=[160.0], vrm_windows=[3], chunk=64)
    return terrain_derivatives(dem, config)


def assert_slope(stored: xr.Dataset, expected: xr.Dataset) -> None:
    np.testing.assert_array_equal(stored["slope"].to_numpy(), expected["slope"].to_numpy())


def commit_terrain(repo: Path, rasters: xr.Dataset) -> str:
    return commit_raster(rasters, repo, "terrain_derivatives", STRIDES)


def test_identical_terrain_runs_do_not_grow_the_repository(tmp_path):
    repo = tmp_path / "derivatives.icechunk"
    first = commit_terrain(repo, small_terrain())
    one_run = repository_bytes(repo)
    again = [commit_terrain(repo, small_terrain()) for _ in range(2)]
    three_runs = repository_bytes(repo)
    print(f"\nrepository after 1 run: {one_run:,} B, after 3 identical runs: {three_runs:,} B")
    assert three_runs <= 1.05 * one_run
    assert set(again) == {first}  # nothing changed: no new snapshot
    changed = commit_terrain(repo, small_terrain(bump=True))
    assert changed != first
    # only the chunks around the bump are new: far less than a second copy
    assert repository_bytes(repo) - three_runs < 0.5 * one_run
    assert_slope(read_dataset_version(repo, None, changed), small_terrain(bump=True))
    assert_slope(read_dataset_version(repo, None, first), small_terrain())


def test_maintenance_expires_old_snapshots_collects_garbage_and_keeps_the_retained(tmp_path):
    repo = tmp_path / "derivatives.icechunk"
    snapshots = [commit_terrain(repo, small_terrain(seed)) for seed in range(3)]
    # a killed run: its session wrote chunks and never committed
    import icechunk

    session = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo)))
    writing = session.writable_session("main")
    small_terrain(9).compute().to_zarr(writing.store, mode="w", consolidated=False, zarr_format=3)
    del writing, session
    before = repository_bytes(repo)
    kept_young = maintain_repository(repo, keep_snapshots=2)  # orphans too young: kept
    assert kept_young.snapshots_expired == 1 and kept_young.snapshots_kept >= 2
    done = maintain_repository(repo, keep_snapshots=2, orphan_age=dt.timedelta(0))
    assert done.chunks_deleted > 0
    assert repository_bytes(repo) < 0.6 * before
    for seed, snapshot in ((1, snapshots[1]), (2, snapshots[2])):
        assert_slope(read_dataset_version(repo, None, snapshot), small_terrain(seed))
    with pytest.raises(Exception):  # noqa: B017 (icechunk's error type varies by phase)
        read_dataset_version(repo, None, snapshots[0])["slope"].load()


@pytest.fixture
def local_dask():
    """The held writes below wait on threading events, which only dask's local threads can
    run (a distributed client, e.g. one another test left as the default, would pickle them)."""
    import dask

    with dask.config.set(scheduler="threads"):
        yield


def gated(dataset: xr.Dataset, started: threading.Event, gate: threading.Event) -> xr.Dataset:
    """``dataset`` whose chunks compute only once ``gate`` is set: a write held open (the
    first chunk it computes sets ``started``: its session is open by then)."""

    def wait(block):
        started.set()
        assert gate.wait(120)
        return block

    held = dataset.copy()
    for name, variable in dataset.data_vars.items():
        meta = np.empty((0,) * variable.ndim, variable.dtype)  # no call to infer it
        held[name] = variable.copy(data=variable.data.map_blocks(wait, meta=meta))
    return held


def test_non_conflicting_concurrent_commits_both_succeed(tmp_path, local_dask):
    repo = tmp_path / "features.icechunk"
    commit_dataset(l2([0.0, 0.0]), repo, "h3_3", "first")
    started, gate, result = threading.Event(), threading.Event(), {}
    data = gated(l2([1.0, 2.0]).chunk(1), started, gate)
    held = threading.Thread(
        target=lambda: result.update(id=commit_dataset(data, repo, "h3_3", "held"))
    )
    held.start()
    assert started.wait(120)
    other = commit_dataset(l2([3.0, 4.0, 5.0], level=2), repo, "h3_4", "other level")
    gate.set()
    held.join()
    assert result["id"] != other
    assert read_dataset_version(repo, "h3_3")["a"].values.tolist() == [1.0, 2.0]
    assert read_dataset_version(repo, "h3_4")["a"].values.tolist() == [3.0, 4.0, 5.0]


def test_a_conflicting_second_writer_is_told_what_happened(tmp_path, local_dask):
    repo = tmp_path / "derivatives.icechunk"
    commit_terrain(repo, small_terrain(0))
    started, gate, errors = threading.Event(), threading.Event(), []
    data = gated(small_terrain(1), started, gate)

    def held_write() -> None:
        try:
            commit_terrain(repo, data)
        except Exception as err:
            errors.append(err)

    held = threading.Thread(target=held_write)
    held.start()
    assert started.wait(120)
    landed = commit_terrain(repo, small_terrain(2))
    gate.set()
    held.join()
    (error,) = errors
    assert isinstance(error, ConcurrentWriteError)
    message = str(error)
    assert f"another writer committed snapshot {landed}" in message
    assert "run this one again once it has finished" in message
    assert "RebaseFailedError" not in message
    assert_slope(read_dataset_version(repo, None), small_terrain(2))


def test_the_maintenance_job_runs_on_a_schedule_and_observes_the_repository(tmp_path):
    import dagster as dg

    from entropice_core.io import icechunk as icechunk_io
    from entropice_dagster.definitions import defs
    from entropice_dagster.jobs import IcechunkMaintenanceConfig, icechunk_maintenance
    from entropice_dagster.resources import DataDirResource

    assert IcechunkMaintenanceConfig().keep_snapshots == icechunk_io.KEEP_SNAPSHOTS
    assert IcechunkMaintenanceConfig().orphan_age_hours * 3600 == (
        icechunk_io.ORPHAN_AGE.total_seconds()
    )
    schedule = defs.resolve_schedule_def("icechunk_maintenance_daily")
    assert schedule.job_name == "icechunk_maintenance"
    repo = tmp_path / "arcticdem" / "derivatives.icechunk"
    for seed in range(3):  # a small raster: the job, not the terrain, is under test
        values = np.random.default_rng(seed).normal(size=(64, 64)).astype(np.float32)
        raster = xr.Dataset({"slope": (("y", "x"), values)}, coords={"y": -np.arange(64.0)})
        commit_raster(raster.chunk(32).rio.write_crs("EPSG:3413"), repo, "terrain_derivatives")
    result = icechunk_maintenance.execute_in_process(
        resources={"data_dir": DataDirResource(path=str(tmp_path))},
        run_config={
            "ops": {
                "maintain_icechunk_repositories": {
                    "config": {"keep_snapshots": 1, "orphan_age_hours": 0.0}
                }
            }
        },
    )
    assert result.success
    (observation,) = result.asset_observations_for_node("maintain_icechunk_repositories")
    assert observation.asset_key == dg.AssetKey("terrain_derivatives")
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert meta["snapshots_expired"] == 2 and meta["bytes"] < meta["bytes_before"]
