"""Generate the whole sample region: one latent world, every source written from it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from entropice_core.config import SAMPLE_REGION_BBOX
from entropice_core.ingest.arcticdem import tile_bounds, tile_of, tile_path, tiles_for
from entropice_core.ingest.era5 import era5_path
from entropice_core.io.atomic import atomic_path
from entropice_core.layout import Layout
from entropice_core.sample import alphaearth, arcticdem, darts, era5
from entropice_core.sample.world import (
    LATENT_RES,
    LatentWorld,
    build_world,
    polar_box,
    to_lonlat,
)

#: Bumped whenever the generative model changes, so old sample files are regenerated.
GENERATOR_VERSION = 2
MANIFEST_NAME = "sample-region.json"

Progress = Callable[[str], None]


def region_bbox(scale: float = 1.0) -> tuple[float, float, float, float]:
    """Return the lon/lat box of a synthetic region ``scale`` times the sample region's area.

    The box is about ``sqrt(scale)`` times as tall (in latitude) and as wide (in EPSG:3413
    metres) as the sample box, centred on its longitude. Larger regions keep its northern
    edge and grow south (north of it lies the Beaufort Sea, all nodata); smaller ones keep
    its centre. Its width is solved so that the projected area is ``scale`` times the
    sample's (to 0.1 %).

    Parameters
    ----------
    scale : float, default 1.0
        Area relative to the sample region (1: :data:`SAMPLE_REGION_BBOX` itself).

    Returns
    -------
    tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` in degrees.

    Raises
    ------
    ValueError
        If ``scale`` is not between 1/64 and 64.
    """
    if not 1 / 64 <= scale <= 64:
        raise ValueError(f"scale must be between 1/64 and 64, not {scale}")
    if scale == 1:
        return SAMPLE_REGION_BBOX
    minlon, minlat, maxlon, maxlat = SAMPLE_REGION_BBOX
    factor = float(np.sqrt(scale))
    centre_lon, span_lon = (minlon + maxlon) / 2, maxlon - minlon
    span_lat = (maxlat - minlat) * factor
    top = maxlat
    if scale < 1:
        centre = polar_box(SAMPLE_REGION_BBOX).centroid
        left, bottom, right, upper = tile_bounds(*tile_of(centre.x, centre.y))
        lon, lat = to_lonlat(np.array([(left + right) / 2]), np.array([(bottom + upper) / 2]))
        centre_lon, top = float(lon[0]), float(lat[0]) + span_lat / 2
    target = scale * polar_box(SAMPLE_REGION_BBOX).area
    low, high = span_lon * factor / 4, span_lon * factor * 2
    for _ in range(40):  # the area grows with the width: bisect
        half = (low + high) / 4
        box = (centre_lon - half, top - span_lat, centre_lon + half, top)
        low, high = (2 * half, high) if polar_box(box).area < target else (low, 2 * half)
    half = (low + high) / 4
    box = (centre_lon - half, top - span_lat, centre_lon + half, top)
    return (round(box[0], 3), round(box[1], 3), round(box[2], 3), round(box[3], 3))


@dataclass(frozen=True)
class SampleRegionFiles:
    """Paths the sample region consists of (all under ``<data_dir>/sources``).

    Attributes
    ----------
    seed : int
        Seed the files are generated from.
    manifest : Path
        ``sample-region.json``, present only while the set is complete.
    arcticdem : tuple of Path
        ArcticDEM-like COG tiles.
    era5 : tuple of Path
        ERA5-like monthly NetCDF files (one per month and step type).
    darts : tuple of Path
        DARTS-like footprints (GeoParquet, GeoPackage), coverage layer, training labels and
        image footprints.
    alphaearth : tuple of Path
        AlphaEarth-like embedding COGs (one per year and UTM zone).
    """

    seed: int
    manifest: Path
    arcticdem: tuple[Path, ...]
    era5: tuple[Path, ...]
    darts: tuple[Path, ...]
    alphaearth: tuple[Path, ...] = ()

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every data file (the manifest excluded)."""
        return self.arcticdem + self.era5 + self.darts + self.alphaearth


def _months(arctic_years: tuple[int, int]) -> list[tuple[int, int]]:
    """List (year, month) from October before the first Arctic year to September of the last."""
    first = np.datetime64(f"{arctic_years[0] - 1}-10", "M")
    last = np.datetime64(f"{arctic_years[1]}-09", "M")
    return [
        (int(m.astype("datetime64[Y]").astype(int) + 1970), int(m.astype(int) % 12 + 1))
        for m in np.arange(first, last + np.timedelta64(1, "M"))
    ]


def sample_region_files(data_dir: Path, seed: int = 42, scale: float = 1.0) -> SampleRegionFiles:
    """List where :func:`generate_sample_region` puts each file; nothing is read or written.

    Parameters
    ----------
    data_dir : Path
        Root of the storage hierarchy (``ENTROPICE_DATA_DIR``).
    seed : int, default 42
        Seed of the latent world.
    scale : float, default 1.0
        Area relative to the sample region (:func:`region_bbox`); any other than 1 lists the
        ArcticDEM tiles only.

    Returns
    -------
    SampleRegionFiles
        The manifest and data file paths under ``<data_dir>/sources``.
    """
    layout = Layout(Path(data_dir))
    bbox = region_bbox(scale)
    tiles = tiles_for(bbox)
    dem = tuple(tile_path(layout.source("arcticdem"), r, c) for r, c in tiles)
    if scale != 1:
        return SampleRegionFiles(
            seed=seed, manifest=layout.sources / MANIFEST_NAME, arcticdem=dem, era5=(), darts=()
        )
    return SampleRegionFiles(
        seed=seed,
        manifest=layout.sources / MANIFEST_NAME,
        arcticdem=dem,
        era5=tuple(
            era5_path(layout.source("era5"), year, month, step)
            for year, month in _months(era5.ARCTIC_YEARS)
            for step in era5.STEP_TYPES
        ),
        darts=(
            *darts.footprint_paths(layout.source("darts")),
            darts.coverage_path(layout.source("darts")),
            *darts.training_paths(layout.source("darts") / "training-labels"),
        ),
        alphaearth=alphaearth.sample_cog_paths(layout.source("alphaearth"), SAMPLE_REGION_BBOX),
    )


def _is_complete(files: SampleRegionFiles, scale: float) -> bool:
    """Tell whether the manifest names this seed, scale and version and every file exists."""
    if not files.manifest.exists():
        return False
    manifest = json.loads(files.manifest.read_text())
    return (
        manifest.get("seed") == files.seed
        and manifest.get("scale", 1.0) == scale
        and manifest.get("generator_version") == GENERATOR_VERSION
        and all(p.exists() for p in files.paths)
    )


def _write_era5_darts_alphaearth(world: LatentWorld, layout: Layout, seed: int) -> list[str]:
    """Write the ERA5 months, the DARTS layers and the AlphaEarth COGs of the latent world.

    Returns one line per source written, for the progress report.
    """
    hourly = era5.simulate_era5(world)
    months = _months(era5.ARCTIC_YEARS)
    for year, month in months:
        for step_type in era5.STEP_TYPES:
            path = era5_path(layout.source("era5"), year, month, step_type)
            era5.write_month(era5.month_dataset(hourly, year, month, step_type), path)
    done = [f"era5: {len(months)} months written"]

    tdd_years, tdd = era5.thawing_degree_days(hourly)
    footprints = darts.simulate_rts(world, tdd_years, tdd, hourly.latitude, hourly.longitude)
    coverage = darts.coverage_layer(seed, SAMPLE_REGION_BBOX)
    footprints = darts.drop_unimaged(footprints, coverage, SAMPLE_REGION_BBOX)
    darts.write_footprints(footprints, layout.source("darts"))
    darts.write_coverage(coverage, layout.source("darts"))
    labels, images = darts.training_labels(footprints, seed)
    darts.write_training_labels(labels, images, layout.source("darts") / "training-labels")
    done.append(
        f"darts: {len(footprints)} footprints, coverage with gaps and {len(labels)} training "
        "labels written"
    )

    cogs = alphaearth.write_embeddings(world, layout.source("alphaearth"))
    done.append(f"alphaearth: {len(cogs)} embedding COGs written")
    return done


def _write_dem(
    world: LatentWorld, layout: Layout, seed: int, bbox: tuple[float, float, float, float]
) -> list[str]:
    """Write the ArcticDEM tiles of ``bbox`` rendered from the latent world.

    Returns the line for the progress report.
    """
    tiles = tiles_for(bbox)
    detail = arcticdem.detail_noise(seed, tiles)
    for row, col in tiles:
        elevation = arcticdem.render_tile(world, detail, row, col)
        arcticdem.write_tile(tile_path(layout.source("arcticdem"), row, col), elevation, row, col)
    return [f"arcticdem: {len(tiles)} tiles written"]


def generate_sample_region(
    data_dir: Path,
    seed: int = 42,
    progress: Progress | None = None,
    force: bool = False,
    scale: float = 1.0,
    executor: Executor | None = None,
) -> SampleRegionFiles:
    """Write the sample region's ArcticDEM, ERA5, DARTS and AlphaEarth files.

    They go under ``<data_dir>/sources``. Every file is written atomically; the manifest
    ``sources/sample-region.json`` is written last and removed first, so it only exists while a
    complete set for its seed does. A second call with the same seed returns at once unless
    ``force`` is set.

    With ``scale`` other than 1 a region of that many times the sample's area
    (:func:`region_bbox`) is written, for scale runs of the terrain stage: its ArcticDEM
    tiles only, in the same format and layout, from a latent world on a grid ``sqrt(scale)``
    times coarser (so it costs what the sample's does; the 64 m texture is unchanged). Its
    area of interest is the box, as ``"minlon,minlat,maxlon,maxlat"``.

    Parameters
    ----------
    data_dir : Path
        Root of the storage hierarchy (``ENTROPICE_DATA_DIR``).
    seed : int, default 42
        Seed of the latent world; the same seed always writes identical data.
    progress : callable, optional
        Called with one line per step (e.g. to print or log it).
    force : bool, default False
        Regenerate even when a complete set for ``seed`` exists.
    scale : float, default 1.0
        Area relative to the sample region; other than 1 writes the DEM tiles only.
    executor : concurrent.futures.Executor, optional
        Where the DEM tiles and the other sources are written, side by side (default: two
        threads here). A process pool (the demo's) avoids their contention for the GIL.

    Returns
    -------
    SampleRegionFiles
        The paths written (or found complete).
    """
    files = sample_region_files(data_dir, seed, scale)
    bbox = region_bbox(scale)
    report = progress or (lambda _: None)
    if not force and _is_complete(files, scale):
        report(f"sample region for seed {seed} already complete in {files.manifest.parent}")
        return files
    files.manifest.unlink(missing_ok=True)
    started = time.perf_counter()

    def step(message: str) -> None:
        report(f"[{time.perf_counter() - started:5.1f} s] {message}")

    world = build_world(seed, bbox, LATENT_RES * max(1.0, float(np.sqrt(scale))))
    step("latent world built")

    layout = Layout(Path(data_dir))
    # a scale region: the DEM tiles only; each source has its own random generator, so the
    # files do not depend on the order they are written in
    writes: list[Callable[[LatentWorld, Layout, int], list[str]]] = [partial(_write_dem, bbox=bbox)]
    writes += [_write_era5_darts_alphaearth] if scale == 1 else []
    pool = executor or ThreadPoolExecutor(len(writes))
    try:
        futures = [pool.submit(write, world, layout, seed) for write in writes]
        for future in as_completed(futures):
            for line in future.result():
                step(line)
    finally:
        if pool is not executor:  # ours
            pool.shutdown()

    with atomic_path(files.manifest) as tmp:
        tmp.write_text(
            json.dumps(
                {
                    "seed": seed,
                    "generator_version": GENERATOR_VERSION,
                    "scale": scale,
                    "bbox": list(bbox),
                    "files": [str(p.relative_to(files.manifest.parent)) for p in files.paths],
                },
                indent=1,
            )
        )
    step("manifest written")
    return files
