"""ArcticDEM-like 32 m mosaic tiles drawn from the latent world.

Follows the ArcticDEM v4.1 mosaic conventions: 100 km tiles named ``{row}_{col}`` on the PGC
index (row = floor((y + 4,000,000) / 100 km) + 1, col likewise from x), 3125 x 3125 float32
pixels of 32 m in EPSG:3413, nodata -9999, heights in metres, one folder per tile holding
``{row}_{col}_32m_v4.1_dem.tif`` as a Cloud-Optimized GeoTIFF. Only tiles that touch the sample
box are written, and pixels outside the box or over open ocean are nodata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.features
import scipy.sparse as sp
from affine import Affine

from entropice_core.ingest.arcticdem import (
    NODATA,
    PIXEL_SIZE,
    TILE_PIXELS,
    tile_bounds,
)
from entropice_core.io.atomic import atomic_path
from entropice_core.sample.resample import cubic_weights, resample
from entropice_core.sample.world import POLAR_CRS, LatentGrid, LatentWorld, polar_box

#: Spacing of the white noise that gives the DEM texture below the latent resolution.
DETAIL_RES = 64.0
#: Elevations are rounded to 1/32 m: finer than the DEM's accuracy, and the zeroed low
#: mantissa bits let DEFLATE with the floating-point predictor compress tiles about 3x.
QUANTUM = 1.0 / 32.0
#: Random stream of the DEM texture.
DETAIL_STREAM = 2

_COG_PROFILE = {
    "driver": "COG",
    "dtype": "float32",
    "count": 1,
    "crs": POLAR_CRS,
    "nodata": NODATA,
    "blocksize": 512,
    "compress": "DEFLATE",
    "predictor": 3,
    "overview_resampling": "average",
    "num_threads": 2,
}


@dataclass(frozen=True, eq=False)
class DetailNoise:
    """White noise on a 64 m grid over all written tiles: one array, so tile edges match.

    Attributes
    ----------
    grid : LatentGrid
        The 64 m grid (EPSG:3413) covering the tiles.
    values : numpy.ndarray
        Standard normal float32 values of ``grid.shape``.
    """

    grid: LatentGrid
    values: np.ndarray


def detail_noise(seed: int, tiles: list[tuple[int, int]]) -> DetailNoise:
    """Draw the sub-latent texture for ``seed`` over the union of ``tiles``.

    Parameters
    ----------
    seed : int
        Seed of the sample region (drawn on its own random stream).
    tiles : list of (int, int)
        ArcticDEM ``(row, col)`` tiles to cover.

    Returns
    -------
    DetailNoise
        White noise at :data:`DETAIL_RES` over the tiles' bounding box.
    """
    bounds = np.array([tile_bounds(r, c) for r, c in tiles])
    left, bottom = bounds[:, 0].min(), bounds[:, 1].min()
    right, top = bounds[:, 2].max(), bounds[:, 3].max()
    grid = LatentGrid(
        left=float(left),
        top=float(top),
        res=DETAIL_RES,
        width=round((right - left) / DETAIL_RES),
        height=round((top - bottom) / DETAIL_RES),
    )
    rng = np.random.default_rng([DETAIL_STREAM, seed])
    return DetailNoise(grid=grid, values=rng.standard_normal(grid.shape, dtype=np.float32))


class _TileSampler:
    """Cubic interpolation from one source grid onto a tile's 32 m pixel centres.

    Holds the two sparse weight matrices restricted to the source window the tile needs, so
    sampling a field costs two small sparse products.
    """

    def __init__(self, source: LatentGrid, row: int, col: int) -> None:
        left, _, _, top = tile_bounds(row, col)
        centres = PIXEL_SIZE * (np.arange(TILE_PIXELS) + 0.5)
        col_pos = (left + centres - source.left) / source.res - 0.5
        row_pos = (source.top - (top - centres)) / source.res - 0.5
        self._rows = self._window(row_pos, source.height)
        self._cols = self._window(col_pos, source.width)

    @staticmethod
    def _window(positions: np.ndarray, n: int) -> tuple[slice, sp.csr_array]:
        """Source index range the positions touch, and weights relative to its start."""
        start = max(int(np.floor(positions.min())) - 1, 0)
        stop = min(int(np.floor(positions.max())) + 3, n)
        return slice(start, stop), cubic_weights(positions - start, stop - start)

    def __call__(self, field: np.ndarray) -> np.ndarray:
        (rs, rw), (cs, cw) = self._rows, self._cols
        return resample(np.asarray(field[rs, cs], dtype=np.float32), rw, cw).astype(np.float32)


def render_tile(world: LatentWorld, detail: DetailNoise, row: int, col: int) -> np.ndarray:
    """Render the elevation of one ArcticDEM tile from the latent world.

    Smooth terrain comes from cubic interpolation of the 200 m latent elevation; 64 m white
    noise scaled by the latent roughness adds texture; lakes are set to their exact flat level;
    open ocean and everything outside the sample box are nodata. Heights are rounded to
    :data:`QUANTUM`.

    Parameters
    ----------
    world : LatentWorld
        The latent world.
    detail : DetailNoise
        Texture noise covering the tile.
    row, col : int
        ArcticDEM tile index.

    Returns
    -------
    numpy.ndarray
        ``(3125, 3125)`` float32 heights in metres, nodata -9999.
    """
    latent = _TileSampler(world.grid, row, col)
    fine = _TileSampler(detail.grid, row, col)
    z = latent(world.elevation) + latent(world.roughness) * fine(detail.values)
    near_lake = latent(world.lake.astype(np.float32)) > 0.05
    lake = near_lake & (latent(world.lake_potential) > 0)
    z = np.where(lake, latent(world.lake_level), z)
    z = np.round(z / QUANTUM) * QUANTUM
    left, _, _, top = tile_bounds(row, col)
    inside = rasterio.features.geometry_mask(
        [polar_box(world.bbox)],
        out_shape=(TILE_PIXELS, TILE_PIXELS),
        transform=Affine(PIXEL_SIZE, 0.0, left, 0.0, -PIXEL_SIZE, top),
        invert=True,
    )
    sea = latent(world.sea.astype(np.float32)) > 0.5
    return np.where(inside & ~sea, z, NODATA).astype(np.float32)


def write_tile(path: Path, elevation: np.ndarray, row: int, col: int) -> Path:
    """Write one tile atomically as a COG (DEFLATE, floating-point predictor, 512 px blocks).

    Parameters
    ----------
    path : Path
        Target ``.tif`` file.
    elevation : numpy.ndarray
        ``(3125, 3125)`` float32 heights from :func:`render_tile`.
    row, col : int
        ArcticDEM tile index (sets the geotransform).

    Returns
    -------
    Path
        ``path``.
    """
    left, _, _, top = tile_bounds(row, col)
    profile = {
        **_COG_PROFILE,
        "width": TILE_PIXELS,
        "height": TILE_PIXELS,
        "transform": Affine(PIXEL_SIZE, 0.0, left, 0.0, -PIXEL_SIZE, top),
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(elevation, 1)
        dst.update_tags(1, units="metres", vertical_reference="WGS84 ellipsoid")
    return path
