"""Terrain derivatives: this module (tiled, halo, numpy) vs xarray-spatial's equivalents.

Builds one EPSG:3413 float32 DEM at 32 m (smooth relief plus texture, 2 % nodata) of
``--size`` x ``--size`` pixels. Each derivative group is timed alone, then all of them in one
run. Ours runs tile by tile on dask's threaded scheduler and reduces each output tile to a
sum, so memory stays a few tiles; xarray-spatial runs on the in-memory numpy array, as a user
would call it. Where xarray-spatial has no function the row names the composition timed:
TPI at a radius is its NaN-aware disk convolution (the one its ``landforms`` uses), VRM is its
slope and aspect plus three box convolutions and a count. Slow baselines (TPI, VRM) run on a
``--crop`` x ``--crop`` corner; Mpx/s stay comparable. "per variable" divides each side's
time by the variables it produces (ours: e.g. three curvatures; xarray-spatial: total only).

Run: ``.venv/bin/python benchmarks/terrain.py [--size 8000] [--crop 2000]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import dask
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import xrspatial
from rich.console import Console
from rich.table import Table
from scipy import ndimage
from xrspatial.convolution import convolution_2d, custom_kernel
from xrspatial.terrain_metrics import _compute_tpi_at_radius

from entropice_core.terrain.derivatives import GROUPS, TerrainConfig, terrain_derivatives

RES = 32.0


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def synthetic_dem(size: int) -> xr.DataArray:
    rng = np.random.default_rng(0)
    coarse = ndimage.zoom(rng.normal(size=(size // 64 + 2, size // 64 + 2)), 64, order=3)
    z = (coarse[:size, :size] * 150 + 400 + rng.normal(scale=0.5, size=(size, size))).astype(
        np.float32
    )
    z[rng.random((size, size)) < 0.02] = np.nan
    coords = {"y": 1e6 - RES * (np.arange(size) + 0.5), "x": -2e6 + RES * (np.arange(size) + 0.5)}
    return xr.DataArray(z, dims=("y", "x"), coords=coords, name="dem").rio.write_crs(3413)


def ours(dem: xr.DataArray, config: TerrainConfig) -> float:
    """Seconds to compute the configured derivatives tile by tile (each tile reduced)."""
    rasters = terrain_derivatives(dem, config)
    sums = [rasters[v].data.sum() for v in rasters.data_vars]
    return timed(lambda: dask.compute(*sums, scheduler="threads"))


def xrs_vrm(dem: xr.DataArray, window: int) -> None:
    slope = np.radians(xrspatial.slope(dem))
    aspect = xrspatial.aspect(dem)
    flat = aspect == -1
    aspect = np.radians(aspect.where(~flat, 0))
    box = custom_kernel(np.ones((window, window)))
    parts = [np.sin(slope) * np.sin(aspect), np.sin(slope) * np.cos(aspect), np.cos(slope)]
    sums = [convolution_2d(p.fillna(0), box) for p in parts]
    count = convolution_2d(slope.notnull().astype(np.float32), box)
    _ = 1 - np.sqrt(sums[0] ** 2 + sums[1] ** 2 + sums[2] ** 2) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000, help="DEM edge in pixels")
    parser.add_argument("--crop", type=int, default=2000, help="edge for slow baselines")
    args = parser.parse_args()
    config = TerrainConfig()
    dem = synthetic_dem(args.size)
    crop = dem[: min(args.crop, args.size), : min(args.crop, args.size)]
    pixels, crop_pixels = dem.size, crop.size
    # Compile xarray-spatial's numba kernels before timing.
    small = dem[:64, :64]
    for fn in (xrspatial.slope, xrspatial.aspect, xrspatial.curvature, xrspatial.tri):
        fn(small)
    xrspatial.roughness(small), xrspatial.northness(small), xrspatial.eastness(small)
    convolution_2d(small, custom_kernel(np.ones((3, 3))))

    # (what is timed, the call, on the crop?, variables it gives)
    baselines: dict[str, tuple[str, Callable[[xr.DataArray], object], bool, int]] = {
        "slope": ("slope", xrspatial.slope, False, 1),
        "aspect": (
            "aspect + northness + eastness",
            lambda d: (xrspatial.aspect(d), xrspatial.northness(d), xrspatial.eastness(d)),
            False,
            3,
        ),
        "curvature": ("curvature (total only)", xrspatial.curvature, False, 1),
        "tri": ("tri", xrspatial.tri, False, 1),
        "roughness": ("roughness", xrspatial.roughness, False, 1),
        "tpi": (
            "disk TPI per radius (landforms' kernel)",
            lambda d: [_compute_tpi_at_radius(d, int(r // RES)) for r in config.tpi_radii_m],
            True,
            len(config.tpi_radii_m),
        ),
        "vrm": (
            "slope, aspect, 4 box convolutions per window",
            lambda d: [xrs_vrm(d, w) for w in config.vrm_windows],
            True,
            len(config.vrm_windows),
        ),
    }
    table = Table(
        title=f"Terrain derivatives on a {args.size} x {args.size} DEM at 32 m (CPU, "
        f"{config.chunk} px tiles)"
    )
    for column in (
        "derivatives",
        "ours s",
        "ours Mpx/s",
        "xarray-spatial equivalent",
        "xrs s",
        "xrs Mpx/s",
        "ours / xrs speed",
        "per variable",
    ):
        table.add_column(column, justify="right")
    total_ours = total_theirs = 0.0
    for group in GROUPS:
        group_config = config.model_copy(update={"derivatives": (group,)})
        seconds = ours(dem, group_config)
        label, baseline, on_crop, their_variables = baselines[group]
        data = crop if on_crop else dem
        n = crop_pixels if on_crop else pixels
        theirs = timed(lambda b=baseline, d=data: b(d))
        ours_rate, theirs_rate = pixels / seconds / 1e6, n / theirs / 1e6
        total_ours += seconds
        total_theirs += pixels / (theirs_rate * 1e6)
        names = ", ".join(group_config.names())
        table.add_row(
            names,
            f"{seconds:.2f}",
            f"{ours_rate:.1f}",
            label + (f" ({args.crop}² crop)" if on_crop else ""),
            f"{theirs:.2f}",
            f"{theirs_rate:.1f}",
            f"{ours_rate / theirs_rate:.1f}x",
            f"{ours_rate * len(group_config.names()) / (theirs_rate * their_variables):.1f}x",
        )
    table.add_section()
    together = ours(dem, config)
    table.add_row(
        f"all {len(config.names())} in one run",
        f"{together:.2f}",
        f"{pixels / together / 1e6:.1f}",
        "sum of the rows above (crop rows scaled to the full DEM)",
        f"{total_theirs:.2f}",
        f"{pixels / total_theirs / 1e6:.1f}",
        f"{total_theirs / together:.1f}x",
        "",
    )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
