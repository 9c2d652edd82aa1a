"""ArcticDEM v4.1 32 m mosaic: the tile index and reading tiles as one lazy mosaic.

Facts (PGC data description): float32 GeoTIFF heights in metres above the WGS84 ellipsoid,
nodata -9999, EPSG:3413, 100 km tiles named ``{row}_{col}`` with row = floor((y + 4,000,000) /
100 km) + 1 and col likewise from x, 3125 x 3125 pixels at 32 m, stored as
``{row}_{col}/{row}_{col}_32m_v4.1_dem.tif``. The sample region writes the same layout.

Access goes through an :class:`ArcticDEMClient`: :class:`PgcArcticDEMClient` takes the tiles
of an area from the index arithmetic, optionally restricted to the tiles a PGC tile index lists
(``ArcticDEM_Mosaic_Index_latest_gpqt.zip``, read offline), and fetches them from
``{base_url}/{row}_{col}/{row}_{col}_32m_v4.1_dem.tif``: the PGC open-data bucket by default,
any HTTP server or mirror otherwise. Each tile is resumed, size-checked and opened with rasterio
before it takes its place (``entropice_core.io.download``). :class:`OfflineArcticDEMClient`
uses the tiles on disk only.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import numpy as np
from rich.progress import DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from entropice_core.io.download import (
    DownloadConfig,
    MissingSourceFiles,
    NotOnServer,
    SourceClient,
    download,
)

if TYPE_CHECKING:  # heavy libraries are imported where they are used
    import geopandas as gpd
    import shapely
    import xarray as xr

    from entropice_core.terrain.derivatives import TerrainConfig

CRS = "EPSG:3413"
TILE_ORIGIN = -4_000_000.0
TILE_SIZE = 100_000.0
PIXEL_SIZE = 32.0
TILE_PIXELS = 3125
NODATA = -9999.0
VERSION = "v4.1"
#: Dask chunk edge for mosaic reads (pixels): 1024 x 1024 float32 = 4 MiB.
CHUNK = 1024
#: The PGC open-data bucket (Cloud-Optimized GeoTIFFs over unsigned HTTPS).
BASE_URL = "https://pgc-opendata-dems.s3.us-west-2.amazonaws.com/arcticdem/mosaics/v4.1/32m"


def tile_of(x: float, y: float) -> tuple[int, int]:
    """Return the 100 km mosaic tile holding the EPSG:3413 point ``(x, y)``.

    Parameters
    ----------
    x, y : float
        EPSG:3413 coordinates in metres.

    Returns
    -------
    tuple of int
        ``(row, col)`` of the tile.
    """
    row = int(np.floor((y - TILE_ORIGIN) / TILE_SIZE)) + 1
    col = int(np.floor((x - TILE_ORIGIN) / TILE_SIZE)) + 1
    return row, col


def tile_bounds(row: int, col: int) -> tuple[float, float, float, float]:
    """Return the bounds of a mosaic tile.

    Parameters
    ----------
    row, col : int
        The tile.

    Returns
    -------
    tuple of float
        ``(left, bottom, right, top)`` in EPSG:3413 metres.
    """
    left = TILE_ORIGIN + (col - 1) * TILE_SIZE
    bottom = TILE_ORIGIN + (row - 1) * TILE_SIZE
    return left, bottom, left + TILE_SIZE, bottom + TILE_SIZE


def tile_path(root: Path, row: int, col: int) -> Path:
    """Return where the mosaic puts the 32 m DEM of a tile, relative to ``root``.

    Parameters
    ----------
    root : Path
        The tile folder.
    row, col : int
        The tile.

    Returns
    -------
    Path
        ``{root}/{row}_{col}/{row}_{col}_32m_v4.1_dem.tif``.
    """
    name = f"{row}_{col}"
    return Path(root) / name / f"{name}_32m_{VERSION}_dem.tif"


def tile_url(base_url: str, row: int, col: int) -> str:
    """Return the URL of the 32 m DEM of a tile under ``base_url`` (the bucket's folder layout).

    Parameters
    ----------
    base_url : str
        The bucket or a mirror.
    row, col : int
        The tile.

    Returns
    -------
    str
        The GeoTIFF's URL.
    """
    name = f"{row}_{col}"
    return f"{base_url.rstrip('/')}/{name}/{name}_32m_{VERSION}_dem.tif"


def stac_item_url(base_url: str, row: int, col: int) -> str:
    """Return the URL of a tile's static STAC item, beside its files in the bucket.

    Parameters
    ----------
    base_url : str
        The bucket or a mirror.
    row, col : int
        The tile.

    Returns
    -------
    str
        The item's URL (``{row}_{col}_32m_v4.1.json``).
    """
    name = f"{row}_{col}"
    return f"{base_url.rstrip('/')}/{name}/{name}_32m_{VERSION}.json"


def _check_stac_item(path: Path) -> None:
    item = json.loads(Path(path).read_text())
    if "href" not in item.get("assets", {}).get("dem", {}):
        raise ValueError(f"STAC item {path} has no assets.dem.href")


def read_tile_index(path: str | Path) -> set[tuple[int, int]]:
    """Read the tiles listed in a PGC mosaic tile index.

    Rows name their tile in ``dem_id`` (``36_24_32m_v4.1``), ``tile`` or ``supertile``; only
    32 m rows are kept where a ``resolution`` column says so.

    Parameters
    ----------
    path : str or Path
        The index: GeoParquet, zipped or not, or any vector file.

    Returns
    -------
    set of tuple of int
        ``(row, col)`` of every tile listed.

    Raises
    ------
    ValueError
        If no column names the tiles.
    """
    from entropice_core.io.vector import read_vector

    frame = read_vector(Path(path), "ArcticDEM tile index")
    column = next((c for c in ("dem_id", "tile", "supertile") if c in frame.columns), None)
    if column is None:
        raise ValueError(
            f"{path} has no dem_id, tile or supertile column (columns: {list(frame.columns)}); "
            "use PGC's ArcticDEM_Mosaic_Index_latest_gpqt.zip"
        )
    if "resolution" in frame.columns:
        frame = frame[frame["resolution"].astype(str).str.startswith("32")]
    tiles = set()
    for name in frame[column].astype(str):
        match = re.match(r"(\d+)_(\d+)", name)
        if match:
            tiles.add((int(match[1]), int(match[2])))
    return tiles


def _check_grid(src: Any) -> None:
    """Raise ``ValueError`` unless an open raster is 3125 x 3125 pixels of 32 m in EPSG:3413."""
    if src.crs is None or src.crs.to_epsg() != 3413:
        raise ValueError(f"CRS is {src.crs}, not {CRS}")
    if src.res != (PIXEL_SIZE, PIXEL_SIZE) or src.shape != (TILE_PIXELS, TILE_PIXELS):
        raise ValueError(f"{src.shape} pixels of {src.res} m, not 3125 x 3125 of 32 m")


def check_tile(path: str | Path) -> None:
    """Raise ``ValueError`` unless ``path`` is a whole, readable 32 m ArcticDEM tile.

    Every block is decoded, so a truncated or corrupt file fails here, not in a later read.

    Parameters
    ----------
    path : str or Path
        The GeoTIFF.

    Raises
    ------
    ValueError
        If the file is unreadable or not a 3125 x 3125 tile of 32 m pixels in EPSG:3413.
    """
    import rasterio

    try:
        with rasterio.open(path) as src:
            _check_grid(src)
            src.read(1)
    except rasterio.errors.RasterioError as err:
        raise ValueError(f"{path} is not a readable GeoTIFF ({err})") from err


def check_tile_quickly(path: str | Path) -> None:
    """Raise ``ValueError`` unless ``path`` opens as a 32 m tile whose last blocks decode.

    Cheaper than :func:`check_tile` (for tiles already on disk, on every run): the header,
    the CRS and shape, and the last block of the full-resolution image and of each overview,
    which lie at the end of the file in a COG or a tiled GeoTIFF, so a truncated file
    (an interrupted copy, a full disk) fails here rather than in a later read.

    Parameters
    ----------
    path : str or Path
        The GeoTIFF.

    Raises
    ------
    ValueError
        If the file is unreadable, truncated, or not a 3125 x 3125 tile of 32 m pixels in
        EPSG:3413.
    """
    import rasterio

    try:
        with rasterio.open(path) as src:
            _check_grid(src)
            levels = len(src.overviews(1))
    except rasterio.errors.RasterioError as err:
        raise ValueError(f"it does not open as a GeoTIFF ({err})") from err
    size = Path(path).stat().st_size
    for level in (None, *range(levels)):
        try:
            with rasterio.open(path, overview_level=level) as src:
                block_rows, block_cols = src.block_shapes[0]
                rows, cols = -(-src.height // block_rows), -(-src.width // block_cols)
                src.read(1, window=src.block_window(1, rows - 1, cols - 1))
        except rasterio.errors.RasterioError as err:
            image = "full-resolution image" if level is None else f"overview {level + 1}"
            raise ValueError(
                f"the last block of its {image} does not decode: the file ({size:,} bytes) is "
                f"truncated or corrupt ({err})"
            ) from err


def check_tiles_on_disk(paths: list[Path], fix: str) -> None:
    """Check tiles found on disk (:func:`check_tile_quickly`); refuse damaged ones together.

    Parameters
    ----------
    paths : list of Path
        Tiles that were already there (not downloaded by this run).
    fix : str
        How to get a whole copy, for the message.

    Raises
    ------
    ValueError
        Naming each damaged tile, what is wrong with it, and ``fix``.
    """
    damaged = {}
    for path in paths:
        try:
            check_tile_quickly(path)
        except ValueError as err:
            damaged[path] = str(err)
    if damaged:
        listed = "; ".join(f"{path}: {why}" for path, why in list(damaged.items())[:5])
        more = f" (and {len(damaged) - 5} more)" if len(damaged) > 5 else ""
        raise ValueError(
            f"{len(damaged)} ArcticDEM tile(s) on disk are damaged or truncated: {listed}{more}. "
            f"Delete them and run again: {fix}"
        )


#: How to replace damaged tiles, per client.
REFETCH_PGC = "the 'pgc' client downloads them anew"
REFETCH_OFFLINE = (
    "the offline client reads the folder only, so copy them again from the mirror, download "
    "them with the 'pgc' client (PgcArcticDEMClient; in Dagster the arcticdem_source "
    "resource's client='pgc'), or for the sample region run `entropice sample --force`"
)


@dataclass(frozen=True)
class FetchedTiles:
    """Outcome of :func:`fetch_tiles`: tiles on disk, tiles the server lacks, new downloads."""

    present: list[Path]
    missing: list[tuple[int, int]]
    downloaded: list[Path]

    def manifest(self) -> dict[str, list[str]]:
        """Return the manifest of the tiles (the ``arcticdem_tiles`` value).

        Returns
        -------
        dict
            ``tiles``: the paths on disk; ``missing_tiles``: ``{row}_{col}`` of the tiles
            the release lacks.
        """
        return {
            "tiles": [str(p) for p in self.present],
            "missing_tiles": [f"{r}_{c}" for r, c in self.missing],
        }


def fetch_tiles(
    bbox: tuple[float, float, float, float],
    folder: str | Path,
    base_url: str = BASE_URL,
    index: set[tuple[int, int]] | None = None,
    config: DownloadConfig = DownloadConfig(),
    show_progress: bool = True,
    stac: bool = False,
) -> FetchedTiles:
    """Download the 32 m tiles covering the lon/lat ``bbox`` into ``folder`` (tile layout).

    Tiles already on disk are kept; ``index`` (from :func:`read_tile_index`) skips tiles the
    release does not have; a tile the server does not have (open ocean) is reported missing.
    With ``stac``, each tile's static STAC item (``{row}_{col}_32m_v4.1.json``) is fetched
    first, kept beside the tile, and its ``dem`` asset names the file to download.

    Parameters
    ----------
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` in degrees.
    folder : str or Path
        Where the tiles go (:func:`tile_path` layout).
    base_url : str, optional
        The PGC bucket or a mirror.
    index : set of tuple of int, optional
        Tiles the release has; None tries every tile of the box.
    config : DownloadConfig, optional
        Retries and timeouts of the downloads.
    show_progress : bool, optional
        Show a progress bar.
    stac : bool, optional
        Find each tile's file through its STAC item.

    Returns
    -------
    FetchedTiles
        Tiles on disk, tiles the server lacks, new downloads.

    Raises
    ------
    ValueError
        If a tile already on disk is truncated or corrupt (:func:`check_tiles_on_disk`), or a
        download is unusable.
    """
    wanted = [t for t in tiles_for(bbox) if index is None or t in index]
    present, missing, downloaded = [], [], []
    columns = (TextColumn("{task.description}"), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        for row, col in wanted:
            path = tile_path(Path(folder), row, col)
            if not path.exists():
                try:
                    url = tile_url(base_url, row, col)
                    if stac:  # the item beside the tile names the DEM's URL
                        item_url = stac_item_url(base_url, row, col)
                        item = path.with_name(Path(item_url).name)
                        if not item.exists():
                            download(item_url, item, config, _check_stac_item, progress)
                        href = json.loads(item.read_text())["assets"]["dem"]["href"]
                        url = urljoin(item_url, href)
                    download(url, path, config, check_tile, progress)
                except NotOnServer:
                    missing.append((row, col))
                    continue
                downloaded.append(path)
            present.append(path)
    check_tiles_on_disk([p for p in present if p not in downloaded], REFETCH_PGC)
    return FetchedTiles(present, missing, downloaded)


#: How to get ArcticDEM tiles an offline client lacks.
OFFLINE_HOW = (
    "download them with the PGC client (PgcArcticDEMClient; in Dagster set the "
    "arcticdem_source resource's client='pgc'), copy them from a mirror in the same "
    "{row}_{col}/ layout, or run `make demo` for the sample region"
)


class ArcticDEMClient(SourceClient):
    """Brings the 32 m tiles covering a lon/lat box into a folder (layout: :func:`tile_path`)."""

    @abstractmethod
    def fetch(self, bbox: tuple[float, float, float, float], folder: str | Path) -> FetchedTiles:
        """Bring the tiles of ``bbox`` under ``folder``.

        Parameters
        ----------
        bbox : tuple of float
            ``(minlon, minlat, maxlon, maxlat)`` in degrees.
        folder : str or Path
            The tile folder.

        Returns
        -------
        FetchedTiles
            Present, missing (the release lacks them or, offline, they are not there) and
            newly downloaded tiles.
        """


class PgcArcticDEMClient(ArcticDEMClient):
    """Downloads missing tiles over HTTPS from the PGC bucket (or a mirror at ``base_url``).

    See :func:`fetch_tiles`. The bucket is public: no credentials.
    """

    name = "pgc"
    offline = False

    def __init__(
        self,
        base_url: str = BASE_URL,
        index: set[tuple[int, int]] | None = None,
        config: DownloadConfig = DownloadConfig(),
        stac: bool = False,
        show_progress: bool = False,
    ) -> None:
        if not base_url:
            raise ValueError(
                "PgcArcticDEMClient needs a base_url (the PGC bucket: "
                f"{BASE_URL}, or a mirror); use OfflineArcticDEMClient for the tiles on disk"
            )
        self.base_url, self.index, self.config = base_url, index, config
        self.stac, self.show_progress = stac, show_progress

    def fetch(self, bbox, folder) -> FetchedTiles:
        """Download the tiles of ``bbox`` missing under ``folder`` (:func:`fetch_tiles`).

        Parameters
        ----------
        bbox : tuple of float
            ``(minlon, minlat, maxlon, maxlat)`` in degrees.
        folder : str or Path
            The tile folder.

        Returns
        -------
        FetchedTiles
            Tiles on disk, tiles the server lacks, new downloads.
        """
        return fetch_tiles(
            bbox, folder, self.base_url, self.index, self.config, self.show_progress, self.stac
        )


class OfflineArcticDEMClient(ArcticDEMClient):
    """Uses the tiles already under the folder (the sample region, or a mirror).

    Tiles of the box that are absent are reported missing (the release has none over open
    ocean, so some may be absent by design); no tile at all raises
    :class:`MissingSourceFiles` naming the expected path and ``how`` to get the tiles.
    """

    name = "offline"
    offline = True

    def __init__(self, how: str = OFFLINE_HOW) -> None:
        self._how = how

    def fetch(self, bbox, folder) -> FetchedTiles:
        """Find the tiles of ``bbox`` already under ``folder``.

        Parameters
        ----------
        bbox : tuple of float
            ``(minlon, minlat, maxlon, maxlat)`` in degrees.
        folder : str or Path
            The tile folder.

        Returns
        -------
        FetchedTiles
            The tiles present and the absent ones (as missing); nothing downloaded.

        Raises
        ------
        MissingSourceFiles
            If no tile of the box is there.
        ValueError
            If a tile is truncated or corrupt (:func:`check_tiles_on_disk`).
        """
        paths = [tile_path(Path(folder), row, col) for row, col in tiles_for(bbox)]
        present = [p for p in paths if p.exists()]
        if not present:
            raise MissingSourceFiles(f"ArcticDEM 32 m tiles for {bbox}", folder, paths, self._how)
        check_tiles_on_disk(present, REFETCH_OFFLINE)
        return FetchedTiles(present, [tile_rowcol(p) for p in paths if not p.exists()], [])


def project_lonlat_box(bbox: tuple[float, float, float, float]) -> shapely.Polygon:
    """Project a lon/lat box to EPSG:3413, densified so its curved edges stay curved.

    Parameters
    ----------
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` in degrees.

    Returns
    -------
    shapely.Polygon
        The box in EPSG:3413 metres.
    """
    import shapely
    from pyproj import Transformer

    box = shapely.segmentize(shapely.box(*bbox), 0.02)
    to_polar = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    return shapely.transform(box, lambda xy: np.column_stack(to_polar.transform(*xy.T)))


def tiles_for(bbox: tuple[float, float, float, float]) -> list[tuple[int, int]]:
    """Return the tiles whose square intersects the lon/lat box ``bbox``.

    Parameters
    ----------
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` in degrees.

    Returns
    -------
    list of tuple of int
        ``(row, col)`` of the tiles.
    """
    import shapely

    area = project_lonlat_box(bbox)
    minx, miny, maxx, maxy = area.bounds
    row0, col0 = tile_of(minx, miny)
    row1, col1 = tile_of(maxx, maxy)
    return [
        (row, col)
        for row in range(row0, row1 + 1)
        for col in range(col0, col1 + 1)
        if area.intersects(shapely.box(*tile_bounds(row, col)))
    ]


def tile_rowcol(path: Path) -> tuple[int, int]:
    """Return the tile of a file from its name.

    Parameters
    ----------
    path : Path
        A tile file (``{row}_{col}_...``).

    Returns
    -------
    tuple of int
        ``(row, col)``.
    """
    row, col = path.name.split("_")[:2]
    return int(row), int(col)


def open_mosaic(paths: list[Path]) -> xr.DataArray:
    """Open the tiles as one lazy (Dask) elevation mosaic in EPSG:3413.

    Nothing is read until computed, so the mosaic of any number of tiles costs no memory.

    Parameters
    ----------
    paths : list of Path
        32 m ArcticDEM tiles (:func:`tile_path` names).

    Returns
    -------
    xarray.DataArray
        ``elevation`` in metres on ``(y, x)``, north first; nodata and gaps are NaN, and
        missing tiles inside the covered rectangle are all-NaN chunks.

    Raises
    ------
    ValueError
        If no tile is given or a tile is not in EPSG:3413 at 32 m.
    """
    import dask.array as da
    import rioxarray
    import xarray as xr

    if not paths:
        raise ValueError("no ArcticDEM tiles given: download the tiles covering the area first")
    tiles = {}
    for path in paths:
        tile = rioxarray.open_rasterio(
            path, masked=True, chunks={"x": CHUNK, "y": CHUNK}, cache=False, lock=False
        )
        assert isinstance(tile, xr.DataArray)  # one band, no subdatasets: a GeoTIFF
        if tile.rio.crs is None:
            raise ValueError(f"{path} has no CRS; ArcticDEM tiles are {CRS}")
        if tile.rio.crs.to_epsg() != 3413 or tile.rio.resolution() != (PIXEL_SIZE, -PIXEL_SIZE):
            raise ValueError(
                f"{path} is {tile.rio.crs} at {tile.rio.resolution()} m, not the 32 m "
                f"ArcticDEM mosaic in {CRS}"
            )
        tiles[tile_rowcol(Path(path))] = tile.isel(band=0, drop=True).astype(np.float32)
    rows = range(max(r for r, _ in tiles), min(r for r, _ in tiles) - 1, -1)  # north first
    cols = range(min(c for _, c in tiles), max(c for _, c in tiles) + 1)
    empty = da.full((TILE_PIXELS, TILE_PIXELS), np.nan, dtype=np.float32, chunks=CHUNK)
    blocks = [[tiles[(r, c)].data if (r, c) in tiles else empty for c in cols] for r in rows]
    left, _, _, top = tile_bounds(rows[0], cols[0])
    x = left + PIXEL_SIZE * (np.arange(len(cols) * TILE_PIXELS) + 0.5)
    y = top - PIXEL_SIZE * (np.arange(len(rows) * TILE_PIXELS) + 0.5)
    mosaic = xr.DataArray(
        da.block(blocks), coords={"y": y, "x": x}, dims=("y", "x"), name="elevation"
    )
    mosaic.attrs.update(units="m", long_name="height above the WGS84 ellipsoid")
    return mosaic.rio.write_crs(CRS).rio.write_nodata(np.nan, encoded=False)


def find_tiles(
    folder: str | Path, bbox: tuple[float, float, float, float]
) -> tuple[list[Path], list[Path]]:
    """Find the 32 m DEM tiles under ``folder`` that cover the lon/lat ``bbox``.

    Missing tiles are returned rather than refused because the release has no tiles over open
    ocean; callers report them.

    Parameters
    ----------
    folder : str or Path
        The tile folder.
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` in degrees.

    Returns
    -------
    tuple of list of Path
        ``(present, missing)``.

    Raises
    ------
    FileNotFoundError
        If no tile is there, naming the expected path.
    ValueError
        If a tile is truncated or corrupt (:func:`check_tiles_on_disk`).
    """
    folder = Path(folder)
    paths = [tile_path(folder, row, col) for row, col in tiles_for(bbox)]
    present = [p for p in paths if p.exists()]
    if not present:
        raise FileNotFoundError(
            f"no ArcticDEM 32 m tile for {bbox} under {folder} (expected e.g. {paths[0]}); "
            "download the tiles or run `make demo` for the sample region"
        )
    check_tiles_on_disk(present, REFETCH_OFFLINE)
    return present, [p for p in paths if not p.exists()]


def terrain_rasters(
    tiles: list[Path], water: gpd.GeoDataFrame | None, config: TerrainConfig | None = None
) -> xr.Dataset:
    """Compute elevation and every terrain derivative over the mosaic of ``tiles``, lazily.

    Water pixels are masked like nodata before the derivatives are computed, so no window
    reaches into a lake or the sea.

    Parameters
    ----------
    tiles : list of Path
        32 m ArcticDEM tiles.
    water : geopandas.GeoDataFrame or None
        Water polygons (see ``spatial.watermask``); None masks nothing.
    config : TerrainConfig, optional
        Derivatives and chunking; defaults to ``TerrainConfig()``.

    Returns
    -------
    xarray.Dataset
        ``elevation`` and the derivatives of ``config``, in EPSG:3413; the tile names in
        ``attrs["tiles"]``.
    """
    from entropice_core.spatial.watermask import water_raster
    from entropice_core.terrain.derivatives import TerrainConfig, terrain_derivatives

    config = config or TerrainConfig()
    mosaic = open_mosaic(tiles).chunk(config.chunk)
    mask = water_raster(water, mosaic) if water is not None else None
    rasters = terrain_derivatives(mosaic, config, water=mask)
    elevation = mosaic if mask is None else mosaic.where(~mask)
    rasters["elevation"] = elevation.rio.write_nodata(None)
    rasters["elevation"].attrs.update(mosaic.attrs, units="m")
    rasters.attrs["tiles"] = [Path(p).name for p in tiles]
    return rasters[["elevation", *config.names()]]
