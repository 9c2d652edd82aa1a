"""AlphaEarth-like embedding COGs drawn from the latent world.

Follows the GCS layout and encoding of the real files (``docs/alphaearth.md``): one folder per
year and UTM zone, ``{year}/{zone}N/``, holding int8 Cloud-Optimized GeoTIFFs with 64 bands
named ``A00``..``A63``, nodata -128 in every band at once, values quantised as
``round(sign(v) sqrt|v| 127.5)`` from unit-length vectors, in the zone's UTM CRS.

Sample simplifications: one file per year and zone covering only the sample box's part of the
zone (the real files are 8192 x 8192 tiles covering all land), and :data:`PIXEL_SIZE` metres
per pixel instead of 10 m, so all years stay a few tens of megabytes and a few seconds to write.

The vectors carry real signal: a fixed random projection (per seed) of the terrain and surface
state at the pixel (elevation, slope, ground ice, distance to water, lakes, roughness, latitude)
plus a yearly degradation term that grows with ground ice (where the slumps are), a smooth
per-year field and pixel noise, normalised to unit length. Open ocean and everything outside the
box or the zone's strip are masked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from affine import Affine
from scipy import ndimage

from entropice_core.ingest.alphaearth import (
    BANDS,
    NODATA,
    quantize,
    utm_crs,
    utm_zones_for,
    zone_bounds,
    zone_dir,
)
from entropice_core.io.atomic import atomic_path
from entropice_core.sample.world import POLAR_CRS, LatentWorld

#: Sample pixel size in metres (the real files have 10 m; see the module docstring).
PIXEL_SIZE = 800.0
#: Years written (the real catalogue holds 2017 onward).
YEARS: tuple[int, ...] = (2018, 2019, 2020, 2021, 2022, 2023)
#: Random stream of the embeddings.
EMBEDDING_STREAM = 5
#: Standard deviation of the per-pixel noise relative to the signal's.
NOISE = 0.1

_COG_PROFILE = {
    "driver": "COG",
    "dtype": "int8",
    "count": len(BANDS),
    "nodata": NODATA,
    "blocksize": 256,
    "compress": "DEFLATE",
    "level": 6,
    "predictor": 2,
    "interleave": "BAND",
    "overviews": "NONE",
    "num_threads": 2,
}


def cog_path(root: Path, year: int, zone: int) -> Path:
    """Return where the sample writes the file of one year and zone.

    Parameters
    ----------
    root : Path
        Root of the COG tree (``sources/alphaearth``).
    year : int
        Year of the embeddings.
    zone : int
        UTM zone number (northern hemisphere).

    Returns
    -------
    Path
        ``{root}/{year}/{zone}N/sample_{year}_{zone}N.tiff``.
    """
    return zone_dir(root, year, zone) / f"sample_{year}_{zone:02d}N.tiff"


def zone_grid(bbox: tuple[float, float, float, float], zone: int) -> tuple[Affine, int, int, str]:
    """Return the pixel grid of the sample file of ``zone``.

    The grid is the UTM box around the part of ``bbox`` inside the zone, snapped to whole
    pixels.

    Parameters
    ----------
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` of the sample region in degrees.
    zone : int
        UTM zone number (northern hemisphere).

    Returns
    -------
    tuple
        Transform, width, height and CRS.
    """
    west, east = zone_bounds(zone)
    lo, hi = max(bbox[0], west), min(bbox[2], east)
    lon = np.concatenate([np.linspace(lo, hi, 50), np.full(50, hi), np.linspace(hi, lo, 50),
                          np.full(50, lo)])  # fmt: skip
    lat = np.concatenate([np.full(50, bbox[1]), np.linspace(bbox[1], bbox[3], 50),
                          np.full(50, bbox[3]), np.linspace(bbox[3], bbox[1], 50)])  # fmt: skip
    crs = utm_crs(zone)
    x, y = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    left, right = np.floor(x.min() / PIXEL_SIZE), np.ceil(x.max() / PIXEL_SIZE)
    bottom, top = np.floor(y.min() / PIXEL_SIZE), np.ceil(y.max() / PIXEL_SIZE)
    transform = Affine(PIXEL_SIZE, 0.0, left * PIXEL_SIZE, 0.0, -PIXEL_SIZE, top * PIXEL_SIZE)
    return transform, int(right - left), int(top - bottom), crs


def _features(world: LatentWorld, transform: Affine, width: int, height: int, crs: str):
    """Latent features ``(k, h, w)`` at the pixel centres, their lon/lat and the valid mask."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    x, y = transform.c + transform.a * cols, transform.f + transform.e * rows
    lon, lat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    px, py = pyproj.Transformer.from_crs(crs, POLAR_CRS, always_xy=True).transform(x, y)
    g = world.grid
    pos = np.stack([(g.top - py) / g.res - 0.5, (px - g.left) / g.res - 0.5])

    def at(field: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(np.asarray(field, np.float32), pos, order=1, mode="nearest")

    feats = np.stack(
        [
            at(world.elevation) / 300.0,
            at(world.slope) / 6.0,
            at(world.ground_ice) * 2.0,
            np.log1p(at(world.water_distance) / 300.0),
            at(world.lake.astype(np.float32)) * 2.0,
            at(world.roughness) / 2.0,
            (lat - 67.8) / 1.5,
            np.ones_like(lat),
        ]
    ).astype(np.float32)
    sea = at(world.sea.astype(np.float32)) > 0.5
    return feats, lon, lat, sea


def render_zone(
    world: LatentWorld, zone: int, years: tuple[int, ...] = YEARS
) -> Iterator[tuple[int, np.ndarray, Affine, str]]:
    """Render the embeddings of one zone, one year at a time.

    Parameters
    ----------
    world : LatentWorld
        The sample region's latent fields.
    zone : int
        UTM zone number (northern hemisphere).
    years : tuple of int, optional
        The years to render.

    Yields
    ------
    tuple
        Year, quantised embeddings ``(64, h, w)`` int8, transform and CRS.
    """
    transform, width, height, crs = zone_grid(world.bbox, zone)
    feats, lon, lat, sea = _features(world, transform, width, height, crs)
    west, east = zone_bounds(zone)
    minlon, minlat, maxlon, maxlat = world.bbox
    inside = (lon >= max(west, minlon)) & (lon < min(east, maxlon))
    inside &= (lat >= minlat) & (lat <= maxlat) & ~sea
    rng = np.random.default_rng([EMBEDDING_STREAM, world.seed])
    # Same projection and smooth-field draws for every zone (so zones agree at their border):
    projection = rng.standard_normal((feats.shape[0] + 2, len(BANDS))).astype(np.float32)
    waves = rng.uniform(size=(len(YEARS), 3, 3))
    zone_rng = np.random.default_rng([EMBEDDING_STREAM, world.seed, zone])
    for t, year in enumerate(years):
        k = YEARS.index(year) if year in YEARS else t % len(YEARS)
        trend = (year - YEARS[0]) / 5.0
        degradation = feats[2] * trend  # ground-ice rich ground changes over the years
        a, b, c = waves[k]
        smooth = np.sin(2 * np.pi * (a[0] * lon / 3.0 + b[0] * lat / 1.0 + c[0]))
        stack = np.concatenate([feats, degradation[None], smooth[None].astype(np.float32)])
        signal = np.tensordot(projection, stack, axes=(0, 0))  # (64, h, w)
        noise = zone_rng.standard_normal(signal.shape, dtype=np.float32)
        v = signal + NOISE * signal.std() * noise
        v /= np.linalg.norm(v, axis=0, keepdims=True)
        q = quantize(v)
        q[:, ~inside] = NODATA
        yield year, q, transform, crs


def write_cog(path: Path, data: np.ndarray, transform: Affine, crs: str) -> Path:
    """Write one ``(64, h, w)`` int8 file as a COG with bands named A00..A63.

    Parameters
    ----------
    path : Path
        The file, written atomically.
    data : numpy.ndarray
        ``(64, h, w)`` int8 quantised embeddings.
    transform : affine.Affine
        Pixel-to-CRS transform.
    crs : str
        The UTM CRS.

    Returns
    -------
    Path
        ``path``.
    """
    profile = {
        **_COG_PROFILE,
        "width": data.shape[2],
        "height": data.shape[1],
        "transform": transform,
        "crs": crs,
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = BANDS
    return path


def sample_cog_paths(root: Path, bbox: tuple[float, float, float, float]) -> tuple[Path, ...]:
    """Return every file the sample writes under ``root``.

    Parameters
    ----------
    root : Path
        Root of the COG tree (``sources/alphaearth``).
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` of the sample region in degrees.

    Returns
    -------
    tuple of Path
        One file per year and UTM zone.
    """
    return tuple(cog_path(root, year, zone) for year in YEARS for zone in utm_zones_for(bbox))


def write_embeddings(world: LatentWorld, root: Path) -> tuple[Path, ...]:
    """Write every year and zone of the sample box under ``root`` (``sources/alphaearth``).

    Parameters
    ----------
    world : LatentWorld
        The sample region's latent fields.
    root : Path
        Root of the COG tree.

    Returns
    -------
    tuple of Path
        The files written.
    """
    written = []
    for zone in utm_zones_for(world.bbox):
        for year, data, transform, crs in render_zone(world, zone):
            written.append(write_cog(cog_path(root, year, zone), data, transform, crs))
    return tuple(written)
