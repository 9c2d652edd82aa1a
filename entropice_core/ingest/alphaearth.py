"""AlphaEarth Foundations Satellite Embedding V1: per-cell mean embeddings per year.

Facts (Earth Engine catalogue, GCS README; ``docs/alphaearth.md``): 64 bands ``A00``..``A63``,
unit-length vectors at 10 m, one image per year and UTM zone, years 2017 onward. Two access
paths give the same per-cell means:

- **Earth Engine**: ``ImageCollection("GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL")`` filtered by year
  and bounds, mosaicked, reduced with ``reduceRegions(fc, Reducer.mean(), scale=10, crs=...)``
  per *cluster* of cells (KMeans on EPSG:6931 centroids, see :func:`cluster_cells`), requests
  run concurrently with retries and a per-cluster on-disk cache (:func:`fetch_clusters`).
- **Cloud-Optimized GeoTIFFs** (``gs://alphaearth_foundations/{year}/{zone}{N|S}/*.tif*``):
  int8, nodata -128, dequantised as ``(q / 127.5)**2 * sign(q)``, aggregated with the project's
  exact-coverage engine (:func:`entropice_core.spatial.aggregators.aggregate_raster`); the
  cell-to-pixel map of each file grid is built once and reused for every band and year.
  :class:`CogClient` reads a local mirror; :class:`GcsCogClient` first downloads the files of
  the cells' UTM zones into it (:func:`fetch_cogs`, GCS JSON API, requester pays).

Both return the same L2 dataset (:func:`embedding_dataset`): dims ``(cell_ids, year)``, variables
``A00``..``A63`` (cell means as they are: a mean of unit vectors is shorter than 1) and
``valid_fraction`` (share of the cell covered by valid pixels).

Shape of the module: *download* (clients: :class:`EarthEngineClient`, :class:`CogClient`),
*read* (:func:`read_cog`, :func:`dequantize`), *derive* (:func:`embedding_dataset`). Credentials
are arguments; nothing here reads the environment.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import random
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyproj
import shapely
from pydantic import BaseModel, ConfigDict, Field

from entropice_core.config import (
    ENV_EE_KEY_DATA,
    ENV_EE_KEY_FILE,
    ENV_EE_PROJECT,
    ENV_EE_SERVICE_ACCOUNT,
    ENV_GCS_TOKEN,
    Device,
    GridSpec,
)
from entropice_core.ingest.gcs import DEFAULT_ENDPOINT, GcsBucket, service_account_token
from entropice_core.io.atomic import atomic_path
from entropice_core.io.download import DownloadConfig, MissingSourceFiles, SourceClient
from entropice_core.io.versions import files_fingerprint

if TYPE_CHECKING:  # imported where used: the Dagster definitions load without them
    import geopandas as gpd
    import xarray as xr

log = logging.getLogger(__name__)

COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
BANDS: tuple[str, ...] = tuple(f"A{i:02d}" for i in range(64))
#: int8 value of masked pixels in the COGs (in every band at once).
NODATA = -128
#: First year of the collection.
FIRST_YEAR = 2017
#: Last year in the Earth Engine catalogue (November 2026; the GCS README lists 2025 too).
LAST_YEAR = 2024
#: Earth Engine's high-volume endpoint (for many small automated requests).
HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
#: Projection of the cluster centroids (EASE-Grid 2.0 North, equal-area).
CLUSTER_CRS = "EPSG:6931"
#: Earth Engine's getInfo limit on the features of one answer.
EE_FEATURE_LIMIT = 5000
#: Earth Engine's per-project limit on concurrent requests.
EE_CONCURRENCY_QUOTA = 40
#: HTTP statuses retried (too many requests, server errors).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Environment variables the Dagster resource and the CLI read (named in error messages only).
ENV_SERVICE_ACCOUNT = ENV_EE_SERVICE_ACCOUNT
ENV_KEY_FILE = ENV_EE_KEY_FILE
ENV_KEY_DATA = ENV_EE_KEY_DATA
ENV_PROJECT = ENV_EE_PROJECT
ENV_TOKEN = ENV_GCS_TOKEN
#: The requester-pays bucket of the int8 COGs.
GCS_BUCKET = "alphaearth_foundations"
#: Rows of the COGs' internal tiles: the multi-level pass reads whole multiples of them where
#: its window holds more.
STRIP_ROWS = 256
#: Most bytes of dequantised float32 pixels (all 64 bands) the multi-level pass holds at once.
WINDOW_BYTES = 512 * 2**20


# --------------------------------------------------------------------------- read


def dequantize(q: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Turn int8 COG values into embedding values ``(q / 127.5)**2 * sign(q)``.

    Parameters
    ----------
    q : numpy.ndarray
        int8 values; :data:`NODATA` (-128) marks masked pixels.
    dtype : type, optional
        Float type of the result.

    Returns
    -------
    numpy.ndarray
        The values; -128 becomes NaN.
    """
    q = np.asarray(q)
    v = (q.astype(dtype) / dtype(127.5)) ** 2 * np.sign(q).astype(dtype)
    return np.where(q == NODATA, dtype(np.nan), v).astype(dtype)


def quantize(v: np.ndarray) -> np.ndarray:
    """Encode floats as the published COGs do: the inverse of :func:`dequantize`, to int8.

    ``sign(v) sqrt|v|`` times 127.5, rounded and clipped to -127..127.

    Parameters
    ----------
    v : numpy.ndarray
        Embedding values.

    Returns
    -------
    numpy.ndarray
        int8 values; NaN becomes -128.
    """
    v = np.asarray(v)
    v = v if v.dtype in (np.float32, np.float64) else v.astype(np.float64)
    q = np.clip(np.round(np.sign(v) * np.sqrt(np.abs(v)) * v.dtype.type(127.5)), -127, 127)
    return np.where(np.isnan(v), NODATA, np.nan_to_num(q)).astype(np.int8)


def utm_zone(lon: float | np.ndarray) -> np.ndarray:
    """Return the UTM zone number (1..60) of longitudes (no Norway/Svalbard exceptions).

    Parameters
    ----------
    lon : float or numpy.ndarray
        Longitudes in degrees east.

    Returns
    -------
    numpy.ndarray
        Zone numbers (int64).
    """
    return (np.floor((np.asarray(lon) + 180.0) / 6.0).astype(np.int64) % 60) + 1


def utm_zones_for(bbox: tuple[float, float, float, float]) -> list[int]:
    """Return the UTM zones a lon/lat box (``minlon < maxlon``) touches, west to east.

    Parameters
    ----------
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` in degrees.

    Returns
    -------
    list of int
        Zone numbers.
    """
    first, last = int(utm_zone(bbox[0])), int(utm_zone(np.nextafter(bbox[2], -np.inf)))
    return list(range(first, last + 1))


def utm_crs(zone: int, north: bool = True) -> str:
    """Return the EPSG code of a WGS84 UTM zone.

    Parameters
    ----------
    zone : int
        Zone number (1..60).
    north : bool, optional
        Northern (326xx) or southern (327xx) hemisphere.

    Returns
    -------
    str
        ``EPSG:326xx`` or ``EPSG:327xx``.
    """
    return f"EPSG:{32600 + zone if north else 32700 + zone}"


def zone_bounds(zone: int) -> tuple[float, float]:
    """Return the west and east longitude of a UTM zone.

    Parameters
    ----------
    zone : int
        Zone number (1..60).

    Returns
    -------
    tuple of float
        ``(west, east)`` in degrees, 6 degrees apart.
    """
    west = -180.0 + 6.0 * (zone - 1)
    return west, west + 6.0


def zone_dir(root: str | Path, year: int, zone: int, north: bool = True) -> Path:
    """Return the folder of one year and UTM zone in the GCS layout.

    Parameters
    ----------
    root : str or Path
        Root of the COG tree.
    year : int
        Year of the embeddings.
    zone : int
        UTM zone number.
    north : bool, optional
        Northern (``N``) or southern (``S``) hemisphere.

    Returns
    -------
    Path
        ``{root}/{year}/{zone}{N|S}``.
    """
    return Path(root) / str(year) / f"{zone}{'N' if north else 'S'}"


def find_cogs(root: str | Path, year: int) -> list[Path]:
    """Return every COG of ``year`` under ``root`` (all zones), sorted.

    Parameters
    ----------
    root : str or Path
        Root of the COG tree (:func:`zone_dir` layout).
    year : int
        Year of the embeddings.

    Returns
    -------
    list of Path
        The ``.tif``/``.tiff`` files.
    """
    base = Path(root) / str(year)
    return sorted(p for p in base.glob("*/*.tif*") if p.suffix in (".tif", ".tiff"))


def read_cog(path: str | Path, chunk: int = 1024) -> xr.DataArray:
    """Read one embedding COG as a lazy, dequantised ``(band, y, x)`` float32 DataArray.

    The result is north-up: files stored bottom-up (positive y resolution) are flipped.

    Parameters
    ----------
    path : str or Path
        The COG.
    chunk : int, optional
        Dask chunk size along ``y`` and ``x`` (all bands in one chunk).

    Returns
    -------
    xarray.DataArray
        Bands ``A00``..``A63``, NaN where masked, with the file's CRS and transform.

    Raises
    ------
    ValueError
        If the file does not have 64 bands.
    """
    import rioxarray
    import xarray as xr

    raw = rioxarray.open_rasterio(path, chunks={"band": -1, "y": chunk, "x": chunk})
    assert isinstance(raw, xr.DataArray)
    if raw.sizes["band"] != len(BANDS):
        raise ValueError(f"{path}: {raw.sizes['band']} bands, expected {len(BANDS)} (A00..A63)")
    if raw.rio.transform().e > 0:
        raw = raw.isel(y=slice(None, None, -1))
    crs, transform = raw.rio.crs, raw.rio.transform()
    data = xr.apply_ufunc(dequantize, raw, dask="parallelized", output_dtypes=[np.float32])
    data = data.assign_coords(band=list(BANDS))
    data.attrs = {}
    return data.rio.write_crs(crs).rio.write_transform(transform)


# --------------------------------------------------------------------------- derive


def embedding_dataset(
    cell_ids: np.ndarray,
    years: Sequence[int],
    means: np.ndarray,
    valid_fraction: np.ndarray,
    spec: GridSpec,
) -> xr.Dataset:
    """Build the L2 dataset from per-year cell means and valid fractions.

    Parameters
    ----------
    cell_ids : numpy.ndarray
        Cell ids of ``spec``.
    years : sequence of int
        The years, in the order of the first axis of ``means``.
    means : numpy.ndarray
        ``(years, cells, 64)`` cell means.
    valid_fraction : numpy.ndarray
        ``(years, cells)`` share of each cell covered by valid pixels.
    spec : GridSpec
        Grid and level of the cells.

    Returns
    -------
    xarray.Dataset
        Variables ``A00``..``A63`` and ``valid_fraction`` as float32 on ``(cell_ids, year)``;
        cells without any valid pixel are NaN with valid_fraction 0.
    """
    import xarray as xr

    dims = ("cell_ids", "year")
    variables = {
        band: xr.Variable(
            dims,
            means[:, :, i].T.astype(np.float32),
            {"long_name": f"mean of AlphaEarth embedding axis {band}"},
        )
        for i, band in enumerate(BANDS)
    }
    variables["valid_fraction"] = xr.Variable(
        dims,
        valid_fraction.T.astype(np.float32),
        {"long_name": "share of the cell covered by valid pixels"},
    )
    ds = xr.Dataset(
        variables,  # one construction: assigning 65 variables one by one costs ~0.1 s
        coords={
            "cell_ids": ("cell_ids", np.asarray(cell_ids, dtype=np.uint64), spec.xdggs_attrs),
            "year": ("year", np.asarray(years, dtype=np.int64)),
        },
    )
    ds.attrs.update(
        grid=spec.grid,
        level=spec.level,
        source="AlphaEarth Foundations Satellite Embedding V1 (annual)",
        license="CC-BY-4.0",
        attribution=ATTRIBUTION,
    )
    return ds


ATTRIBUTION = (
    "The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google "
    "DeepMind."
)


@dataclass(frozen=True)
class ClusterMeans:
    """One request's answer: per-cell means ``(cells, 64)`` and valid fractions.

    Both are in the order of ``cell_ids``.
    """

    cell_ids: np.ndarray
    means: np.ndarray
    valid_fraction: np.ndarray


@dataclass
class FetchStats:
    """What a run cost: requests sent (attempts included), answers from the cache."""

    requests: int = 0
    attempts: int = 0
    cached: int = 0
    clusters: int = 0


@dataclass(frozen=True)
class EmbeddingResult:
    """The L2 dataset and what producing it cost."""

    dataset: xr.Dataset
    stats: FetchStats = field(default_factory=FetchStats)


class EmbeddingClient(SourceClient):
    """Where embeddings come from.

    ``repr`` shows only the client's name (constructor arguments may hold credentials).
    """

    @abstractmethod
    def embeddings(
        self, cells: gpd.GeoDataFrame, spec: GridSpec, years: Sequence[int]
    ) -> EmbeddingResult:
        """Return the L2 dataset of ``cells`` for ``years``.

        Parameters
        ----------
        cells : geopandas.GeoDataFrame
            A ``grid_cells`` frame: cell_id, EPSG:4326 geometry.
        spec : GridSpec
            Grid and level of the cells.
        years : sequence of int
            The years to fetch.

        Returns
        -------
        EmbeddingResult
            The dataset (:func:`embedding_dataset`) and what producing it cost.
        """
        ...

    def embeddings_levels(
        self, levels: Mapping[str, gpd.GeoDataFrame], years: Sequence[int]
    ) -> dict[str, EmbeddingResult]:
        """Return the L2 dataset of every grid level's cells for ``years``.

        Level by level through :meth:`embeddings`; clients that aggregate files themselves
        serve all levels in one pass instead.

        Parameters
        ----------
        levels : mapping of str to geopandas.GeoDataFrame
            Grid level key (``GridSpec.key``) to its ``grid_cells``.
        years : sequence of int
            The years to fetch.

        Returns
        -------
        dict of str to EmbeddingResult
            Per level key, its dataset and what producing it cost.
        """
        return {
            key: self.embeddings(cells, GridSpec.from_key(key), years)
            for key, cells in levels.items()
        }


# --------------------------------------------------------------------------- batching


class BatchConfig(BaseModel):
    """How cells are grouped into requests (:func:`cluster_points`).

    KMeans on EPSG:6931 centroids until every cluster has at most ``max_cells`` cells and spans
    at most ``max_extent_km`` (the larger side of its centroids' bounding box).
    """

    model_config = ConfigDict(frozen=True)

    max_cells: int = Field(default=1000, ge=1, le=EE_FEATURE_LIMIT - 1)
    max_extent_km: float = Field(default=300.0, gt=0)
    seed: int = 0


class RequestConfig(BaseModel):
    """How requests run.

    Concurrency (under the quota of 40), retries with exponential backoff
    (``initial_backoff_s * 2**k`` capped at ``max_backoff_s``, with jitter) on HTTP 429 and 5xx,
    at most ``max_attempts`` per cluster and ``total_timeout_s`` per run; ``scale_m``, ``crs``
    (``None``: the UTM zone of the cluster's centre) and ``tile_scale`` go to reduceRegions.
    """

    model_config = ConfigDict(frozen=True)

    concurrency: int = Field(default=16, ge=1, lt=EE_CONCURRENCY_QUOTA)
    max_attempts: int = Field(default=6, ge=1)
    initial_backoff_s: float = Field(default=2.0, ge=0)
    max_backoff_s: float = Field(default=120.0, ge=0)
    total_timeout_s: float = Field(default=6 * 3600.0, gt=0)
    scale_m: float = Field(default=10.0, gt=0)
    crs: str | None = None
    tile_scale: int = Field(default=4, ge=1, le=16)


def _centroids_6931(cells: gpd.GeoDataFrame) -> np.ndarray:
    """Return cell centroids in EPSG:6931 metres, ``(n, 2)``.

    The lon/lat centroid of each cell, then projected (centroids of cells cut at 180 degrees
    come from the larger part's ring).
    """
    pts = shapely.centroid(shapely.get_geometry(cells.geometry.to_numpy(), 0))
    single = np.asarray([p if p is not None else shapely.Point() for p in pts])
    xy = shapely.get_coordinates(single)
    tr = pyproj.Transformer.from_crs("EPSG:4326", CLUSTER_CRS, always_xy=True)
    x, y = tr.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([x, y])


def cluster_cells(cells: gpd.GeoDataFrame, config: BatchConfig = BatchConfig()) -> np.ndarray:
    """Return the cluster label (0..k-1) of every cell of a ``grid_cells`` frame.

    See :func:`cluster_points` (on the cells' EPSG:6931 centroids).

    Parameters
    ----------
    cells : geopandas.GeoDataFrame
        A ``grid_cells`` frame: cell_id, EPSG:4326 geometry.
    config : BatchConfig, optional
        Cluster size and extent limits.

    Returns
    -------
    numpy.ndarray
        int64 labels, one per row of ``cells``.
    """
    return cluster_points(_centroids_6931(cells), cells["cell_id"].to_numpy(), config)


#: Most clusters one KMeans call makes; larger sets are split level by level.
MAX_K = 64


def cluster_points(
    xy: np.ndarray, ids: np.ndarray, config: BatchConfig = BatchConfig()
) -> np.ndarray:
    """Return the cluster label (0..k-1) of every point ``xy`` (EPSG:6931 metres).

    Clusters are compact groups of at most ``config.max_cells`` points spanning at most
    ``config.max_extent_km``. A group above either limit is split by KMeans (scikit-learn,
    fixed seed) into ``ceil(n / max_cells)`` clusters (at most :data:`MAX_K` per call, at least
    2), recursively until every group fits; a split KMeans cannot make (all points in one
    cluster) cuts at the median of the longer axis.

    Parameters
    ----------
    xy : numpy.ndarray
        ``(n, 2)`` point coordinates in metres.
    ids : numpy.ndarray
        ``(n,)`` ids of the points (cell ids), for the order of the labels.
    config : BatchConfig, optional
        Cluster size and extent limits, KMeans seed.

    Returns
    -------
    numpy.ndarray
        int64 labels, ordered by each cluster's smallest id, so they do not depend on KMeans'
        numbering.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # many small fits: threads only contend
        return _cluster_points(KMeans, xy, ids, config)


def _cluster_points(kmeans, xy: np.ndarray, ids: np.ndarray, config: BatchConfig) -> np.ndarray:
    n = len(xy)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    groups = [np.arange(n)]
    done: list[np.ndarray] = []
    while groups:
        g = groups.pop()
        span = np.ptp(xy[g], axis=0) if len(g) else np.zeros(2)
        if len(g) <= config.max_cells and span.max() / 1000.0 <= config.max_extent_km:
            done.append(g)
            continue
        if span.max() == 0:
            done.append(g)  # identical points: nothing left to split
            continue
        k = int(min(MAX_K, max(2, -(-len(g) // config.max_cells))))
        labels = kmeans(k, n_init=1, random_state=config.seed).fit_predict(xy[g])
        parts = [g[labels == j] for j in range(k)]
        parts = [p for p in parts if len(p)]
        if len(parts) < 2:
            axis = int(np.argmax(span))
            cut = xy[g, axis] > np.median(xy[g, axis])
            parts = (
                [g[~cut], g[cut]]
                if cut.any() and (~cut).any()
                else [g[: len(g) // 2], g[len(g) // 2 :]]
            )
        groups += parts
    ids = np.asarray(ids)
    done.sort(key=lambda g: ids[g].min())
    out = np.empty(n, dtype=np.int64)
    for j, g in enumerate(done):
        out[g] = j
    return out


def cluster_key(cell_ids: np.ndarray) -> str:
    """Return the content hash of a cluster (its sorted cell ids).

    Parameters
    ----------
    cell_ids : numpy.ndarray
        The cluster's cell ids, in any order.

    Returns
    -------
    str
        20 hex digits of a SHA-256.
    """
    ids = np.sort(np.asarray(cell_ids, dtype=np.uint64))
    return hashlib.sha256(ids.astype("<u8").tobytes()).hexdigest()[:20]


class ClusterCache:
    """Per-cluster answers on disk: ``{root}/{grid_level}/{year}/{hash of cell ids}.npz``.

    Written atomically after each successful request, so a killed run keeps every finished
    cluster and a re-run asks only for the missing ones.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, spec: GridSpec, year: int, cell_ids: np.ndarray) -> Path:
        """Return the cache file of a cluster.

        Parameters
        ----------
        spec : GridSpec
            Grid and level of the cells.
        year : int
            Year of the embeddings.
        cell_ids : numpy.ndarray
            The cluster's cell ids.

        Returns
        -------
        Path
            ``{root}/{grid_level}/{year}/{hash of cell ids}.npz``.
        """
        return self.root / spec.key / str(year) / f"{cluster_key(cell_ids)}.npz"

    def load(self, spec: GridSpec, year: int, cell_ids: np.ndarray) -> ClusterMeans | None:
        """Return a cluster's cached answer.

        Parameters
        ----------
        spec : GridSpec
            Grid and level of the cells.
        year : int
            Year of the embeddings.
        cell_ids : numpy.ndarray
            The cluster's cell ids.

        Returns
        -------
        ClusterMeans or None
            The answer; None where there is no file or it holds other cells.
        """
        path = self.path(spec, year, cell_ids)
        if not path.exists():
            return None
        with np.load(path) as z:
            found = ClusterMeans(z["cell_ids"], z["means"], z["valid_fraction"])
        if not np.array_equal(np.sort(found.cell_ids), np.sort(cell_ids)):
            return None  # hash collision or foreign file: fetch again
        return found

    def save(self, spec: GridSpec, year: int, result: ClusterMeans) -> None:
        """Write a cluster's answer atomically.

        Parameters
        ----------
        spec : GridSpec
            Grid and level of the cells.
        year : int
            Year of the embeddings.
        result : ClusterMeans
            The answer; its ``cell_ids`` name the file.
        """
        path = self.path(spec, year, result.cell_ids)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                cell_ids=result.cell_ids,
                means=result.means,
                valid_fraction=result.valid_fraction,
            )


class RequestFailed(RuntimeError):
    """A cluster's request failed for good (retries spent, time bound reached, not retryable)."""


def http_status(exc: BaseException) -> int | None:
    """Return the HTTP status an Earth Engine / Google API error carries, if any.

    ``googleapiclient.errors.HttpError`` has ``resp.status`` (and ``status_code``); Earth
    Engine's ``EEException`` only has the message, which names the status or its reason.

    Parameters
    ----------
    exc : BaseException
        The error.

    Returns
    -------
    int or None
        The status; None where the error names none.
    """
    for candidate in (
        getattr(exc, "status_code", None),
        getattr(getattr(exc, "resp", None), "status", None),
        getattr(exc, "code", None),
    ):
        if isinstance(candidate, int | str) and str(candidate).isdigit():
            return int(candidate)
    text = str(exc)
    for status, words in (
        (429, ("429", "Too Many Requests", "RESOURCE_EXHAUSTED", "Too many concurrent")),
        (503, ("503", "Service Unavailable", "UNAVAILABLE")),
        (502, ("502", "Bad Gateway")),
        (504, ("504", "Gateway Timeout", "DEADLINE_EXCEEDED")),
        (500, ("500", "Internal Server Error", "INTERNAL")),
    ):
        if any(w in text for w in words):
            return status
    return None


Fetch = Callable[["gpd.GeoDataFrame", int], ClusterMeans]


def _with_retries(
    fetch: Fetch,
    cells: gpd.GeoDataFrame,
    year: int,
    cluster: int,
    config: RequestConfig,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    stats: FetchStats,
    rng: random.Random,
) -> ClusterMeans:
    attempt = 0
    while True:
        attempt += 1
        stats.attempts += 1
        try:
            return fetch(cells, year)
        except Exception as exc:
            status = http_status(exc)
            where = f"cluster {cluster} ({len(cells)} cells) of year {year}"
            if status not in RETRY_STATUSES:
                raise RequestFailed(
                    f"AlphaEarth request for {where} failed after {attempt} attempts: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            delay = min(config.max_backoff_s, config.initial_backoff_s * 2 ** (attempt - 1))
            delay *= 0.5 + 0.5 * rng.random()
            if attempt >= config.max_attempts or clock() + delay > deadline:
                raise RequestFailed(
                    f"AlphaEarth request for {where} failed after {attempt} attempts "
                    f"(last: HTTP {status}, {type(exc).__name__}: {exc}); retries or the "
                    f"{config.total_timeout_s:g} s bound are spent"
                ) from exc
            log.warning(
                "HTTP %s for %s, attempt %d; retrying in %.1f s", status, where, attempt, delay
            )
            sleep(delay)


def fetch_clusters(
    fetch: Fetch,
    cells: gpd.GeoDataFrame,
    spec: GridSpec,
    years: Sequence[int],
    *,
    cache: ClusterCache | None = None,
    batch: BatchConfig = BatchConfig(),
    requests: RequestConfig = RequestConfig(),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> EmbeddingResult:
    """Compute per-cell means of ``years`` through per-cluster requests.

    Clusters come from :func:`cluster_cells`; cached clusters are read, the others requested on
    a pool of ``requests.concurrency`` threads with :class:`RequestConfig`'s retries, and each
    answer is cached as soon as it arrives.

    Parameters
    ----------
    fetch : callable
        ``fetch(cluster_cells, year)`` makes one request and returns its :class:`ClusterMeans`.
    cells : geopandas.GeoDataFrame
        A ``grid_cells`` frame: cell_id, EPSG:4326 geometry.
    spec : GridSpec
        Grid and level of the cells.
    years : sequence of int
        The years to fetch.
    cache : ClusterCache, optional
        Where answers are read from and written to; None caches nothing.
    batch : BatchConfig, optional
        How cells are grouped into requests.
    requests : RequestConfig, optional
        Concurrency, retries and the time bound.
    clock, sleep : callable, optional
        Time source and sleep of the retries (tests pass fakes).

    Returns
    -------
    EmbeddingResult
        The L2 dataset and the request, attempt and cache counts.

    Raises
    ------
    RequestFailed
        On the first failure, once the running requests end (their answers are cached too);
        the requests not yet started are cancelled.
    """
    labels = cluster_cells(cells, batch)
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    members = [np.flatnonzero(labels == j) for j in range(n_clusters)]
    ids = cells["cell_id"].to_numpy().astype(np.uint64)
    index = {int(c): i for i, c in enumerate(ids)}
    means = np.full((len(years), len(ids), len(BANDS)), np.nan)
    valid = np.zeros((len(years), len(ids)))
    stats = FetchStats(clusters=n_clusters)
    deadline = clock() + requests.total_timeout_s

    def place(y: int, found: ClusterMeans) -> None:
        rows = np.array([index[int(c)] for c in found.cell_ids], dtype=np.int64)
        means[y, rows] = found.means
        valid[y, rows] = found.valid_fraction

    todo: list[tuple[int, int, int]] = []
    for y, year in enumerate(years):
        for j, m in enumerate(members):
            found = cache.load(spec, year, ids[m]) if cache else None
            if found is None:
                todo.append((y, year, j))
            else:
                stats.cached += 1
                place(y, found)

    def run(y: int, year: int, j: int) -> tuple[int, ClusterMeans]:
        rng = random.Random(hash((requests.max_attempts, year, j)))
        sub = cells.iloc[members[j]][["cell_id", "geometry"]]
        found = _with_retries(fetch, sub, year, j, requests, deadline, clock, sleep, stats, rng)
        if cache:
            cache.save(spec, year, found)
        return y, found

    if todo:
        with ThreadPoolExecutor(max_workers=requests.concurrency) as pool:
            futures = [pool.submit(run, *t) for t in todo]
            stats.requests = len(futures)
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed:
                for f in futures:
                    f.cancel()
                pool.shutdown(wait=True)
                exc = failed[0].exception()
                assert exc is not None
                raise exc
            for f in futures:
                place(*f.result())
    log.info(
        "alphaearth %s: %d clusters x %d years, %d requested, %d from cache",
        spec.key, n_clusters, len(years), len(todo), stats.cached,
    )  # fmt: skip
    dataset = embedding_dataset(ids, years, means, valid, spec)
    return EmbeddingResult(dataset=dataset, stats=stats)


# --------------------------------------------------------------------------- Earth Engine


class CredentialsMissing(RuntimeError):
    """No service account, key or project given for Earth Engine."""


def _import_ee() -> ModuleType:
    try:
        return importlib.import_module("ee")
    except ImportError as err:
        raise ImportError(
            "Earth Engine access needs the earthengine-api package: install the 'earthengine' "
            "extra (uv sync --extra earthengine, or pip install 'entropice[earthengine]')"
        ) from err


class EarthEngineClient(EmbeddingClient):
    """Per-cluster ``reduceRegions`` on Earth Engine with a service account.

    Parameters
    ----------
    service_account
        The service account's e-mail.
    project
        The Google Cloud project registered for Earth Engine.
    key_file, key_data
        The service account's JSON key, as a path or as its text (one of the two). Never
        logged; ``repr`` shows neither.
    high_volume
        Use the high-volume endpoint (recommended for many small automated requests).
    ee_module
        The ``ee`` module to use (tests pass a fake); imported lazily otherwise.
    """

    name: ClassVar[str] = "earthengine"
    offline: ClassVar[bool] = False

    def __init__(
        self,
        service_account: str | None,
        project: str | None,
        *,
        key_file: str | Path | None = None,
        key_data: str | None = None,
        high_volume: bool = True,
        cache: ClusterCache | None = None,
        batch: BatchConfig = BatchConfig(),
        requests: RequestConfig = RequestConfig(),
        ee_module: ModuleType | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        missing = [
            name
            for name, value in (
                (ENV_SERVICE_ACCOUNT, service_account),
                (
                    f"{ENV_KEY_FILE} (or the key's JSON text in {ENV_KEY_DATA})",
                    key_file or key_data,
                ),
                (ENV_PROJECT, project),
            )
            if not value
        ]
        if missing:
            raise CredentialsMissing(
                "Earth Engine credentials missing: set " + ", ".join(missing)
                + " (a service account registered for Earth Engine; see docs/alphaearth.md)"
            )  # fmt: skip
        self.service_account = str(service_account)
        self.project = str(project)
        self._key_file = None if key_file is None else str(key_file)
        self._key_data = key_data
        self.high_volume = high_volume
        self.cache = cache
        self.batch = batch
        self.requests = requests
        self._ee_module = ee_module
        self._ee: ModuleType | None = None
        self._sleep = sleep

    @property
    def ee(self) -> ModuleType:
        """The initialised ``ee`` module (authenticated on first use)."""
        if self._ee is None:
            ee = self._ee_module or _import_ee()
            creds = ee.ServiceAccountCredentials(
                self.service_account, key_file=self._key_file, key_data=self._key_data
            )
            kwargs: dict[str, Any] = {"project": self.project}
            if self.high_volume:
                kwargs["opt_url"] = HIGH_VOLUME_URL
            ee.Initialize(creds, **kwargs)
            log.info(
                "Earth Engine initialised for project %s as %s", self.project, self.service_account
            )
            self._ee = ee
        return self._ee

    def image(self, year: int, region: Any) -> Any:
        """Return the year's mosaic over ``region`` with a ``valid_fraction`` band.

        That band is the embedding mask, 0 outside the images, so its region mean is the valid
        share.

        Parameters
        ----------
        year : int
            Year of the embeddings.
        region : ee.Geometry
            Where the images are selected.

        Returns
        -------
        ee.Image
            The 64 bands and ``valid_fraction``.
        """
        ee = self.ee
        images = (
            ee.ImageCollection(COLLECTION)
            .filterDate(f"{year}-01-01", f"{year + 1}-01-01")
            .filterBounds(region)
        )
        mosaic = images.mosaic().select(list(BANDS))
        valid = mosaic.select(BANDS[0]).mask().unmask(0).rename("valid_fraction")
        return mosaic.addBands(valid)

    def reduce_cluster(self, cells: gpd.GeoDataFrame, year: int) -> ClusterMeans:
        """Request the means of ``cells`` (one cluster) for ``year``.

        Parameters
        ----------
        cells : geopandas.GeoDataFrame
            The cluster's cells: cell_id, EPSG:4326 geometry.
        year : int
            Year of the embeddings.

        Returns
        -------
        ClusterMeans
            The answer, in the order of ``cells``.
        """
        ee = self.ee
        features = [
            ee.Feature(ee.Geometry(shapely.geometry.mapping(g), None, False), {"cell_id": str(c)})
            for c, g in zip(cells["cell_id"], cells.geometry, strict=True)
        ]
        fc = ee.FeatureCollection(features)
        crs = self.requests.crs
        if crs is None:
            lon = float(np.mean(cells.geometry.total_bounds[[0, 2]]))
            lat = float(np.mean(cells.geometry.total_bounds[[1, 3]]))
            crs = utm_crs(int(utm_zone(lon)), lat >= 0)
        reduced = self.image(year, fc.geometry()).reduceRegions(
            collection=fc,
            reducer=ee.Reducer.mean(),
            scale=self.requests.scale_m,
            crs=crs,
            tileScale=self.requests.tile_scale,
        )
        answer = reduced.getInfo()
        return _parse_features(answer["features"], cells["cell_id"].to_numpy())

    def embeddings(
        self, cells: gpd.GeoDataFrame, spec: GridSpec, years: Sequence[int]
    ) -> EmbeddingResult:
        """Return the L2 dataset of ``cells`` for ``years`` (:func:`fetch_clusters`).

        Parameters
        ----------
        cells : geopandas.GeoDataFrame
            A ``grid_cells`` frame: cell_id, EPSG:4326 geometry.
        spec : GridSpec
            Grid and level of the cells.
        years : sequence of int
            The years to fetch.

        Returns
        -------
        EmbeddingResult
            The dataset and the request, attempt and cache counts.
        """
        return fetch_clusters(
            self.reduce_cluster,
            cells,
            spec,
            years,
            cache=self.cache,
            batch=self.batch,
            requests=self.requests,
            sleep=self._sleep,
        )


def _parse_features(features: list[dict], expected: np.ndarray) -> ClusterMeans:
    """Turn reduceRegions' features into arrays; a band missing (no valid pixel) is NaN."""
    props = {int(f["properties"]["cell_id"]): f["properties"] for f in features}
    ids = np.asarray(expected, dtype=np.uint64)
    if set(props) != {int(c) for c in ids}:
        raise ValueError(f"Earth Engine answered {len(props)} cells, {len(ids)} were asked for")
    means = np.array(
        [[_num(props[int(c)].get(b)) for b in BANDS] for c in ids], dtype=np.float64
    ).reshape(len(ids), len(BANDS))
    valid = np.array([_num(props[int(c)].get("valid_fraction")) for c in ids])
    return ClusterMeans(ids, means, np.nan_to_num(valid))


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


# --------------------------------------------------------------------------- COGs


class CogClient(EmbeddingClient):
    """Per-cell means from the int8 COGs under ``root`` (the GCS layout, mirrored locally).

    Every file of a year is aggregated with the exact-coverage engine (statistics ``sum``,
    ``count`` and ``valid_fraction``) over the cells that touch it; per cell, the means of all
    files combine as ``sum(sum) / sum(count)`` (what one pass over the union of the files
    would give) and the valid fractions add up (zones do not overlap). The cell-to-pixel map of
    each distinct file grid (CRS, transform, shape) and set of cells is built once per client
    and reused for all 64 bands and every year.

    Several grid levels (:meth:`embeddings_levels`, what the ``alphaearth_statistics`` asset
    and the CLI call) are served by one pass over each file with the multi-level engine, in
    strips of at most ``window_bytes``; the cache then keeps one answer per (level, year).
    ``device="cuda"`` reduces the strips on the GPU (``aggregate_levels``' sorted engine).

    One level (:meth:`embeddings`) with a ``cache`` is answered per (cluster, year) through
    :func:`fetch_clusters` exactly as :class:`EarthEngineClient` does (same clusters,
    concurrency, cache and statistics, a "request" being one local aggregation): the offline
    twin of the real batching and caching, which the tests drive. Either cache is kept per
    year under a fingerprint of that year's files (:func:`files_fingerprint`): regenerated or
    replaced files are never answered from an old cache. Without a cache, one pass over all
    cells.
    """

    name: ClassVar[str] = "alphaearth-cogs"
    offline: ClassVar[bool] = True

    def __init__(
        self,
        root: str | Path,
        *,
        parallel: bool = False,
        window_bytes: int = WINDOW_BYTES,
        cache: ClusterCache | None = None,
        batch: BatchConfig = BatchConfig(),
        requests: RequestConfig = RequestConfig(concurrency=2),
        device: Device = "cpu",
    ) -> None:
        self.root = Path(root)
        self.parallel = parallel
        self.window_bytes = window_bytes
        self.device = device
        self.cache = cache
        self.batch = batch
        self.requests = requests
        self.maps_built = 0
        self._maps: dict[tuple, tuple[np.ndarray, Any]] = {}
        self._plans: dict[tuple, tuple[dict[str, np.ndarray], Any, Any]] = {}
        self._lock = threading.Lock()

    def embeddings(
        self, cells: gpd.GeoDataFrame, spec: GridSpec, years: Sequence[int]
    ) -> EmbeddingResult:
        """Return the L2 dataset of ``cells`` for ``years`` from the COGs.

        With a cache, per (cluster, year) through :func:`fetch_clusters`; without, one pass.

        Parameters
        ----------
        cells : geopandas.GeoDataFrame
            A ``grid_cells`` frame: cell_id, EPSG:4326 geometry.
        spec : GridSpec
            Grid and level of the cells.
        years : sequence of int
            The years to aggregate.

        Returns
        -------
        EmbeddingResult
            The dataset and, with a cache, the request and cache counts.

        Raises
        ------
        MissingSourceFiles
            If a year has no COG under ``root``.
        """
        if self.cache is None:
            ids, means, valid = self._means(cells, spec, years)
            dataset = embedding_dataset(ids, years, means, valid, spec)
            return EmbeddingResult(dataset, FetchStats())
        for year in years:
            self._paths(year)  # missing files fail here, before any cluster is started
        cache = _VersionedCache(self.cache, lambda year: files_fingerprint(self._paths(year)))
        return fetch_clusters(
            lambda sub, year: self.reduce_cluster(sub, spec, year),
            cells,
            spec,
            years,
            cache=cache,
            batch=self.batch,
            requests=self.requests,
        )

    def embeddings_levels(
        self, levels: Mapping[str, gpd.GeoDataFrame], years: Sequence[int]
    ) -> dict[str, EmbeddingResult]:
        """Return the L2 datasets of several grid levels from one pass over each file.

        Every file of a year is read once and reduced on all levels together by the
        multi-level engine (:func:`entropice_core.spatial.levels.aggregate_levels`: each pixel
        sorted into its atom of the levels' overlay once), instead of once per level and
        cluster. With a cache, each (level, year) answer is kept whole under the year's file
        fingerprint: a year computed before is read back, and a "request" is one year's pass.

        Parameters
        ----------
        levels : mapping of str to geopandas.GeoDataFrame
            Grid level key to its ``grid_cells``.
        years : sequence of int
            The years to aggregate.

        Returns
        -------
        dict of str to EmbeddingResult
            Per level key, its dataset and the count of (level, year) answers computed
            (``requests``) and read from the cache (``cached``); ``clusters`` is 1.

        Raises
        ------
        MissingSourceFiles
            If a year has no COG under ``root``.
        """
        ids = {key: cells["cell_id"].to_numpy().astype(np.uint64) for key, cells in levels.items()}
        means = {key: np.full((len(years), len(v), len(BANDS)), np.nan) for key, v in ids.items()}
        valid = {key: np.zeros((len(years), len(v))) for key, v in ids.items()}
        stats = {key: FetchStats(clusters=1) for key in levels}
        specs = {key: GridSpec.from_key(key) for key in levels}
        paths = {year: self._paths(year) for year in years}  # missing files fail before work
        tags = {year: files_fingerprint(found) for year, found in paths.items()}
        cache = _VersionedCache(self.cache, tags.__getitem__) if self.cache else None
        for y, year in enumerate(years):
            todo = {}
            for key, cells in levels.items():
                found = cache.load(specs[key], year, ids[key]) if cache else None
                if found is None:
                    todo[key] = cells
                    continue
                order = np.argsort(found.cell_ids)
                at = order[np.searchsorted(found.cell_ids, ids[key], sorter=order)]
                means[key][y], valid[key][y] = found.means[at], found.valid_fraction[at]
                stats[key].cached += 1
            computed = self._level_means(todo, paths[year]) if todo else {}
            for key, (level_means, level_valid) in computed.items():
                means[key][y], valid[key][y] = level_means, level_valid
                stats[key].requests += 1
                stats[key].attempts += 1
                if cache:
                    answer = ClusterMeans(ids[key], level_means, level_valid)
                    cache.save(specs[key], year, answer)
        return {
            key: EmbeddingResult(
                embedding_dataset(ids[key], years, means[key], valid[key], specs[key]),
                stats[key],
            )
            for key in levels
        }

    def _level_means(
        self, levels: Mapping[str, gpd.GeoDataFrame], paths: Sequence[Path]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Aggregate one year's files on several levels: per level, means and valid fractions.

        Each file is read once, in strips of rows of at most ``window_bytes`` (all 64 bands
        dequantised to float32: an 8192 px wide tile takes 256 rows at a time under the
        default), and each strip's window of the cells is reduced on every level whose cells
        touch it. Sums, coverage counts and valid fractions add up over disjoint strips and
        files (zones do not overlap), so per cell the mean is ``sum(sum) / sum(count)``
        exactly, however the files are cut.
        """
        from entropice_core.spatial.aggregators import AggregationConfig
        from entropice_core.spatial.levels import aggregate_levels

        config = AggregationConfig(statistics=("sum", "count", "valid_fraction"))
        total = {key: np.zeros((len(cells), len(BANDS))) for key, cells in levels.items()}
        count = {key: np.zeros(len(cells)) for key, cells in levels.items()}
        valid = {key: np.zeros(len(cells)) for key, cells in levels.items()}
        for path in paths:
            whole = read_cog(path, chunk=STRIP_ROWS).to_dataset(dim="band")
            height, width = whole.sizes["y"], whole.sizes["x"]
            per_row = width * len(BANDS) * np.dtype(np.float32).itemsize
            step = max(1, self.window_bytes // per_row)
            if step > STRIP_ROWS:  # whole tile rows: each tile decoded once
                step -= step % STRIP_ROWS
            for top in range(0, height, step):
                strip = whole.isel(y=slice(top, top + step))
                rows, window, level_map = self._level_plan(levels, strip)
                if level_map is None:
                    continue
                touching = {key: levels[key].iloc[rows[key]] for key in level_map.levels}
                found = aggregate_levels(
                    window.load(), touching, config, level_map=level_map, device=self.device
                )
                self._add(found, rows, total, count, valid)
        return {key: _combined_means(total[key], count[key], valid[key]) for key in levels}

    @staticmethod
    def _add(
        found: Mapping[str, xr.Dataset],
        rows: Mapping[str, np.ndarray],
        total: Mapping[str, np.ndarray],
        count: Mapping[str, np.ndarray],
        valid: Mapping[str, np.ndarray],
    ) -> None:
        """Add one window's sums, counts and valid fractions to the rows of its cells."""
        for key, out in found.items():
            r, found_vars = rows[key], out.variables  # Variables: no DataArray built per band
            sums = np.stack([found_vars[f"{band}_sum"].values for band in BANDS], axis=1)
            total[key][r] += np.nan_to_num(sums)
            count[key][r] += found_vars[f"{BANDS[0]}_count"].values
            valid[key][r] += np.nan_to_num(found_vars[f"{BANDS[0]}_valid_fraction"].values)

    def _level_plan(
        self, levels: Mapping[str, gpd.GeoDataFrame], raster: xr.Dataset
    ) -> tuple[dict[str, np.ndarray], xr.Dataset, Any]:
        """Return the rows of each level touching ``raster``, its window and their atoms.

        Built once per (file grid, cells): the years of a zone share their grid, so the
        atoms of every level are found once, not once per year. The atoms are None where no
        cell touches the raster.
        """
        from entropice_core.spatial.levels import build_level_map, cells_window
        from entropice_core.spatial.pixelmap import RasterGrid

        def cut(window: Any) -> xr.Dataset:
            return raster if window is None else raster.rio.isel_window(window)

        grid = RasterGrid.from_xarray(raster)
        cells_key = tuple(
            (key, cluster_key(cells["cell_id"].to_numpy())) for key, cells in levels.items()
        )
        key = (cells_key, grid.crs.to_wkt(), tuple(grid.transform), grid.width, grid.height)
        with self._lock:
            found = self._plans.get(key)
        if found is None:
            bounds = {k: cells.geometry.bounds.to_numpy() for k, cells in levels.items()}
            rows = {k: _cells_touching(b, grid) for k, b in bounds.items()}
            touching = {k: levels[k].iloc[r] for k, r in rows.items() if len(r)}
            window = cells_window(grid, touching)
            level_map = (
                build_level_map(touching, RasterGrid.from_xarray(cut(window))) if touching else None
            )
            found = (rows, window, level_map)
            with self._lock:
                self._plans[key] = found
                self.maps_built += 1
        rows, window, level_map = found
        return rows, cut(window), level_map

    def reduce_cluster(self, cells: gpd.GeoDataFrame, spec: GridSpec, year: int) -> ClusterMeans:
        """Answer one local "request": the means of ``cells`` (one cluster) for ``year``.

        Parameters
        ----------
        cells : geopandas.GeoDataFrame
            The cluster's cells (cell_id, EPSG:4326 geometry).
        spec : GridSpec
            Grid and level of the cells.
        year : int
            The year.

        Returns
        -------
        ClusterMeans
            The answer, in the order of ``cells``.
        """
        ids, means, valid = self._means(cells, spec, [year], crop=True)
        return ClusterMeans(ids, means[0], valid[0])

    def _paths(self, year: int) -> list[Path]:
        paths = find_cogs(self.root, year)
        if not paths:
            raise MissingSourceFiles(
                "alphaearth",
                self.root / str(year),
                [f"{year}/<zone>N/*.tiff"],
                "generate the sample region or mirror gs://alphaearth_foundations/"
                f"{year}/ for the zones of the area",
            )
        return paths

    def _cell_map(self, cells: gpd.GeoDataFrame, ids: np.ndarray, grid: Any) -> tuple:
        """Return the rows of ``cells`` touching ``grid`` and their cell-to-pixel map.

        Built once per (cells, file grid); the map is None where no cell touches the grid.
        """
        from entropice_core.spatial.pixelmap import build_cell_pixel_map

        key = (cluster_key(ids), grid.crs.to_wkt(), tuple(grid.transform), grid.width, grid.height)
        with self._lock:
            found = self._maps.get(key)
        if found is None:
            rows = _cells_touching(cells.geometry.bounds.to_numpy(), grid)
            cmap = build_cell_pixel_map(cells.iloc[rows], grid) if len(rows) else None
            found = (rows, cmap)
            with self._lock:
                self._maps[key] = found
                self.maps_built += 1
        return found

    def _means(
        self, cells: gpd.GeoDataFrame, spec: GridSpec, years: Sequence[int], crop: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Aggregate ``cells`` over every file of ``years``: ids, means and valid fractions.

        ``crop`` reads only the window of each file around the cells (in 256 px blocks, the
        files' tiling): one cluster's request reads its part of the files, not all of them.
        """
        from entropice_core.spatial.aggregators import AggregationConfig, aggregate_raster
        from entropice_core.spatial.pixelmap import RasterGrid

        config = AggregationConfig(statistics=("sum", "count", "valid_fraction"))
        ids = cells["cell_id"].to_numpy().astype(np.uint64)
        n = len(ids)
        total = np.zeros((len(years), n, len(BANDS)))
        count = np.zeros((len(years), n))
        valid = np.zeros((len(years), n))
        for y, year in enumerate(years):
            for path in self._paths(year):
                whole = read_cog(path, chunk=256 if crop else 1024)
                data = _crop(whole, cells.geometry.total_bounds) if crop else whole
                if data is None:
                    continue
                rows, cmap = self._cell_map(cells, ids, RasterGrid.from_xarray(data))
                if cmap is None:
                    continue
                out = aggregate_raster(
                    data,
                    cells.iloc[rows],
                    spec,
                    config,
                    cell_map=cmap,
                    parallel=self.parallel,
                )
                total[y][rows] += np.nan_to_num(out["sum"].transpose("cell_ids", "band").values)
                count[y][rows] += out["count"].isel(band=0).values
                valid[y][rows] += np.nan_to_num(out["valid_fraction"].isel(band=0).values)
        return ids, *_combined_means(total, count, valid)


def _combined_means(
    total: np.ndarray, count: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Combine sums, coverage counts and valid fractions added up over files and windows.

    Means are ``sum(sum) / sum(count)`` (NaN without a valid pixel); valid fractions at most 1.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(count[..., None] > 0, total / count[..., None], np.nan)
    return means, np.minimum(valid, 1.0)


def _crop(data: xr.DataArray, bounds4326: np.ndarray, pad: int = 2) -> xr.DataArray | None:
    """Cut the window of ``data`` around a lon/lat box, ``pad`` pixels wider, snapped to pixels.

    None where they do not meet. Exact coverage inside it is that of the whole raster.
    """
    from rasterio.windows import Window

    tr = pyproj.Transformer.from_crs("EPSG:4326", data.rio.crs, always_xy=True)
    minlon, minlat, maxlon, maxlat = (float(v) for v in bounds4326)
    left, bottom, right, top = tr.transform_bounds(minlon, minlat, maxlon, maxlat, densify_pts=101)
    inverse = ~data.rio.transform()
    cols, rows = zip(inverse @ (left, top), inverse @ (right, bottom), strict=True)
    c0, c1 = (
        max(0, int(np.floor(min(cols))) - pad),
        min(data.rio.width, int(np.ceil(max(cols))) + pad),
    )
    r0, r1 = (
        max(0, int(np.floor(min(rows))) - pad),
        min(data.rio.height, int(np.ceil(max(rows))) + pad),
    )
    if c0 >= c1 or r0 >= r1:
        return None
    return data.rio.isel_window(Window(c0, r0, c1 - c0, r1 - r0))


class _VersionedCache(ClusterCache):
    """A :class:`ClusterCache` whose year folders carry a version tag of the source files.

    Paths are ``{root}/{grid_level}/{year}-{tag}/{hash}.npz``.
    """

    def __init__(self, cache: ClusterCache, tag: Callable[[int], str]) -> None:
        super().__init__(cache.root)
        self._tag = tag

    def path(self, spec: GridSpec, year: int, cell_ids: np.ndarray) -> Path:
        folder = f"{year}-{self._tag(year)}"
        return self.root / spec.key / folder / f"{cluster_key(cell_ids)}.npz"


def _cells_touching(bounds4326: np.ndarray, grid: Any) -> np.ndarray:
    """Return the positions of the cells whose lon/lat box meets the raster's footprint."""
    left, bottom, right, top = grid.bounds
    tr = pyproj.Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    ring = shapely.segmentize(shapely.box(left, bottom, right, top), (right - left) / 64)
    lon, lat = tr.transform(*shapely.get_coordinates(ring).T)
    fp = shapely.Polygon(np.column_stack([lon, lat])).buffer(0.01)
    boxes = shapely.box(*bounds4326.T)
    return np.flatnonzero(shapely.intersects(boxes, fp))


def years_available(root: str | Path) -> list[int]:
    """Return the years with a folder under a COG root.

    Parameters
    ----------
    root : str or Path
        Root of the COG tree.

    Returns
    -------
    list of int
        The years, sorted.
    """
    return sorted(int(p.name) for p in Path(root).iterdir() if p.is_dir() and p.name.isdigit())


# --------------------------------------------------------------------------- GCS mirror


def zones_of_cells(bounds4326: np.ndarray) -> list[tuple[int, bool]]:
    """Return the UTM zones and hemispheres the cells' lon/lat boxes touch.

    A box whose west edge is east of its east edge (across the antimeridian) touches every
    zone.

    Parameters
    ----------
    bounds4326 : numpy.ndarray
        ``(n, 4)`` boxes ``(minlon, minlat, maxlon, maxlat)`` in degrees.

    Returns
    -------
    list of tuple
        Sorted ``(zone, north)`` pairs.
    """
    b = np.asarray(bounds4326, dtype=float).reshape(-1, 4)
    first = utm_zone(b[:, 0])
    last = np.where(b[:, 2] > b[:, 0], utm_zone(np.nextafter(b[:, 2], -np.inf)), first)
    wrap = b[:, 2] < b[:, 0]  # across the antimeridian
    first, last = np.where(wrap, 1, first), np.where(wrap, 60, last)
    found: set[tuple[int, bool]] = set()
    rows = np.column_stack([first, last, b[:, 3] >= 0, b[:, 1] < 0]).astype(np.int64)
    for f, e, north, south in np.unique(rows, axis=0):
        for zone in range(int(f), int(e) + 1):
            if north:
                found.add((zone, True))
            if south:
                found.add((zone, False))
    return sorted(found)


def check_cog(path: str | Path) -> None:
    """Raise ``ValueError`` unless ``path`` opens as a 64-band int8 embedding GeoTIFF.

    Only the header is read (a real file holds gigabytes); the download's size check against
    the listing guards against truncation.

    Parameters
    ----------
    path : str or Path
        The file.

    Raises
    ------
    ValueError
        If it is unreadable or not 64 int8 bands with a CRS.
    """
    import rasterio

    try:
        with rasterio.open(path) as src:
            if src.count != len(BANDS) or src.dtypes[0] != "int8" or src.crs is None:
                raise ValueError(f"{src.count} {src.dtypes[0]} bands, CRS {src.crs}")
    except rasterio.errors.RasterioError as err:
        raise ValueError(f"{path} is not a readable GeoTIFF ({err})") from err


#: TIFF tags read for a footprint: width, height, pixel scale, tie point, transformation,
#: GeoKey directory.
_GEO_TAGS = frozenset({256, 257, 33550, 33922, 34264, 34735})
#: TIFF field types: struct format of one value.
_TIFF_TYPES = {1: "B", 3: "H", 4: "I", 8: "h", 9: "i", 11: "f", 12: "d", 16: "Q", 17: "q"}


def geotiff_footprint(
    read: Callable[[int, int], bytes],
) -> tuple[str, tuple[float, float, float, float]] | None:
    """Return the CRS and bounds of a GeoTIFF from its header, read piece by piece.

    Only the first IFD's size and georeferencing tags are read (a few kB, wherever the IFD
    lies), so a remote file's footprint costs a few small range requests, not the file.

    Parameters
    ----------
    read : callable
        ``read(offset, length) -> bytes`` of the file.

    Returns
    -------
    tuple or None
        ``("EPSG:<code>", (left, bottom, right, top))``; None where the header cannot say
        (not a TIFF, no EPSG code, no georeferencing).
    """
    import struct

    head = read(0, 16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 16:
        return None
    magic = struct.unpack(order + "H", head[2:4])[0]
    if magic not in (42, 43):
        return None
    big = magic == 43
    ifd = struct.unpack(order + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
    word, entry = ("Q", 20) if big else ("I", 12)
    (n,) = struct.unpack(order + ("Q" if big else "H"), read(ifd, 8 if big else 2))
    entries = read(ifd + (8 if big else 2), n * entry)
    tags: dict[int, tuple] = {}
    for i in range(min(n, len(entries) // entry)):
        e = entries[i * entry : (i + 1) * entry]
        tag, kind = struct.unpack(order + "HH", e[:4])
        if tag not in _GEO_TAGS or kind not in _TIFF_TYPES:
            continue
        wsize = 8 if big else 4
        (count,) = struct.unpack(order + word, e[4 : 4 + wsize])
        fmt = f"{order}{count}{_TIFF_TYPES[kind]}"
        size = struct.calcsize(fmt)
        if size <= wsize:
            raw = e[4 + wsize : 4 + wsize + size]
        else:
            (offset,) = struct.unpack(order + word, e[4 + wsize : 4 + 2 * wsize])
            raw = read(offset, size)
        if len(raw) == size:
            tags[tag] = struct.unpack(fmt, raw)
    if not {256, 257, 34735} <= tags.keys():
        return None
    keys = tags[34735]
    epsg = next(
        (keys[k + 3] for k in range(4, 4 + 4 * keys[3], 4) if keys[k] == 3072 and keys[k + 1] == 0),
        None,
    )
    if epsg is None:
        return None
    width, height = tags[256][0], tags[257][0]
    if 34264 in tags:
        m = tags[34264]
        a, b, c, d, e_, f = m[0], m[1], m[3], m[4], m[5], m[7]
    elif {33550, 33922} <= tags.keys():
        sx, sy = tags[33550][:2]
        i, j, _, x, y, _ = tags[33922][:6]
        a, b, c, d, e_, f = sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy
    else:
        return None
    xs = [a * u + b * v + c for u, v in ((0, 0), (width, 0), (0, height), (width, height))]
    ys = [d * u + e_ * v + f for u, v in ((0, 0), (width, 0), (0, height), (width, height))]
    return f"EPSG:{epsg}", (min(xs), min(ys), max(xs), max(ys))


def _remote_footprint(
    bucket: GcsBucket, name: str
) -> tuple[str, tuple[float, float, float, float]] | None:
    """Return a remote GeoTIFF's footprint from its header; None where it cannot be read."""
    import struct

    try:
        return geotiff_footprint(partial(bucket.read_range, name))
    except (ConnectionError, struct.error, ValueError, IndexError) as err:
        log.debug("no footprint for %s (%s): downloading it", name, type(err).__name__)
        return None


def _touches_cells(
    footprint: tuple[str, tuple[float, float, float, float]] | None, bounds4326: np.ndarray
) -> bool:
    """Whether a file's footprint meets a cell's box (True where the footprint is unknown)."""
    if footprint is None:
        return True
    crs, bounds = footprint
    grid = _Footprint(pyproj.CRS.from_user_input(crs), bounds)
    return bool(len(_cells_touching(bounds4326, grid)))


@dataclass(frozen=True)
class _Footprint:
    crs: Any
    bounds: tuple[float, float, float, float]


@dataclass(frozen=True)
class FetchedCogs:
    """Outcome of :func:`fetch_cogs`: the files of the cells' zones on disk, the new ones."""

    present: list[Path]
    downloaded: list[Path]
    bytes_downloaded: int = 0
    skipped: list[str] = field(default_factory=list)


def fetch_cogs(
    bucket: GcsBucket,
    bounds4326: np.ndarray,
    years: Sequence[int],
    root: str | Path,
    prefix: str = "",
    show_progress: bool = False,
    footprints: bool = True,
) -> FetchedCogs:
    """Mirror the COGs of ``years`` in the UTM zones the cells touch from GCS under ``root``.

    Lists ``{prefix}{year}/{zone}{N|S}/`` per year and zone (:func:`zones_of_cells`) and
    downloads every ``.tif``/``.tiff`` there that is not already under ``root`` with the listed
    size, to ``{root}/{year}/{zone}{N|S}/{file}`` (the layout :class:`CogClient` reads). The
    listing gives no footprint: with ``footprints``, each missing file's GeoTIFF header is read
    with a few small range requests (:func:`geotiff_footprint`) and files no cell's box meets
    are skipped; a file whose header says nothing is downloaded.

    Parameters
    ----------
    bucket : GcsBucket
        The bucket, with billing project and token.
    bounds4326 : numpy.ndarray
        ``(n, 4)`` lon/lat boxes of the cells.
    years : sequence of int
        The years.
    root : str or Path
        The local mirror.
    prefix : str, optional
        Folder of the year folders inside the bucket (``""``: the bucket's root).
    show_progress : bool, optional
        Show a progress bar.
    footprints : bool, optional
        Skip files whose header footprint meets no cell.

    Returns
    -------
    FetchedCogs
        Files present (downloaded or there before), files downloaded now, objects skipped.
    """
    from rich.progress import DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    root = Path(root)
    zones = zones_of_cells(bounds4326)
    present: list[Path] = []
    downloaded: list[Path] = []
    skipped: list[str] = []
    size = 0
    columns = (TextColumn("{task.description}"), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        for year in years:
            for zone, north in zones:
                folder = zone_dir(root, year, zone, north)
                listed = f"{prefix}{folder.relative_to(root).as_posix()}/"
                for obj in bucket.list(listed):
                    name = obj.name[len(listed) :]
                    if (
                        "/" in name
                        or name.startswith(".")
                        or Path(name).suffix
                        not in (
                            ".tif",
                            ".tiff",
                        )
                    ):
                        continue  # subfolders, hidden names and other files
                    target = folder / name
                    if not (target.exists() and target.stat().st_size == obj.size):
                        if footprints:
                            footprint = _remote_footprint(bucket, obj.name)
                            if not _touches_cells(footprint, bounds4326):
                                skipped.append(obj.name)
                                continue
                        bucket.download(obj, target, check_cog, progress)
                        downloaded.append(target)
                        size += obj.size
                    present.append(target)
    log.info(
        "AlphaEarth COGs: %d file(s) of %d zone(s) present under %s, %d downloaded (%.1f MB), "
        "%d away from the cells skipped",
        len(present),
        len(zones),
        root,
        len(downloaded),
        size / 1e6,
        len(skipped),
    )
    return FetchedCogs(present, downloaded, size, skipped)


class GcsCogClient(EmbeddingClient):
    """:class:`CogClient` on a local mirror that first downloads the files it lacks from GCS.

    Per call, :func:`fetch_cogs` brings the files of the requested years in the cells' UTM
    zones from the requester-pays bucket (billed to ``project``) into ``root``; the means then
    come from :class:`CogClient` (same clusters and cache). Files already mirrored are not
    downloaded again.

    Parameters
    ----------
    root : str or Path
        The local mirror.
    project : str
        Google Cloud project billed for the requests and the egress (requester pays).
    token : str, optional
        An OAuth access token (e.g. ``gcloud auth print-access-token``); or
    key_file, key_data : optional
        A service account's JSON key (path or text), turned into tokens with google-auth.
    endpoint : str, optional
        The GCS endpoint (tests use a loopback server).
    bucket, prefix : str, optional
        Bucket and folder of the year folders in it.
    download : DownloadConfig, optional
        Retries and timeouts of the listing and downloads.
    **cog_kwargs
        ``parallel``, ``cache``, ``batch``, ``requests`` of :class:`CogClient`.

    Raises
    ------
    CredentialsMissing
        One line naming the variables to set when the project or every credential is missing.
    """

    name: ClassVar[str] = "alphaearth-gcs"
    offline: ClassVar[bool] = False

    def __init__(
        self,
        root: str | Path,
        project: str | None,
        *,
        token: str | None = None,
        key_file: str | Path | None = None,
        key_data: str | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        bucket: str = GCS_BUCKET,
        prefix: str = "",
        download: DownloadConfig = DownloadConfig(),
        show_progress: bool = False,
        **cog_kwargs: Any,
    ) -> None:
        missing = [
            name
            for name, value in (
                (ENV_PROJECT, project),
                (
                    f"{ENV_KEY_FILE} (or the key's JSON text in {ENV_KEY_DATA}, or an access "
                    f"token in {ENV_TOKEN})",
                    token or key_file or key_data,
                ),
            )
            if not value
        ]
        if missing:
            raise CredentialsMissing(
                "GCS credentials missing: set " + ", ".join(missing)
                + f" (gs://{bucket} is requester pays: the project is billed; see "
                "docs/alphaearth.md)"
            )  # fmt: skip
        auth: str | Callable[[], str] = (
            token if token else service_account_token(key_file=key_file, key_data=key_data)
        )
        self.bucket = GcsBucket(
            bucket, user_project=str(project), token=auth, endpoint=endpoint, config=download
        )
        self.prefix = prefix
        self.show_progress = show_progress
        self.cogs = CogClient(root, **cog_kwargs)
        self.last_fetch: FetchedCogs | None = None

    @property
    def root(self) -> Path:
        """The local mirror."""
        return self.cogs.root

    @property
    def cache(self) -> ClusterCache | None:
        """The cluster cache of the COG client."""
        return self.cogs.cache

    def embeddings(
        self, cells: gpd.GeoDataFrame, spec: GridSpec, years: Sequence[int]
    ) -> EmbeddingResult:
        """Mirror the files ``cells`` and ``years`` need, then aggregate them.

        Parameters
        ----------
        cells : geopandas.GeoDataFrame
            A ``grid_cells`` frame: cell_id, EPSG:4326 geometry.
        spec : GridSpec
            Grid and level of the cells.
        years : sequence of int
            The years.

        Returns
        -------
        EmbeddingResult
            As :meth:`CogClient.embeddings`.
        """
        self._mirror(cells.geometry.bounds.to_numpy(), years)
        return self.cogs.embeddings(cells, spec, years)

    def embeddings_levels(
        self, levels: Mapping[str, gpd.GeoDataFrame], years: Sequence[int]
    ) -> dict[str, EmbeddingResult]:
        """Mirror the files the cells of every level need, then aggregate them in one pass.

        Parameters
        ----------
        levels : mapping of str to geopandas.GeoDataFrame
            Grid level key to its ``grid_cells``.
        years : sequence of int
            The years.

        Returns
        -------
        dict of str to EmbeddingResult
            As :meth:`CogClient.embeddings_levels`.
        """
        bounds = [cells.geometry.bounds.to_numpy() for cells in levels.values()]
        self._mirror(np.concatenate(bounds) if bounds else np.zeros((0, 4)), years)
        return self.cogs.embeddings_levels(levels, years)

    def _mirror(self, bounds4326: np.ndarray, years: Sequence[int]) -> None:
        """Download the files of ``years`` in the UTM zones of the cells' boxes."""
        self.last_fetch = fetch_cogs(
            self.bucket, bounds4326, years, self.root, self.prefix, self.show_progress
        )
