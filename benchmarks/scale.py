"""Scale run (issue 20): the terrain stage of a synthetic region ``--scale`` times the sample's
area on a LocalCluster of worker processes under a memory limit.

Writes the region's ArcticDEM tiles (``entropice sample --scale``, skipped where they exist),
then materialises, through the Dagster assets and the project's resources (the Dask resource
pointed at the cluster started here), ``watermask`` and ``grid_cells`` of each ``--levels``
(setup, not timed), and the three timed stages:

- **tiles**: ``arcticdem_tiles`` (the manifest of the tiles on disk);
- **derivatives**: ``terrain_derivatives`` (13 bands; ``--derivatives``, ``--tpi-radii`` and
  ``--vrm-windows`` choose fewer, for a region whose full store outgrows the disk; tiles with
  halos as tasks on the
  workers, written to Icechunk from them through forked sessions);
- **terrain features**: ``terrain_statistics`` for ``--levels`` (the exact one-pass engine in
  windows sized to the workers' memory, as tasks on them) and ``terrain_features`` of each.

Once per ``--workers`` count (the derivatives and statistics are deleted between runs, so
each run writes them anew). A thread samples every worker's RSS (``client.run`` of psutil)
every ``--interval`` seconds; a worker whose process changed or vanished counts as lost.
Pixels/s is the DEM mosaic's pixels (nodata included) over the stage's wall time. The last
column is the stage's 2-worker throughput over its 1-worker throughput.

Run: ``.venv/bin/python benchmarks/scale.py --scale 16 --data-dir /big/dir`` (``--scale 1/16
--memory-limit 1.5GB`` takes about a minute). The tiles stay; ``--clean`` removes the
stage's outputs at the end.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
from dask.utils import format_bytes, parse_bytes
from distributed import Client, LocalCluster, get_task_stream
from rich.console import Console
from rich.table import Table

from entropice_core.layout import Layout
from entropice_core.sample import generate_sample_region, region_bbox

LEVELS = ("h3_6", "healpix_10")


def _remove_outputs(layout: Layout) -> None:
    """Remove the terrain stage's outputs (the folder of the tiles' manifest, derivatives,
    statistics and features; the tiles themselves lie under sources/), so a run writes them
    anew."""
    folder = layout.asset_path("terrain_derivatives").parent
    assert folder == layout.asset_path("arcticdem_tiles").parent != layout.source("arcticdem")
    shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Stage:
    """One stage of one run: wall time and the memory seen meanwhile."""

    name: str
    workers: int
    seconds: float = 0.0
    pixels: int = 0
    peak: dict[str, int] = field(default_factory=dict)  # worker address -> bytes
    managed: dict[str, int] = field(default_factory=dict)  # task results held at the peak
    main_peak: int = 0  # this process (the Dagster run is in-process)
    spilled: int = 0  # bytes spilled to disk, all workers
    lost: int = 0  # workers that died or restarted during the stage
    windows: int = 0  # aggregation windows run as tasks

    @property
    def pixels_per_second(self) -> float:
        return self.pixels / self.seconds if self.seconds else float("nan")


def _probe(dask_worker: Any) -> tuple[int, int, int, int]:
    """(RSS, bytes spilled to disk, pid, bytes of task results in memory) of a worker."""
    import os

    spilled = getattr(getattr(dask_worker, "data", None), "spilled_total", None)
    disk = int(getattr(spilled, "disk", 0) or 0)
    managed = int(getattr(dask_worker.state, "nbytes", 0) or 0)
    return psutil.Process().memory_info().rss, disk, os.getpid(), managed


class WorkerMonitor:
    """Samples the workers' RSS on a thread; :meth:`stage` records the peaks within it."""

    def __init__(self, client: Client, interval: float) -> None:
        self.client, self.interval = client, interval
        self.pids = self._pids()
        self.lost: set[str] = set()
        self._stage: Stage | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _pids(self) -> dict[str, int]:
        return {address: got[2] for address, got in self.client.run(_probe).items()}

    def _sample(self) -> None:
        found = self.client.run(_probe, on_error="return")
        main = psutil.Process().memory_info().rss
        with self._lock:
            for address, pid in self.pids.items():
                got = found.get(address)
                if not isinstance(got, tuple) or got[2] != pid:
                    self.lost.add(address)
            stage = self._stage
            if stage is None:
                return
            stage.main_peak = max(stage.main_peak, main)
            for address, got in found.items():
                if isinstance(got, tuple):
                    if got[0] > stage.peak.get(address, 0):
                        stage.peak[address] = got[0]
                        stage.managed[address] = got[3]
                    stage.spilled = max(stage.spilled, got[1])

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except Exception:  # a sample lost while the cluster is busy: take the next
                continue

    @contextmanager
    def stage(self, stage: Stage) -> Iterator[Stage]:
        before = set(self.lost)
        self._sample()
        with self._lock:
            self._stage = stage
        started = time.perf_counter()
        try:
            yield stage
        finally:
            stage.seconds = time.perf_counter() - started
            self._sample()
            with self._lock:
                self._stage = None
                stage.lost = len(self.lost - before)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _materialize(
    selection: Sequence[str],
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    partition: str | None = None,
    run_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    from entropice_dagster.assets import all_assets

    return dg.materialize(
        all_assets,
        selection=list(selection),
        partition_key=partition,
        instance=instance,
        resources=resources,
        run_config={
            **(run_config or {}),
            "loggers": {"console": {"config": {"log_level": "ERROR"}}},
        },
    )


def run_scale(
    data_dir: Path,
    scale: float,
    workers: int,
    memory_limit: str = "6GB",
    levels: Sequence[str] = LEVELS,
    interval: float = 0.2,
    derivatives: dict[str, Any] | None = None,
    report: Callable[[str], None] = print,
) -> list[Stage]:
    """Run the three stages once on a LocalCluster of ``workers`` single-threaded processes.

    Parameters
    ----------
    data_dir : Path
        Data directory of the scale region (its tiles are written here if missing).
    scale : float
        Area relative to the sample region.
    workers : int
        Worker processes (one thread each).
    memory_limit : str
        Memory limit per worker (dask's: spill at 60 %, pause at 80 %, restart at 95 %).
    levels : sequence of str
        Grid levels of the terrain features.
    interval : float
        Seconds between RSS samples.
    derivatives : dict, optional
        Run config of ``terrain_derivatives`` (``TerrainDerivativesConfig``: which
        derivatives, TPI radii, VRM windows); default all 13 bands.
    report : callable
        Called with one line per step.

    Returns
    -------
    list of Stage
        tiles, derivatives, terrain features.
    """
    from entropice_dagster.resources import (
        ArcticDEMSourceResource,
        DaskResource,
        project_resources,
    )

    generate_sample_region(data_dir, scale=scale, progress=report)
    _remove_outputs(Layout(data_dir))
    aoi = ",".join(f"{v:g}" for v in region_bbox(scale))
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            memory_limit=memory_limit,
            processes=True,
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        dg.DagsterInstance.ephemeral() as instance,
    ):
        resources = project_resources(data_dir, aoi)
        resources["arcticdem_source"] = ArcticDEMSourceResource(client="offline")
        resources["dask"] = DaskResource(scheduler_address=cluster.scheduler_address)
        _materialize(["watermask"], resources, instance)
        for key in levels:
            _materialize(["grid_cells"], resources, instance, key)
        report(f"{workers} worker(s): watermask and grid cells of {', '.join(levels)} ready")
        report(f"derivatives config: {derivatives or 'the defaults (13 bands)'}")
        monitor = WorkerMonitor(client, interval)
        stages = []
        try:
            with monitor.stage(Stage("tiles", workers)) as stage:
                _materialize(["arcticdem_tiles"], resources, instance)
            stages.append(stage)
            with monitor.stage(Stage("derivatives", workers)) as stage:
                done = _materialize(
                    ["terrain_derivatives"],
                    resources,
                    instance,
                    run_config={"ops": {"terrain_derivatives": {"config": derivatives or {}}}},
                )
            stages.append(stage)
            (materialization,) = done.asset_materializations_for_node("terrain_derivatives")
            height, width = materialization.metadata["shape"].value
            statistics = {"config": {"grid_levels": list(levels)}}
            with (
                monitor.stage(Stage("terrain features", workers)) as stage,
                get_task_stream(client=client) as tasks,
            ):
                _materialize(
                    ["terrain_statistics"],
                    resources,
                    instance,
                    run_config={"ops": {"terrain_statistics": statistics}},
                )
                for key in levels:
                    _materialize(["terrain_features"], resources, instance, key)
            stage.windows = sum(str(t["key"]).startswith("_aggregate_window") for t in tasks.data)
            stages.append(stage)
        finally:
            monitor.close()
        for stage in stages:
            stage.pixels = int(height) * int(width)
            peaks = ", ".join(
                f"{format_bytes(p)} ({format_bytes(stage.managed.get(a, 0))} task results)"
                for a, p in stage.peak.items()
            )
            report(
                f"{workers} worker(s): {stage.name} {stage.seconds:.1f} s, {stage.pixels:,} px, "
                f"worker peaks {peaks}, main {format_bytes(stage.main_peak)}, spilled "
                f"{format_bytes(stage.spilled)}, lost {stage.lost}, windows {stage.windows}"
            )
    return stages


def table(runs: dict[int, list[Stage]], scale: float, memory_limit: str) -> Table:
    """The measurements as a rich table, a row per stage and worker count."""
    out = Table(
        title=f"Scale run: {scale:g}x the sample region, workers of {memory_limit} "
        "(one thread each)"
    )
    for name in ("stage", "workers", "wall s", "Mpx/s", "peak RSS per worker", "limit",
                 "main process peak", "spilled", "workers lost", "windows", "2w / 1w"):  # fmt: skip
        out.add_column(name, justify="left" if name == "stage" else "right")
    limit = parse_bytes(memory_limit)
    one = {s.name: s for s in runs.get(1, [])}
    for workers in sorted(runs, reverse=True):
        for stage in runs[workers]:
            peaks = sorted(stage.peak.values(), reverse=True)
            ratio = (
                f"{stage.pixels_per_second / one[stage.name].pixels_per_second:.2f}"
                if workers == 2 and stage.name in one
                else ""
            )
            out.add_row(
                stage.name,
                str(workers),
                f"{stage.seconds:.1f}",
                f"{stage.pixels_per_second / 1e6:.2f}",
                ", ".join(format_bytes(p) for p in peaks),
                format_bytes(limit),
                format_bytes(stage.main_peak),
                format_bytes(stage.spilled),
                str(stage.lost),
                str(stage.windows) if stage.name == "terrain features" else "",
                ratio,
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="16", help="area relative to the sample (16, 1/16)")
    parser.add_argument("--data-dir", type=Path, required=True, help="the region's data dir")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--memory-limit", default="6GB", help="per worker")
    parser.add_argument("--levels", nargs="+", default=list(LEVELS))
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--clean", action="store_true", help="remove the outputs at the end")
    parser.add_argument("--derivatives", nargs="+", help="derivative groups (default all)")
    parser.add_argument("--tpi-radii", type=float, nargs="+", help="TPI radii in m")
    parser.add_argument("--vrm-windows", type=int, nargs="+", help="VRM windows in pixels")
    args = parser.parse_args()
    chosen = {
        "derivatives": args.derivatives,
        "tpi_radii_m": args.tpi_radii,
        "vrm_windows": args.vrm_windows,
    }
    derivatives = {key: value for key, value in chosen.items() if value is not None}
    scale = float(Fraction(args.scale))
    console = Console(width=160)
    runs = {}
    for workers in args.workers:
        runs[workers] = run_scale(
            args.data_dir, scale, workers, args.memory_limit, args.levels, args.interval,
            derivatives, report=console.print,
        )  # fmt: skip
    console.print(table(runs, scale, args.memory_limit))
    if args.clean:
        _remove_outputs(Layout(args.data_dir))


if __name__ == "__main__":
    main()
