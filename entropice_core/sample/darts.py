"""DARTS-like retrogressive thaw slump footprints drawn from the latent world and its climate.

Written like the DARTS v1.2 level-2 release (one polygon per RTS and year, EPSG:4326, columns
``id``, ``year``, ``area_m2`` with the area computed in EPSG:6931) as GeoParquet and GeoPackage
named ``DARTS_NitzeEtAl_v1-2_features_2018-2023_level2.{parquet,gpkg}``, with the release's
coverage layer beside it (``DARTS_NitzeEtAl_v1-2_coverage_2018-2023.parquet``: per year the
area imaged, the sample box minus a few gaps; footprints in a year's gaps are not mapped).

Slumps start where the latent world makes them likely (moderate-to-steep slopes, close to a
stream, lake or coast, on ice-rich ground), more of them start in warm summers, they grow every
year (faster in warm summers) until they stabilise, and stabilised ones eventually revegetate
and drop out of the mapping.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.interpolate import RegularGridInterpolator
from scipy.spatial import cKDTree

from entropice_core.io.atomic import atomic_path
from entropice_core.sample.world import POLAR_CRS, LatentWorld

#: Years of the footprints (DARTS v1.2 covers 2018-2023).
YEARS = (2018, 2023)
FILE_STEM = "DARTS_NitzeEtAl_v1-2_features_2018-2023_level2"
COVERAGE_STEM = "DARTS_NitzeEtAl_v1-2_coverage_2018-2023"
#: Equal-area CRS in which ``area_m2`` is computed (EASE-Grid 2.0 North).
AREA_CRS = "EPSG:6931"
#: Random streams of the slumps and of the training labels.
DARTS_STREAM = 4
TRAINING_STREAM = 5
COVERAGE_STREAM = 6
#: Unimaged rectangles per year in the coverage layer, and the range of their sides (km).
GAPS_PER_YEAR = 2
GAP_SIDE_KM = (20.0, 60.0)
#: Region folder of the hand-drawn training labels, and the PlanetScope (Dove Classic) scene
#: size in metres their image footprints get.
TRAINING_REGION = "peel_plateau"
SCENE_SIZE = (24_600.0, 16_400.0)
#: Expected slumps already active before the first year, and new ones per average year.
#: The stock is drawn with ages up to 12 years, so 12 years' worth of starts keeps the count
#: near its steady state.
EXPECTED_NEW_PER_YEAR = 130.0
EXPECTED_STOCK = 12 * EXPECTED_NEW_PER_YEAR
#: New slumps per year scale by exp(CLIMATE_GAIN * TDD anomaly / 100 degree-days).
CLIMATE_GAIN = 0.8
#: Smallest footprint that gets mapped, and the size growth saturates at (m2).
MIN_AREA, MAX_AREA = 250.0, 400_000.0
_VERTICES = 40


def susceptibility(world: LatentWorld) -> np.ndarray:
    """Rate how likely an RTS starts in each latent cell.

    Slumps need a slope to fail on (rising from 3 to 9 degrees, fading above 20 where ground
    is thin), water to undercut and drain them (within a few hundred metres of a stream, lake
    or coast) and excess ground ice to thaw.

    Parameters
    ----------
    world : LatentWorld
        The latent world.

    Returns
    -------
    numpy.ndarray
        Relative initiation rate per cell, 0 outside the sample box, on lakes and at sea.
    """
    slope_term = np.clip((world.slope - 3.0) / 6.0, 0.0, 1.0) * np.exp(
        -np.clip(world.slope - 20.0, 0.0, None) / 6.0
    )
    water_term = np.exp(-world.water_distance / 400.0)
    usable = world.aoi & ~world.lake & ~world.sea
    return np.where(usable, slope_term * water_term * world.ground_ice**1.5, 0.0)


def _tdd_anomaly_at(
    lon: np.ndarray,
    lat: np.ndarray,
    era5_lat: np.ndarray,
    era5_lon: np.ndarray,
    tdd: np.ndarray,
) -> np.ndarray:
    """Each year's TDD minus the multi-year mean, interpolated bilinearly to points.

    Returns ``(year, point)``. ERA5 latitudes descend, so they are flipped for the interpolator.
    """
    anomaly = tdd - tdd.mean(axis=0, keepdims=True)
    return np.stack(
        [
            RegularGridInterpolator((era5_lat[::-1], era5_lon), year[::-1])((lat, lon))
            for year in anomaly
        ]
    )


def _unit_shapes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lobate outlines in slump coordinates, toe at the origin, headwall upslope.

    Returns vertices ``(n, _VERTICES, 2)`` as (downslope, across) and each outline's area.
    A star-shaped radius with random harmonics 2-6 (amplitudes summing below 0.55, so the
    outline never self-intersects) gives the scalloped headwall; a stretch along the slope and
    a short debris tongue give the amphitheatre shape.
    """
    theta = np.linspace(0.0, 2 * np.pi, _VERTICES, endpoint=False)
    k = np.arange(2, 7)
    amp = rng.uniform(0.0, 0.38, (n, len(k))) / k
    phase = rng.uniform(0.0, 2 * np.pi, (n, len(k)))
    radius = 1.0 + np.sum(amp[:, :, None] * np.cos(k[None, :, None] * theta + phase[:, :, None]), 1)
    stretch = rng.uniform(0.7, 1.5, (n, 1))
    down = radius * np.cos(theta) * stretch
    down += 0.35 * radius * np.clip(np.cos(theta), 0.0, None) ** 4  # debris tongue
    across = radius * np.sin(theta)
    down -= down.max(axis=1, keepdims=True)  # the toe sits at the origin
    area = 0.5 * np.abs(
        np.sum(down * np.roll(across, -1, axis=1) - np.roll(down, -1, axis=1) * across, axis=1)
    )
    return np.stack([down, across], axis=-1), area


def _thin_overlaps(x: np.ndarray, y: np.ndarray, reach: np.ndarray, born: np.ndarray) -> np.ndarray:
    """Keep-mask that drops the younger of any two slumps whose largest outlines could touch.

    DARTS level 2 merges touching footprints within a year; keeping slumps apart keeps one
    polygon per slump.
    """
    tree = cKDTree(np.column_stack([x, y]))
    pairs = tree.query_pairs(r=2 * reach.max(), output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    touching = np.hypot(x[i] - x[j], y[i] - y[j]) < reach[i] + reach[j] + 20.0
    i, j = i[touching], j[touching]
    younger = np.where((born[j] > born[i]) | ((born[j] == born[i]) & (j > i)), j, i)
    keep = np.ones(len(x), dtype=bool)
    keep[younger] = False
    return keep


def simulate_rts(
    world: LatentWorld,
    tdd_years: np.ndarray,
    tdd: np.ndarray,
    era5_lat: np.ndarray,
    era5_lon: np.ndarray,
    years: tuple[int, int] = YEARS,
) -> gpd.GeoDataFrame:
    """Simulate RTS footprints year by year, driven by the terrain and the summers' warmth.

    Parameters
    ----------
    world : LatentWorld
        The latent world (terrain, ground ice, water).
    tdd_years, tdd : numpy.ndarray
        Thawing degree days per Arctic year on the ERA5 grid, from the ERA5-like climate.
    era5_lat, era5_lon : numpy.ndarray
        The ERA5 grid axes (latitude descending).
    years : tuple of int, optional
        First and last year of footprints; each must have a TDD year.

    Returns
    -------
    geopandas.GeoDataFrame
        One polygon per slump and year it is mapped, EPSG:4326, with ``id`` (1..n),
        ``year`` and ``area_m2`` (measured in :data:`AREA_CRS`).
    """
    rng = np.random.default_rng([DARTS_STREAM, world.seed])
    all_years = np.arange(years[0], years[1] + 1)
    tdd = tdd[np.searchsorted(tdd_years, all_years)]
    rate = susceptibility(world)
    cells = np.flatnonzero(rate > 0)
    rate = rate.ravel()[cells]
    anomaly = _tdd_anomaly_at(
        world.lon.ravel()[cells], world.lat.ravel()[cells], era5_lat, era5_lon, tdd
    )  # (year, cell), degree-days
    share = rate / rate.sum()

    # Slumps: a stock that started before the first year plus new ones each year, drawn as
    # Poisson counts per cell; warm summers start more of them.
    counts = [rng.poisson(EXPECTED_STOCK * share)] + [
        rng.poisson(EXPECTED_NEW_PER_YEAR * share * np.exp(CLIMATE_GAIN * a / 100.0))
        for a in anomaly
    ]
    index = np.concatenate([np.repeat(np.arange(len(cells)), c) for c in counts])
    n = len(index)
    start = np.concatenate(
        [np.full(c.sum(), y) for c, y in zip(counts, [years[0] - 1, *all_years], strict=True)]
    )
    born = np.where(start < years[0], start - rng.integers(0, 12, n), start)

    # Log-area grows each year by a slump-specific rate, faster in warm summers, for a
    # geometric number of active years; then the slump stabilises and, a few years later,
    # has revegetated so far that it is no longer mapped. Before the first year the growth
    # runs at the plain rate (there is no climate for those years).
    rate_i = rng.lognormal(np.log(0.2), 0.5, n)
    active = 2 + rng.geometric(0.15, n)
    mapped = active + rng.geometric(0.3, n)
    early_growth = rate_i * np.clip(np.minimum(years[0] - 1 - born, active), 0, None)
    age = all_years[:, None] - born[None, :]  # (year, slump)
    warmth = np.clip(1.0 + 0.6 * anomaly[:, index] / 100.0, 0.2, None)
    growing = (age >= 1) & (age <= active)
    growth = np.cumsum(np.where(growing, rate_i * warmth, 0.0), axis=0)
    log_area = rng.normal(np.log(800.0), 0.9, n) + early_growth + growth
    area = np.exp(log_area) / (1.0 + np.exp(log_area) / MAX_AREA)  # saturates at MAX_AREA
    visible = (age >= 0) & (age <= mapped) & (area >= MIN_AREA)
    visible &= rng.random(visible.shape) > 0.04  # missed detections

    # Place each slump: its toe in its cell, the outline reaching upslope.
    row, col = np.unravel_index(cells[index], world.grid.shape)
    res = world.grid.res
    x = world.grid.left + res * (col + rng.uniform(0.0, 1.0, n))
    y = world.grid.top - res * (row + rng.uniform(0.0, 1.0, n))
    shapes, unit_area = _unit_shapes(rng, n)
    reach = np.sqrt(area.max(axis=0) / unit_area) * np.abs(shapes).max(axis=(1, 2))
    seen = np.flatnonzero(visible.any(axis=0))
    keep = np.zeros(n, dtype=bool)
    keep[seen] = _thin_overlaps(x[seen], y[seen], reach[seen], born[seen])
    year_idx, slump = np.nonzero(visible & keep[None, :])
    scale = np.sqrt(area[year_idx, slump] / unit_area[slump])
    down = world.downslope[:, row[slump], col[slump]]  # (2, feature): unit downslope x, y
    u, v = shapes[slump, :, 0] * scale[:, None], shapes[slump, :, 1] * scale[:, None]
    px = x[slump][:, None] + u * down[0][:, None] - v * down[1][:, None]
    py = y[slump][:, None] + u * down[1][:, None] + v * down[0][:, None]
    polygons = gpd.GeoSeries(shapely.polygons(np.stack([px, py], axis=-1)), crs=POLAR_CRS)

    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(slump) + 1, dtype=np.int64),
            "year": all_years[year_idx].astype(np.int64),
            "area_m2": polygons.to_crs(AREA_CRS).area.to_numpy(),
        },
        geometry=polygons.to_crs("EPSG:4326").to_numpy(),
        crs="EPSG:4326",
    )


def coverage_layer(
    seed: int, bbox: tuple[float, float, float, float], years: tuple[int, int] = YEARS
) -> gpd.GeoDataFrame:
    """Draw the area imaged per year: the sample box minus a few unimaged rectangles.

    Each year loses :data:`GAPS_PER_YEAR` lon/lat rectangles with sides of
    :data:`GAP_SIDE_KM` at random places inside the box (cloud, no acquisition), different
    every year.

    Parameters
    ----------
    seed : int
        Seed of the sample region (drawn on its own random stream).
    bbox : tuple of float
        The sample box (west, south, east, north), degrees.
    years : tuple of int, optional
        First and last year.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per year: ``year`` and the imaged area (EPSG:4326).
    """
    rng = np.random.default_rng([COVERAGE_STREAM, seed])
    west, south, east, north = bbox
    box = shapely.box(*bbox)
    all_years = np.arange(years[0], years[1] + 1)
    imaged = []
    for _ in all_years:
        gaps = []
        for _ in range(GAPS_PER_YEAR):
            height_km, width_km = rng.uniform(*GAP_SIDE_KM, 2)
            dlat = height_km / 111.2
            lat = rng.uniform(south, north - dlat)
            dlon = width_km / (111.3 * np.cos(np.radians(lat + dlat / 2)))
            lon = rng.uniform(west, east - dlon)
            gaps.append(shapely.box(lon, lat, lon + dlon, lat + dlat))
        imaged.append(box.difference(shapely.union_all(gaps)))
    return gpd.GeoDataFrame({"year": all_years.astype(np.int64)}, geometry=imaged, crs="EPSG:4326")


def drop_unimaged(
    footprints: gpd.GeoDataFrame,
    coverage: gpd.GeoDataFrame,
    bbox: tuple[float, float, float, float],
) -> gpd.GeoDataFrame:
    """Drop the footprints touching a gap of their year's coverage (DARTS maps only imagery).

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Footprints from :func:`simulate_rts`.
    coverage : geopandas.GeoDataFrame
        The coverage from :func:`coverage_layer`.
    bbox : tuple of float
        The sample box the coverage was cut from: its gaps are the box minus the coverage.

    Returns
    -------
    geopandas.GeoDataFrame
        The footprints outside every gap of their year, ``id`` renumbered 1..n.
    """
    box = shapely.box(*bbox)
    gaps = pd.Series(
        shapely.difference(box, coverage.geometry.to_numpy()), index=coverage["year"].to_numpy()
    )
    in_gap = shapely.intersects(footprints.geometry.to_numpy(), gaps[footprints["year"]].to_numpy())
    kept = footprints[~in_gap].reset_index(drop=True)
    kept["id"] = np.arange(1, len(kept) + 1, dtype=np.int64)
    return kept


def training_labels(
    footprints: gpd.GeoDataFrame, seed: int, years: tuple[int, ...] = (2019, 2021, 2023)
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Draw hand-drawn-style training labels as darts-nextgen reads them, one image per year.

    Each image footprint is a PlanetScope-sized scene centred on a random footprint of its
    year (so scenes land where slumps are dense) and imaged on a summer day; its labels are
    that year's footprints inside the scene, clipped to it, with one in ten missed as a human
    digitiser would.

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Footprints from :func:`simulate_rts`; each of ``years`` must have some.
    seed : int
        Seed of the sample region (drawn on its own random stream).
    years : tuple of int, default (2019, 2021, 2023)
        One image per year.

    Returns
    -------
    labels : geopandas.GeoDataFrame
        ``image_id`` and label geometry, EPSG:4326.
    images : geopandas.GeoDataFrame
        ``image_id``, ``date`` and scene geometry, EPSG:4326.
    """
    rng = np.random.default_rng([TRAINING_STREAM, seed])
    polar = footprints.to_crs(POLAR_CRS)
    labels, images = [], []
    for year in years:
        of_year = polar[polar["year"] == year]
        centre = of_year.geometry.iloc[rng.integers(len(of_year))].centroid
        width, height = SCENE_SIZE
        scene = shapely.box(
            centre.x - width / 2, centre.y - height / 2, centre.x + width / 2, centre.y + height / 2
        )
        taken = np.datetime64(f"{year}-07-01T18:00") + np.timedelta64(
            int(rng.integers(0, 60 * 24 * 60)), "m"
        )
        image_id = f"{taken.astype(object):%Y%m%d_%H%M%S}_{int(rng.integers(0x1000, 0x2500)):04x}"
        inside = of_year[of_year.intersects(scene)]
        inside = inside[rng.random(len(inside)) > 0.1]
        labels.append(
            gpd.GeoDataFrame(
                {"image_id": np.full(len(inside), image_id)},
                geometry=shapely.intersection(inside.geometry.to_numpy(), scene),
                crs=POLAR_CRS,
            )
        )
        images.append(
            gpd.GeoDataFrame(
                {"image_id": [image_id], "date": [taken.astype("datetime64[ms]")]},
                geometry=[scene],
                crs=POLAR_CRS,
            )
        )
    return tuple(
        gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=POLAR_CRS).to_crs("EPSG:4326")
        for parts in (labels, images)
    )


def training_paths(root: Path) -> tuple[Path, Path]:
    """Name the training-label and image-footprint files of the region folder under ``root``.

    Parameters
    ----------
    root : Path
        Folder holding the region folders.

    Returns
    -------
    labels, images : Path
        GeoPackage paths under ``root/<TRAINING_REGION>``.
    """
    folder = Path(root) / TRAINING_REGION
    return (
        folder / f"TrainingLabel_{TRAINING_REGION}.gpkg",
        folder / f"ImageFootprints_{TRAINING_REGION}.gpkg",
    )


def write_training_labels(
    labels: gpd.GeoDataFrame, images: gpd.GeoDataFrame, root: Path
) -> tuple[Path, Path]:
    """Write the training labels and their image footprints as GeoPackages, atomically.

    Parameters
    ----------
    labels, images : geopandas.GeoDataFrame
        Frames from :func:`training_labels`.
    root : Path
        Folder holding the region folders.

    Returns
    -------
    labels, images : Path
        The files written (see :func:`training_paths`).
    """
    paths = training_paths(root)
    for frame, path in zip((labels, images), paths, strict=True):
        with atomic_path(path) as tmp:
            frame.to_file(tmp, driver="GPKG", layer=path.stem, engine="pyogrio")
    return paths


def footprint_paths(root: Path) -> tuple[Path, Path]:
    """Name the GeoParquet and GeoPackage files of the release under ``root``.

    Parameters
    ----------
    root : Path
        Folder of the release.

    Returns
    -------
    parquet, gpkg : Path
        ``<FILE_STEM>.parquet`` and ``<FILE_STEM>.gpkg`` under ``root``.
    """
    return Path(root) / f"{FILE_STEM}.parquet", Path(root) / f"{FILE_STEM}.gpkg"


def write_footprints(frame: gpd.GeoDataFrame, root: Path) -> tuple[Path, Path]:
    """Write the footprints as GeoParquet and GeoPackage (layer named like the file), atomically.

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        Footprints from :func:`simulate_rts`.
    root : Path
        Folder of the release.

    Returns
    -------
    parquet, gpkg : Path
        The files written (see :func:`footprint_paths`).
    """
    parquet, gpkg = footprint_paths(root)
    with atomic_path(parquet) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd")
    with atomic_path(gpkg) as tmp:
        frame.to_file(tmp, driver="GPKG", layer=FILE_STEM, engine="pyogrio")
    return parquet, gpkg


def coverage_path(root: Path) -> Path:
    """Name the coverage layer of the release under ``root``.

    Parameters
    ----------
    root : Path
        Folder of the release.

    Returns
    -------
    Path
        ``<COVERAGE_STEM>.parquet`` under ``root``.
    """
    return Path(root) / f"{COVERAGE_STEM}.parquet"


def write_coverage(frame: gpd.GeoDataFrame, root: Path) -> Path:
    """Write the coverage layer as GeoParquet, atomically.

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        Coverage from :func:`coverage_layer`.
    root : Path
        Folder of the release.

    Returns
    -------
    Path
        The file written (see :func:`coverage_path`).
    """
    path = coverage_path(root)
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd")
    return path
