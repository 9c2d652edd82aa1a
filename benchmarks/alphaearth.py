"""AlphaEarth: the COG path vs exactextract on the sample region, and the Earth Engine plan for
the Arctic north of 50 N.

Part 1 writes the sample region's embedding COGs (seed 42, 800 m pixels, 2 UTM zones + a
sliver, 64 int8 bands) and times, per grid level over the sample box:

- ``cog 1 yr``: :class:`CogClient` on one year, cell-to-pixel maps included;
- ``cog 6 yr``: all six years (maps built once, reused for every band and year);
- ``exactextract``: ``exact_extract(file, cells, ["sum", "count"])`` on one year's dequantised
  float32 GeoTIFFs (all 64 bands; the writing of those files is not timed), with the
  same per-file combination; ``--ee-levels`` limits the levels it runs on.

and a last row, every level in one pass (``CogClient.embeddings_levels``, what the
``alphaearth_statistics`` asset runs), against exactextract on every level (the sum of the rows
above) and the per-level results (max |diff|).

Part 2 clusters the centres of every cell with its centre north of 50 N (ocean included, so
an upper bound of what ``grid_cells`` keeps) with the default :class:`BatchConfig` and prints
clusters, requests per year and the wall time of one year at the default concurrency, with an
*assumed* latency per request (``--latency``, default 30 s: not measured, this machine has no
Earth Engine access; a reduceRegions over ~1000 cells at 10 m typically takes tens of seconds).

Run: ``.venv/bin/python benchmarks/alphaearth.py [--levels h3_5 healpix_9] [--ee-levels ...]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import rasterio
import shapely
from exactextract import exact_extract
from h3.api import numpy_int as h3_int
from rich.console import Console
from rich.table import Table

from entropice_core.config import DEFAULT_GRID_LEVELS, SAMPLE_REGION_BBOX, AreaOfInterest, GridSpec
from entropice_core.ingest import alphaearth as ae
from entropice_core.sample import alphaearth as sample_ae
from entropice_core.sample.world import build_world
from entropice_core.spatial.grids import cell_ids, grid_cells

NO_WATER = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)


def dequantised_files(root: Path, year: int, out: Path) -> list[Path]:
    """One year's COGs as float32 GeoTIFFs (nodata -9999) for exactextract."""
    files = []
    for path in ae.find_cogs(root, year):
        with rasterio.open(path) as src:
            v = ae.dequantize(src.read(), np.float32)
            profile = {k: src.profile[k] for k in ("width", "height", "count", "crs", "transform")}
        target = out / f"{path.stem}.tif"
        with rasterio.open(
            target, "w", driver="GTiff", dtype="float32", nodata=-9999.0, tiled=True, **profile
        ) as dst:
            dst.write(np.nan_to_num(v, nan=-9999.0))
        files.append(target)
    return files


def exactextract_means(files: list[Path], cells: gpd.GeoDataFrame) -> np.ndarray:
    total, count = np.zeros((len(cells), 64)), np.zeros(len(cells))
    polys = cells[["geometry"]].assign(i=np.arange(len(cells)))
    for path in files:
        with rasterio.open(path) as src:
            crs = src.crs
        projected = polys.assign(geometry=polys.geometry.segmentize(0.01).to_crs(crs))
        out = exact_extract(str(path), projected, ["sum", "count"], output="pandas",
                            include_cols=["i"])  # fmt: skip
        i = out["i"].to_numpy()
        for b in range(64):
            total[i, b] += np.nan_to_num(out[f"band_{b + 1}_sum"].to_numpy())
        count[i] += out["band_1_count"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count[:, None]


def sample_table(levels: list[str], ee_levels: list[str], console: Console) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "alphaearth"
        started = time.perf_counter()
        sample_ae.write_embeddings(build_world(42), root)
        console.print(f"sample COGs written in {time.perf_counter() - started:.1f} s "
                      "(latent world included)")  # fmt: skip
        year = sample_ae.YEARS[0]
        flat = dequantised_files(root, year, Path(tmp))
        table = Table(
            title=f"COG path vs exactextract, 64 bands, sample region "
            f"({sample_ae.PIXEL_SIZE:.0f} m pixels)"
        )
        for col in ("level", "cells", "cog 1 yr s", "cog 6 yr s", "exactextract 1 yr s",
                    "speed-up", "max |diff|"):  # fmt: skip
            table.add_column(col, justify="right")
        box = AreaOfInterest.from_bbox(",".join(str(v) for v in SAMPLE_REGION_BBOX))
        warm = grid_cells(GridSpec.from_key("h3_4"), box, NO_WATER).iloc[:5]
        ae.CogClient(root).embeddings(warm, GridSpec.from_key("h3_4"), [year])  # compile kernels
        every, per_level, ee_total = {}, {}, 0.0
        for key in levels:
            spec = GridSpec.from_key(key)
            cells = every[key] = grid_cells(spec, box, NO_WATER)
            t0 = time.perf_counter()
            one = per_level[key] = ae.CogClient(root).embeddings(cells, spec, [year]).dataset
            t1 = time.perf_counter()
            ae.CogClient(root).embeddings(cells, spec, list(sample_ae.YEARS))
            t2 = time.perf_counter()
            ee_s, speed, diff = "-", "-", "-"
            if key in ee_levels:
                t3 = time.perf_counter()
                expected = exactextract_means(flat, cells)
                ee_time = time.perf_counter() - t3
                ee_total += ee_time
                mine = np.stack([one[b].sel(year=year).to_numpy() for b in ae.BANDS], axis=1)
                ee_s, speed = f"{ee_time:.2f}", f"{ee_time / (t1 - t0):.1f}x"
                diff = f"{np.nanmax(np.abs(mine - expected)):.1e}"
            table.add_row(key, str(len(cells)), f"{t1 - t0:.2f}", f"{t2 - t1:.2f}", ee_s,
                          speed, diff)  # fmt: skip
        t0 = time.perf_counter()
        together = ae.CogClient(root).embeddings_levels(every, [year])
        t1 = time.perf_counter()
        ae.CogClient(root).embeddings_levels(every, list(sample_ae.YEARS))
        t2 = time.perf_counter()
        diff = max(
            float(np.nanmax(np.abs(together[k].dataset[b] - per_level[k][b])))
            for k in every
            for b in (*ae.BANDS, "valid_fraction")
        )
        all_ee = set(levels) <= set(ee_levels)
        table.add_row(
            f"all {len(levels)} levels, one pass",
            str(sum(len(c) for c in every.values())),
            f"{t1 - t0:.2f}",
            f"{t2 - t1:.2f}",
            f"{ee_total:.2f}" if all_ee else "-",
            f"{ee_total / (t1 - t0):.1f}x" if all_ee else "-",
            f"{diff:.1e} (vs per level)",
            end_section=False,
        )
        console.print(table)


def arctic_centres(spec: GridSpec) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:6931 centres and ids of every cell with its centre north of 50 N."""
    ids = cell_ids(spec, AreaOfInterest.north_of(50.0))
    if spec.grid == "h3":
        latlng = np.array([h3_int.cell_to_latlng(int(c)) for c in ids])
        lat, lon = latlng[:, 0], latlng[:, 1]
    else:
        import healpix_geo.nested as healpix

        lon, lat = healpix.healpix_to_lonlat(ids, spec.level, ellipsoid="sphere")
    tr = pyproj.Transformer.from_crs("EPSG:4326", ae.CLUSTER_CRS, always_xy=True)
    return np.column_stack(tr.transform(lon, lat)), ids


def plan_table(levels: list[str], latency_s: float, console: Console) -> None:
    batch, requests = ae.BatchConfig(), ae.RequestConfig()
    table = Table(
        title=f"Earth Engine plan, Arctic north of 50 N (max {batch.max_cells} cells, "
        f"{batch.max_extent_km:g} km; {requests.concurrency} concurrent; {latency_s:g} s/request "
        "assumed)"
    )
    for col in ("level", "cells", "clusters = requests/yr", "median cells", "1 yr wall h",
                "2017-2024 wall h", "clustering s"):  # fmt: skip
        table.add_column(col, justify="right")
    for key in levels:
        spec = GridSpec.from_key(key)
        xy, ids = arctic_centres(spec)
        t0 = time.perf_counter()
        labels = ae.cluster_points(xy, ids, batch)
        took = time.perf_counter() - t0
        k = int(labels.max()) + 1
        sizes = np.bincount(labels)
        waves = -(-k // requests.concurrency)
        hours = waves * latency_s / 3600
        table.add_row(key, f"{len(ids):,}", f"{k:,}", f"{int(np.median(sizes))}",
                      f"{hours:.2f}", f"{8 * hours:.1f}", f"{took:.1f}")  # fmt: skip
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="+", default=list(DEFAULT_GRID_LEVELS))
    parser.add_argument("--ee-levels", nargs="+", default=list(DEFAULT_GRID_LEVELS))
    parser.add_argument("--plan-levels", nargs="+", default=list(DEFAULT_GRID_LEVELS))
    parser.add_argument("--latency", type=float, default=30.0)
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument(
        "--pixel-size",
        type=float,
        default=sample_ae.PIXEL_SIZE,
        help="Pixel size (m) of the sample COGs written: the sample's 800 m by default; "
        "smaller sizes show the per-pixel costs of the real 10 m files (200 m: 16x the pixels).",
    )
    args = parser.parse_args()
    console = Console()
    sample_ae.PIXEL_SIZE = args.pixel_size
    if not args.skip_sample:
        sample_table(args.levels, args.ee_levels, console)
    plan_table(args.plan_levels, args.latency, console)


if __name__ == "__main__":
    main()
