"""Every GPU path against its CPU twin on the same data: agreement and speed.

Rows (each: the CPU twin, then the GPU path on the same inputs):

- terrain derivatives: ``derivatives_array`` with TerrainConfig(backend="numpy") (numba
  kernels and numpy) vs backend="cupy" on one padded DEM tile; max abs and rel difference
  over every variable (NaN where both are NaN counts as equal).
- aggregation (cupy): the exact multi-level pass (``spatial.levels.aggregate_levels``) of a
  synthetic projected raster (``--agg-size`` pixels square, two bands with nodata) on four
  grid levels, the compiled CPU engine vs device "cuda" (the sort-based engine on cupy); max
  abs and rel difference over every statistic (order statistics should agree exactly).
- eSPA (torch), eSPA (cupy): ESPAClassifier on the array-API backends vs numpy (float64,
  one restart, the same seed): max abs difference of predict_proba, label agreement.
- XGBoost device="cuda" vs "cpu" (hist, the same seed): label agreement, max abs proba diff.
- cuML random forest and KNN (training.MODELS with device "cuda") vs scikit-learn: label
  agreement (different algorithms: agreement and each one's accuracy, not bit equality).
- inference batches: the XGBoost model's ``predict_batch`` (predict_cells' unit of work) in
  batches sized by ``batch_size_for(--gpu-memory-gb)`` on cuda vs cpu; max abs proba diff and
  the peak of cupy's memory pool against the budget.

A row whose GPU library or device is missing is printed as skipped, naming what is missing,
and the script exits 0; ``--cpu-only`` runs only the CPU twins (the data preparation and the
CPU timings), which is what the CPU test suite checks. Exit 1 only if a GPU path that ran
disagrees beyond its tolerance or fails.

Run: ``.venv/bin/python benchmarks/gpu_check.py [--cpu-only] [--tile 1024] [--rows 20000]
[--gpu-memory-gb 2]`` (on a GPU machine: ``uv sync --extra gpu --extra dev`` first).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from entropice_core.arrays import to_host
from entropice_core.ml.espa import ESPAClassifier
from entropice_core.ml.inference import batch_size_for, predict_batch
from entropice_core.ml.training import MODELS
from entropice_core.terrain.derivatives import TerrainConfig, derivatives_array


class Missing(Exception):
    """The GPU path cannot run here: the message names what is missing."""


@dataclass
class Row:
    path: str
    cpu_s: float | None = None
    gpu_s: float | None = None
    agreement: str = ""
    status: str = "ok"
    ok: bool = True


Check = Callable[[argparse.Namespace, bool, Row], None]


def gpu_available() -> str | None:
    """None if cupy sees a CUDA device; else what is missing."""
    try:
        import cupy
    except ImportError:
        return "cupy is not installed (uv sync --extra gpu)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # no driver, no device: cupy raises its runtime error
        return f"no CUDA device ({type(err).__name__}: {err})"
    return None if count > 0 else "no CUDA device"


def need(module: str, extra: str = "gpu") -> Any:
    try:
        return __import__(module)
    except ImportError as err:
        raise Missing(f"{module} is not installed (uv sync --extra {extra})") from err


def need_torch_cuda() -> None:
    torch = need("torch")
    if not torch.cuda.is_available():
        raise Missing("torch has no CUDA device (torch.cuda.is_available() is False)")


def need_xgboost_cuda() -> None:
    xgboost = need("xgboost", "cpu or gpu")
    if not xgboost.build_info().get("USE_CUDA"):
        raise Missing("xgboost is a CPU build (xgboost-cpu); the gpu extra has the CUDA one")


def timed(call: Callable[[], Any], sync: Callable[[], None] = lambda: None) -> tuple[Any, float]:
    """Result and wall time of ``call`` (after a first untimed call: compilation, warm-up)."""
    call()
    sync()
    started = time.perf_counter()
    result = call()
    sync()
    return result, time.perf_counter() - started


def cuda_sync() -> None:
    import cupy

    cupy.cuda.Device().synchronize()


def differences(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Max abs and max rel difference, NaN where both are NaN counting as equal."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both = np.isnan(a) & np.isnan(b)
    if (np.isnan(a) != np.isnan(b)).any():
        return float("inf"), float("inf")
    diff = np.where(both, 0.0, np.abs(a - b))
    scale = np.where(both, 1.0, np.maximum(np.abs(a), 1e-6))
    return float(diff.max(initial=0.0)), float((diff / scale).max(initial=0.0))


# --- data ---------------------------------------------------------------------------------


def dem_tile(size: int, halo: int, seed: int = 0) -> np.ndarray:
    """A rough synthetic DEM tile (m) with a halo, a nodata hole and a NaN edge."""
    rng = np.random.default_rng(seed)
    n = size + 2 * halo
    z = rng.normal(size=(n, n)).cumsum(0).cumsum(1) * 0.02 + 300.0
    z[n // 3 : n // 3 + 20, n // 4 : n // 4 + 40] = np.nan
    z[:, :halo] = np.nan
    return z.astype(np.float32)


def classification(rows: int, features: int = 40, seed: int = 0) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        2 * rows, n_features=features, n_informative=8, n_redundant=8, random_state=seed
    )
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    return X[:rows], y[:rows], X[rows:], y[rows:]


# --- rows ---------------------------------------------------------------------------------


def terrain(args: argparse.Namespace, gpu: bool, row: Row) -> None:
    config = TerrainConfig(chunk=args.tile)
    dx = dy = 32.0
    halo = config.halo(dx, dy)
    z = dem_tile(args.tile, halo)
    cpu, row.cpu_s = timed(lambda: derivatives_array(z, halo, dx, dy, config))
    if not gpu:
        return
    on_gpu = config.model_copy(update={"backend": "cupy"})
    got, row.gpu_s = timed(lambda: derivatives_array(z, halo, dx, dy, on_gpu), cuda_sync)
    worst = {name: differences(cpu[i], got[i]) for i, name in enumerate(config.names())}
    name, (abs_, _) = max(worst.items(), key=lambda item: item[1][0])
    rel = max(r for _, r in worst.values())
    row.agreement = f"max abs {abs_:.2e} ({name}), max rel {rel:.2e}"
    # float32 on both sides, other operation orders: a few ulps of the values' scale
    row.ok = all(a < 1e-3 for a, _ in worst.values())


AGGREGATION_LEVELS = ("h3_5", "h3_6", "healpix_8", "healpix_10")


def aggregation_case(size: int, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """A 100 m EPSG:3413 raster of ``size`` x ``size`` pixels near 68 N, 134 W (relief and a
    gamma band, 5 % nodata) and the cells of :data:`AGGREGATION_LEVELS` over it."""
    import geopandas as gpd
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import shapely
    import xarray as xr
    from pyproj import Transformer

    from entropice_core.config import AreaOfInterest, GridSpec
    from entropice_core.spatial.grids import grid_cells

    rng = np.random.default_rng(seed)
    res = 100.0
    cx, cy = Transformer.from_crs(4326, 3413, always_xy=True).transform(-134.0, 68.0)
    yy, xx = np.mgrid[0:size, 0:size]
    bands = {
        "elevation": 300
        + 200 * np.sin(xx / 97.0) * np.cos(yy / 131.0)
        + rng.normal(0, 20, yy.shape),
        "slope": rng.gamma(2.0, 3.0, yy.shape),
    }
    data = {}
    for name, values in bands.items():
        values = values.astype(np.float32)
        values[rng.random(values.shape) < 0.05] = np.nan
        data[name] = (("y", "x"), values)
    coords = {
        "y": cy + res * (size / 2 - np.arange(size) - 0.5),
        "x": cx + res * (np.arange(size) - size / 2 + 0.5),
    }
    raster = xr.Dataset(data, coords=coords).rio.write_crs(3413)
    west, south, east, north = raster.rio.transform_bounds(4326, densify_pts=50)
    aoi = AreaOfInterest.from_bbox((west, south, east, north))
    no_water = gpd.GeoDataFrame(
        {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
        geometry=[shapely.Polygon()],
        crs="EPSG:4326",
    )
    levels = {key: grid_cells(GridSpec.from_key(key), aoi, no_water) for key in AGGREGATION_LEVELS}
    return raster, levels


def aggregation(args: argparse.Namespace, gpu: bool, row: Row) -> None:
    from entropice_core.spatial.aggregators import AggregationConfig
    from entropice_core.spatial.levels import aggregate_levels, build_level_map
    from entropice_core.spatial.pixelmap import RasterGrid

    raster, levels = aggregation_case(args.agg_size)
    config = AggregationConfig(
        statistics=("mean", "std", "min", "max", "median", "quantile", "valid_fraction"),
        quantiles=(0.25, 0.75),
    )
    level_map = build_level_map(levels, RasterGrid.from_xarray(raster))
    row.path += f" ({args.agg_size}² px, {len(levels)} levels)"

    def run(device: str) -> dict[str, Any]:
        return aggregate_levels(raster, levels, config, level_map=level_map, device=device)

    cpu, row.cpu_s = timed(lambda: run("cpu"))
    if not gpu:
        return
    need("cupy")
    got, row.gpu_s = timed(lambda: run("cuda"), cuda_sync)
    worst = {
        f"{key} {name}": differences(cpu[key][name].to_numpy(), got[key][name].to_numpy())
        for key in levels
        for name in cpu[key].data_vars
    }
    name, (abs_, _) = max(worst.items(), key=lambda item: item[1][0])
    rel = max(r for _, r in worst.values())
    order = [a for n, (a, _) in worst.items() if n.rpartition("_")[2] in ORDER_STATISTICS]
    row.agreement = f"max abs {abs_:.2e} ({name}), max rel {rel:.2e}, order stats {max(order):.1e}"
    # moments in float64 in other summation orders; order statistics are the same values
    row.ok = rel < 1e-9 and max(order) == 0.0


ORDER_STATISTICS = ("min", "max", "median", "quantile")


def espa(backend: str) -> Check:
    def run(args: argparse.Namespace, gpu: bool, row: Row) -> None:
        X, y, X_test, _ = classification(args.espa_rows)
        params = {"n_clusters": 20, "n_init": 1, "random_state": 0, "eps_W": 0.1}
        cpu_model = ESPAClassifier(**params)
        _, row.cpu_s = timed(lambda: cpu_model.fit(X, y))
        expected = cpu_model.predict_proba(X_test)
        if not gpu:
            return
        if backend == "torch":
            need_torch_cuda()
        else:
            need("cupy")
        gpu_model = ESPAClassifier(**params, backend=backend, device="cuda")
        sync = cuda_sync if backend == "cupy" else _torch_sync
        _, row.gpu_s = timed(lambda: gpu_model.fit(X, y), sync)
        got = gpu_model.predict_proba(X_test)
        abs_, _ = differences(expected, got)
        same = float((expected.argmax(1) == got.argmax(1)).mean())
        row.agreement = f"max abs proba {abs_:.2e}, labels {same:.4f}"
        row.ok = same >= 0.99

    return run


def _torch_sync() -> None:
    import torch

    torch.cuda.synchronize()


def model_twin(name: str) -> Check:
    """A model of training.MODELS on device cpu vs cuda: label agreement and accuracies."""

    def run(args: argparse.Namespace, gpu: bool, row: Row) -> None:
        X, y, X_test, y_test = classification(args.rows)
        if name == "xgboost":
            need("xgboost", "cpu or gpu")
        cpu_model = MODELS[name].build("cpu", 0)
        _, row.cpu_s = timed(lambda: cpu_model.fit(X, y))
        cpu_proba = np.asarray(cpu_model.predict_proba(X_test))
        if not gpu:
            return
        if name == "xgboost":
            need_xgboost_cuda()
        else:
            need("cuml")
        gpu_model = MODELS[name].build("cuda", 0)
        _, row.gpu_s = timed(lambda: gpu_model.fit(X, y), cuda_sync)
        gpu_proba = to_host(gpu_model.predict_proba(X_test))
        same = float((cpu_proba.argmax(1) == gpu_proba.argmax(1)).mean())
        acc = [float((p.argmax(1) == y_test).mean()) for p in (cpu_proba, gpu_proba)]
        abs_, _ = differences(cpu_proba, gpu_proba)
        row.agreement = (
            f"labels {same:.4f}, max abs proba {abs_:.2e}, accuracy cpu {acc[0]:.3f} / "
            f"gpu {acc[1]:.3f}"
        )
        # the same algorithm (xgboost hist) agrees closely; cuML's RF and KNN are other
        # implementations: their accuracy must match, not every label
        row.ok = same >= 0.99 if name == "xgboost" else abs(acc[0] - acc[1]) < 0.03

    return run


def inference(args: argparse.Namespace, gpu: bool, row: Row) -> None:
    X, y, X_test, _ = classification(args.rows)
    need("xgboost", "cpu or gpu")
    budget = int(args.gpu_memory_gb * 2**30)
    batch = batch_size_for(budget, X.shape[1])
    names = [f"f{i}" for i in range(X.shape[1])]
    cells = np.concatenate([X_test] * max(1, args.inference_rows // len(X_test)))
    ok = np.ones((len(cells), 1), dtype=bool)
    row.path += f" ({batch:,} cells per batch, {args.gpu_memory_gb:g} GiB budget)"

    def predict(model: Any, device: str) -> np.ndarray:
        parts = [
            predict_batch(model, cells[s : s + batch, None, :], ok[s : s + batch], names, device)
            for s in range(0, len(cells), batch)
        ]
        return np.concatenate(parts)

    cpu_model = MODELS["xgboost"].build("cpu", 0).fit(X, y)
    expected, row.cpu_s = timed(lambda: predict(cpu_model, "cpu"))
    if not gpu:
        return
    need_xgboost_cuda()
    import cupy

    gpu_model = MODELS["xgboost"].build("cuda", 0).fit(X, y)
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    got, row.gpu_s = timed(lambda: predict(gpu_model, "cuda"), cuda_sync)
    peak = pool.total_bytes()
    abs_, _ = differences(expected, got)
    row.agreement = f"max abs proba {abs_:.2e}, cupy pool {peak / 2**20:,.0f} MiB of budget"
    row.ok = abs_ < 1e-4 and peak <= budget


#: (row name, check): each check fills in its row, CPU twin first.
ROWS: list[tuple[str, Check]] = [
    ("aggregation (cupy)", aggregation),
    ("terrain derivatives (cupy)", terrain),
    ("eSPA (torch)", espa("torch")),
    ("eSPA (cupy)", espa("cupy")),
    ('XGBoost device="cuda"', model_twin("xgboost")),
    ("cuML random forest", model_twin("rf")),
    ("cuML KNN", model_twin("knn")),
    ("inference batches", inference),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-only", action="store_true", help="run the CPU twins only")
    parser.add_argument("--tile", type=int, default=1024, help="DEM tile edge (pixels)")
    parser.add_argument(
        "--agg-size", type=int, default=2048, help="aggregation raster edge (pixels)"
    )
    parser.add_argument("--rows", type=int, default=20_000, help="training rows of the models")
    parser.add_argument("--espa-rows", type=int, default=5_000, help="training rows of eSPA")
    parser.add_argument("--inference-rows", type=int, default=200_000, help="cells predicted")
    parser.add_argument(
        "--gpu-memory-gb", type=float, default=2.0, help="GPU memory budget of the batches"
    )
    args = parser.parse_args(argv)
    console = Console(width=160)
    missing = "--cpu-only" if args.cpu_only else gpu_available()
    gpu = missing is None
    console.print("GPU: " + ("available" if gpu else f"not used ({missing}): GPU rows are skipped"))
    rows: list[Row] = []
    for name, check in ROWS:
        row = Row(name)
        try:
            check(args, gpu, row)
            if not gpu:
                row.status = f"skipped: {missing}"
        except Missing as why:
            row.status = f"skipped: {why}"
        except Exception as err:  # a path that exists and fails is a finding, not a crash
            row.status, row.ok = f"failed: {type(err).__name__}: {err}", False
        rows.append(row)
    table = Table(title="GPU paths against their CPU twins")
    for column in ("path", "CPU s", "GPU s", "speed-up", "agreement", "status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        speed = f"{row.cpu_s / row.gpu_s:.1f}x" if row.cpu_s and row.gpu_s else ""
        status = row.status if row.ok else f"[red]{row.status} (disagrees)[/red]"
        table.add_row(
            row.path,
            f"{row.cpu_s:.3f}" if row.cpu_s is not None else "",
            f"{row.gpu_s:.3f}" if row.gpu_s is not None else "",
            speed,
            row.agreement,
            status,
        )
    console.print(table)
    for row in rows:
        if row.status.startswith("skipped"):
            print(f"SKIPPED {row.path}: {row.status.removeprefix('skipped: ')}")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
