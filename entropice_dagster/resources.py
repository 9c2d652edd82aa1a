"""Resources: where data lives, which area to cover, how the grids and water mask are built,
and which client brings each source's files.

Defaults and field descriptions come from the core pydantic models, so the Dagster UI shows the
same documentation as the library and the two cannot drift apart. Each resource class is
registered under the key its name spells (``GridSettingsResource`` as ``grid_settings``).

Every downloading source (``cds``, ``arcticdem_source``, ``darts_source``, ``earth_engine``)
has a ``client`` field: ``offline`` uses the files already under its folder (the sample
region, or a mirror) and fails with one line naming what is absent; the real client
downloads. Secrets are resource fields filled by ``dg.EnvVar`` (``CdsResource(client="cds",
key=dg.EnvVar("CDSAPI_KEY"))``), so run configs and the UI show the variable's name, never its
value; the core never reads them from the environment.
"""

import datetime as dt
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, Field, PrivateAttr, SecretStr, field_validator

from entropice_core.config import AreaOfInterest, Device, GridCellsConfig, WatermaskConfig
from entropice_core.ingest import alphaearth, arcticdem, darts, era5
from entropice_core.ingest.arcticdem import FetchedTiles, find_tiles, read_tile_index
from entropice_core.ingest.era5 import DownloadReport, Era5DownloadConfig
from entropice_core.ingest.gcs import DEFAULT_ENDPOINT
from entropice_core.io.download import DownloadConfig
from entropice_core.layout import Layout
from entropice_dagster.io_managers import (
    EXPERIMENT_IO_MANAGER_KEY,
    GEOPARQUET_IO_MANAGER_KEY,
    MANIFEST_IO_MANAGER_KEY,
    TABLE_IO_MANAGER_KEY,
    ZARR_IO_MANAGER_KEY,
    ExperimentIOManager,
    GeoParquetIOManager,
    ManifestIOManager,
    TableIOManager,
    ZarrIOManager,
)

_GRID = GridCellsConfig()
_WATER = WatermaskConfig()


def _describe(model: type[BaseModel], field: str) -> str | None:
    return model.model_fields[field].description


class DataDirResource(dg.ConfigurableResource):
    """Root of the storage hierarchy (ENTROPICE_DATA_DIR); layout in architecture.md."""

    path: str = Field(
        description="Directory holding sources/, watermask/, grids/, ... (ENTROPICE_DATA_DIR)."
    )

    @property
    def root(self) -> Path:
        return Path(self.path)


class AreaOfInterestResource(dg.ConfigurableResource):
    """The area every asset covers, as one text spec so it fits an env var or the launchpad."""

    aoi: str = Field(
        default="sample",
        description="'sample' (the embedded sample region), 'arctic' (north of 50N), "
        "'north-of:LAT', a bbox 'minlon,minlat,maxlon,maxlat' (minlon > maxlon crosses 180) "
        "or the path of a vector file (GeoParquet, GeoPackage, GeoJSON, ...).",
    )

    @field_validator("aoi")
    @classmethod
    def _form(cls, value: str) -> str:
        return AreaOfInterest.check_spec(value)

    def area(self) -> AreaOfInterest:
        """Parse the spec; a bad spec fails here with the core's explanation."""
        return AreaOfInterest.parse(self.aoi)


class GridSettingsResource(dg.ConfigurableResource):
    """How grid cells are built (maps onto ``GridCellsConfig``)."""

    min_land_fraction: float = Field(
        default=_GRID.min_land_fraction,
        description=_describe(GridCellsConfig, "min_land_fraction"),
    )
    mask_resolution_deg: float = Field(
        default=_GRID.mask_resolution_deg,
        description=_describe(GridCellsConfig, "mask_resolution_deg"),
    )

    def config(self) -> GridCellsConfig:
        return GridCellsConfig(
            min_land_fraction=self.min_land_fraction,
            mask_resolution_deg=self.mask_resolution_deg,
        )


class WatermaskSourceResource(dg.ConfigurableResource):
    """Where water polygons come from (maps onto ``WatermaskConfig``)."""

    source: Literal["global-land-mask", "file"] = Field(
        default=_WATER.source,
        description="'global-land-mask' (offline 1 km land mask) or 'file' (polygons at `path`).",
    )
    path: str | None = Field(default=None, description=_describe(WatermaskConfig, "path"))
    tile_deg: float = Field(
        default=_WATER.tile_deg, description=_describe(WatermaskConfig, "tile_deg")
    )

    def config(self) -> WatermaskConfig:
        path = Path(self.path) if self.path is not None else None
        return WatermaskConfig(source=self.source, path=path, tile_deg=self.tile_deg)


class DartsSourceResource(dg.ConfigurableResource):
    """Where the DARTS release lies and which client brings it: a folder of GeoPackage or
    GeoParquet files (default ``DATA_DIR/sources/darts``, where the sample region writes its
    DARTS-schema files).

    ``client='offline'`` reads the folder only; ``'arcticdata'`` downloads the release files
    matching ``pattern`` (and the coverage layers matching ``coverage_pattern``) from the NSF
    Arctic Data Center (doi:10.18739/A22B8VD7C) into it first.
    """

    client: Literal["offline", "arcticdata"] = Field(
        default="offline",
        description="'offline': the files in `folder` only; 'arcticdata': download missing "
        "release files from the NSF Arctic Data Center (or the mirror at `base_url`).",
    )
    folder: str = Field(
        default="", description="Folder with the DARTS files (default DATA_DIR/sources/darts)."
    )
    pattern: str = Field(
        default="*level2.*",
        description="Glob of the files to read: '*level2.*' for the annual product, "
        "'*level1.*' for per-image footprints (dissolved per year).",
    )
    coverage_pattern: str = Field(
        default=darts.COVERAGE_PATTERN,
        description="Glob of the release's coverage layers (area imaged per year); none found: "
        "every cell counts as observed. Footprint files never include '*coverage*' names.",
    )
    base_url: str = Field(
        default=darts.ADC_URL,
        description="DataONE member-node API of the Arctic Data Center (client 'arcticdata').",
    )
    retries: int = Field(default=5, ge=0, description="Download retries per file.")

    def root(self, data_dir: Path) -> Path:
        return Path(self.folder) if self.folder else Layout(data_dir).source("darts")

    def darts_client(self) -> darts.DartsClient:
        """The client ``client`` names."""
        if self.client == "offline":
            return darts.OfflineDartsClient(
                _offline_how(
                    "darts_source", "arcticdata", "NSF Arctic Data Center, doi:10.18739/A22B8VD7C"
                )
            )
        return darts.ArcticDataCenterDartsClient(
            self.base_url, config=DownloadConfig(retries=self.retries)
        )

    def files(self, data_dir: Path) -> list[Path]:
        """The release files to read (downloaded first by the 'arcticdata' client)."""
        return self.darts_client().files(self.root(data_dir), self.pattern)

    def coverage_files(self, data_dir: Path) -> list[Path]:
        """The release's coverage layers (downloaded first by 'arcticdata'); maybe none."""
        return self.darts_client().coverage_files(self.root(data_dir), self.coverage_pattern)


def _offline_how(key: str, real: str, origin: str) -> str:
    return (
        f"set the {key} resource's client={real!r} to download them ({origin}), point its "
        "folder at a mirror in the same layout, or run `make demo` for the sample region"
    )


class DaskResource(dg.ConfigurableResource):
    """A dask.distributed client for every heavy stage: the terrain derivatives (tiles with
    halos, written to Icechunk from the workers), the per-cell aggregations of
    terrain_statistics and climate_features, the model search, cross-validation and
    permutation importance (joblib's dask backend) and the batched predictions.

    By default a LocalCluster sized to the machine; or an existing scheduler (``scheduler_address``,
    e.g. a cluster started by ``dask-jobqueue`` or on Kubernetes); or a dask-jobqueue cluster
    started here (``jobqueue``: ``SLURMCluster``, ``PBSCluster``, ...) and configured the
    dask-jobqueue way, in ``~/.config/dask/jobqueue.yaml`` (queue, cores, memory, walltime);
    or, with ``cuda``, a dask-cuda LocalCUDACluster of one worker per GPU. The assets call
    the same code on all of them. The client and any cluster started here are closed when the
    run ends.

    Pools (``entropice_dagster.pools``): the assets that write Icechunk or Zarr stores from
    the cluster (terrain_derivatives, terrain_statistics) declare
    ``pool="dask"``, whose limit of one serialises commits to the local repositories and
    keeps one memory-heavy raster pass on the cluster at a time. trained_model and
    predictions, which run on a GPU where their experiment's ``device`` is ``cuda``, declare
    ``pool="gpu"``, whose limit is the number of GPUs (on a machine without one, the number
    of concurrent runs: the demo trains two at a time). docs/scaling.md says more.
    """

    scheduler_address: str = Field(
        default="", description="Connect to this scheduler (tcp://host:8786); empty: start one."
    )
    jobqueue: str = Field(
        default="",
        description="dask-jobqueue cluster class to start (e.g. SLURMCluster); needs "
        "`pip install dask-jobqueue` and its config file.",
    )
    jobqueue_jobs: int = Field(default=1, ge=1, description="Batch jobs to scale the cluster to.")
    n_workers: int = Field(
        default=0, ge=0, description="LocalCluster worker processes; 0 sizes to the machine."
    )
    threads_per_worker: int = Field(
        default=0, ge=0, description="Threads per worker; 0 shares the cores among workers."
    )
    memory_limit: str = Field(
        default="auto",
        description="Memory limit per worker ('4GiB', or 'auto': the machine's memory divided "
        "among workers); workers spill to disk, then pause, as they approach it.",
    )
    processes: bool = Field(
        default=True, description="Workers as processes (True) or threads in this process."
    )
    cuda: bool = Field(
        default=False,
        description="Start a dask-cuda LocalCUDACluster (one worker per GPU) instead of a "
        "LocalCluster; needs the gpu extra.",
    )
    models: bool = Field(
        default=True,
        description="Run the model search, cross-validation, permutation importance and "
        "batched predictions on the cluster; False: in the run's process (joblib's loky "
        "processes), where a small area's models are faster than the cluster's overhead.",
    )
    gdal_cache: str = Field(
        default="64MiB",
        description="GDAL's block cache per worker ('64MiB'); GDAL's own default, 5 % of the "
        "machine's memory per process, keeps tiles read once outside the memory limit.",
    )
    shared: bool = Field(
        default=False,
        description="With processes=False: keep the in-process cluster for every later run in "
        "this process (one start for the demo's in-process runs) instead of one per run.",
    )

    _client: Any = PrivateAttr(default=None)
    _cluster: Any = PrivateAttr(default=None)
    _shared: bool = PrivateAttr(default=False)

    @field_validator("gdal_cache")
    @classmethod
    def _size(cls, value: str) -> str:
        from dask.utils import parse_bytes

        try:
            parse_bytes(value)
        except ValueError as err:
            raise ValueError(f"gdal_cache={value!r} is not a size; write e.g. '64MiB'") from err
        return value

    def _start_cluster(self) -> Any:
        if self.jobqueue:
            try:
                import dask_jobqueue
            except ImportError as err:
                raise ImportError(
                    f"DaskResource(jobqueue={self.jobqueue!r}) needs dask-jobqueue: "
                    "`uv pip install dask-jobqueue` (or pip) in the environment"
                ) from err
            cluster_class = getattr(dask_jobqueue, self.jobqueue, None)
            if cluster_class is None:
                raise ValueError(
                    f"dask-jobqueue has no {self.jobqueue!r}; use e.g. SLURMCluster, PBSCluster"
                )
            cluster = cluster_class()
            cluster.scale(jobs=self.jobqueue_jobs)
            return cluster
        if self.cuda:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError as err:
                raise ImportError(
                    "DaskResource(cuda=True) needs dask-cuda: install the gpu extra "
                    "(`uv sync --extra gpu`) on a machine with CUDA 12"
                ) from err
            return LocalCUDACluster(memory_limit=self.memory_limit, dashboard_address="127.0.0.1:0")
        from distributed import LocalCluster

        cores = os.cpu_count() or 1
        workers = self.n_workers or (min(cores, 4) if self.processes else 1)
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=self.threads_per_worker or max(1, cores // workers),
            memory_limit=self.memory_limit,
            processes=self.processes,
            dashboard_address="127.0.0.1:0",
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        from dask.utils import parse_bytes
        from distributed import Client

        from entropice_core.io.gdal_cache import GdalCacheLimit

        if self.scheduler_address:
            self._client = Client(self.scheduler_address)
        elif self.shared and not self.processes and not self.jobqueue:
            # threads in this process: one cluster shared by every run the process executes
            # (the demo's in-process runs), not a scheduler started and stopped per run
            self._client = _shared_client(self)
            self._shared = True
        else:
            self._cluster = self._start_cluster()
            self._client = Client(self._cluster)
        self._client.register_plugin(GdalCacheLimit(parse_bytes(self.gdal_cache)))
        if context.log is not None:
            context.log.info(f"Dask dashboard: {self._client.dashboard_link}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._shared:  # lives as long as the process (distributed closes it at exit)
            self._client = None
            return
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` of this run."""
        if self._client is None:
            raise RuntimeError("DaskResource is used outside a run: no client has been started")
        return self._client

    def computing(self) -> AbstractContextManager[Any]:
        """Where the dask work of a block runs: on the cluster's workers, or, for a cluster
        of threads in this process (``processes=False``, the sample region), on dask's
        threaded scheduler: the same threads without the distributed scheduler's cost per
        task (the sample region's terrain derivatives: 44 s against 82 s)."""
        import dask

        in_process = not (self.processes or self.scheduler_address or self.jobqueue or self.cuda)
        return dask.config.set(scheduler="threads") if in_process else self.client.as_current()

    @property
    def models_client(self) -> Any:
        """The client for the model stages, or None where ``models`` keeps them in-process."""
        return self.client if self.models else None

    def metadata(self) -> dict[str, Any]:
        """Worker count, and the dashboard link where the cluster outlives the run (a
        scheduler given by address, or the process-wide one): a per-run cluster's dashboard
        is gone by the time anyone clicks the link in the UI."""
        workers = self.client.scheduler_info()["workers"]
        outlives_run = bool(self.scheduler_address) or self._shared
        return {
            **(
                {"dask_dashboard": dg.MetadataValue.url(self.client.dashboard_link)}
                if outlives_run
                else {}
            ),
            "dask_workers": len(workers),
            "dask_threads": sum(w["nthreads"] for w in workers.values()),
        }


#: In-process clusters kept for the process's later runs, one per sizing.
_SHARED_CLIENTS: dict[tuple[int, int, str], Any] = {}


def _shared_client(resource: DaskResource) -> Any:
    """The process-wide client of an in-process (threads) cluster, started on first use."""
    from distributed import Client

    key = (resource.n_workers, resource.threads_per_worker, resource.memory_limit)
    client = _SHARED_CLIENTS.get(key)
    if client is None or client.status != "running":
        client = _SHARED_CLIENTS[key] = Client(resource._start_cluster())
    return client


class ArcticDEMSourceResource(dg.ConfigurableResource):
    """Where the ArcticDEM v4.1 32 m mosaic tiles lie (``{row}_{col}/..._32m_v4.1_dem.tif``)
    and which client brings them.

    Empty ``folder`` means ``DATA_DIR/sources/arcticdem``, where the sample region writes its
    tiles. ``client='offline'`` uses the tiles on disk; ``'pgc'`` downloads the missing tiles
    of the area from ``base_url`` (the public PGC bucket, or a mirror).
    """

    client: Literal["offline", "pgc"] = Field(
        default="offline",
        description="'offline': the tiles in `folder` only; 'pgc': download missing tiles "
        "from `base_url`.",
    )
    folder: str = Field(
        default="", description="Folder of the tile folders (default DATA_DIR/sources/arcticdem)."
    )
    base_url: str = Field(
        default=arcticdem.BASE_URL,
        description="Where client 'pgc' downloads tiles from (the PGC bucket, or a mirror).",
    )
    index_path: str = Field(
        default="",
        description="PGC tile index (ArcticDEM_Mosaic_Index_latest_gpqt.zip) restricting "
        "downloads to tiles the release has; empty: every tile of the area is tried.",
    )
    stac: bool = Field(
        default=False,
        description="Read each tile's static STAC item ({row}_{col}_32m_v4.1.json) first and "
        "download the file its dem asset names.",
    )
    retries: int = Field(default=5, ge=0, description="Download retries per tile.")

    def root(self, data_dir: Path) -> Path:
        return Path(self.folder) if self.folder else Layout(data_dir).source("arcticdem")

    def arcticdem_client(self) -> arcticdem.ArcticDEMClient:
        """The client ``client`` names."""
        if self.client == "offline":
            return arcticdem.OfflineArcticDEMClient(
                _offline_how("arcticdem_source", "pgc", "PGC ArcticDEM v4.1 32 m mosaic")
            )
        return arcticdem.PgcArcticDEMClient(
            self.base_url,
            read_tile_index(self.index_path) if self.index_path else None,
            DownloadConfig(retries=self.retries),
            stac=self.stac,
        )

    def fetch(self, data_dir: Path, area: AreaOfInterest) -> FetchedTiles:
        """Tiles for the area on disk, downloading missing ones with the 'pgc' client."""
        return self.arcticdem_client().fetch(area.geometry.bounds, self.root(data_dir))

    def tiles(self, data_dir: Path, area: AreaOfInterest) -> tuple[list[Path], list[Path]]:
        """(present, missing) tiles on disk for the area; see ``find_tiles``."""
        return find_tiles(self.root(data_dir), area.geometry.bounds)


_CDS = Era5DownloadConfig()
#: Environment variables the project's CDS resource reads its credentials from (dg.EnvVar).
ENV_CDS_URL = "CDSAPI_URL"
ENV_CDS_KEY = "CDSAPI_KEY"


class CdsResource(dg.ConfigurableResource):
    """ERA5 hourly files: downloaded from the Copernicus Climate Data Store (client 'cds',
    resumable) or taken from the folder (client 'offline': the sample region, or a mirror).

    Credentials: ``key`` (and ``url``) as ``dg.EnvVar("CDSAPI_KEY")`` / ``dg.EnvVar(
    "CDSAPI_URL")``; left empty, cdsapi reads ``~/.cdsapirc``. The key is never logged, shown
    in the resource's repr or written to metadata.
    """

    client: Literal["offline", "cds"] = Field(
        default="offline",
        description="'offline': the month files in `folder` only, never contacting the CDS; "
        "'cds': download what is absent or incomplete.",
    )
    url: str = Field(
        default="",
        description="CDS API URL (set it with dg.EnvVar('CDSAPI_URL')); empty: "
        f"{era5.CDS_URL} with `key`, else cdsapi's lookup.",
    )
    key: str = Field(
        default="",
        repr=False,
        description="CDS personal access token: set it with dg.EnvVar('CDSAPI_KEY'), never "
        "as a literal; empty: cdsapi reads ~/.cdsapirc.",
    )
    folder: str = Field(
        default="", description="Where the month files go (default DATA_DIR/sources/era5)."
    )
    max_fields: int = Field(
        default=_CDS.max_fields, description=_describe(Era5DownloadConfig, "max_fields")
    )
    max_values: int = Field(
        default=_CDS.max_values, description=_describe(Era5DownloadConfig, "max_values")
    )
    retries: int = Field(default=_CDS.retries, description=_describe(Era5DownloadConfig, "retries"))
    backoff_s: float = Field(
        default=_CDS.backoff_s, description=_describe(Era5DownloadConfig, "backoff_s")
    )
    retry_timeout_s: float = Field(
        default=_CDS.retry_timeout_s,
        description=_describe(Era5DownloadConfig, "retry_timeout_s"),
    )

    def root(self, data_dir: Path) -> Path:
        return Path(self.folder) if self.folder else Layout(data_dir).source("era5")

    def era5_client(self) -> era5.Era5Client:
        """The client ``client`` names (credentials are checked on its first download)."""
        if self.client == "offline":
            return era5.OfflineEra5Client(
                _offline_how("cds", "cds", "Copernicus Climate Data Store")
            )
        key = SecretStr(self.key) if self.key else None
        credentials = era5.CdsCredentials(url=self.url or None, key=key)
        return era5.CdsEra5Client(credentials)

    def published_years(self, data_dir: Path, now: dt.datetime) -> list[int]:
        """The Arctic years the client can deliver at ``now`` (offline: those in the folder)."""
        return self.era5_client().published_years(self.root(data_dir), now)

    def download(
        self, data_dir: Path, year: int, area: AreaOfInterest, log: Any = print
    ) -> DownloadReport:
        """Fetch (or, offline, check) the files of one Arctic year over ``area``."""
        config = Era5DownloadConfig(
            area=era5.cds_area(area.geometry.bounds),
            max_fields=self.max_fields,
            max_values=self.max_values,
            retries=self.retries,
            backoff_s=self.backoff_s,
            retry_timeout_s=self.retry_timeout_s,
        )
        return self.era5_client().fetch_year(self.root(data_dir), year, config, log=log)


_BATCH = alphaearth.BatchConfig()
_REQUESTS = alphaearth.RequestConfig()


class EarthEngineResource(dg.ConfigurableResource):
    """AlphaEarth satellite embeddings: from Earth Engine (client 'earthengine', a service
    account), from the int8 COGs in `folder` (client 'offline': the sample region, or a local
    mirror of gs://alphaearth_foundations in its layout), or from those COGs after downloading
    the missing files of the cells' UTM zones into `folder` (client 'gcs': requester pays,
    billed to `project`; token from the service-account key or `access_token`).

    Both clients answer one request per (cluster of cells, year) and keep each answer in the
    cluster cache (`cache_folder`), so a re-run after a failure fetches only the missing
    clusters and a finished year costs no request. Credentials: ``service_account``,
    ``key_file`` (or ``key_data``) and ``project`` as ``dg.EnvVar("ENTROPICE_EE_...")``; never
    logged, shown in the resource's repr or written to metadata. Missing ones fail with one
    line naming the variables to set.
    """

    client: Literal["offline", "earthengine", "gcs"] = Field(
        default="offline",
        description="'offline': the COGs in `folder` only, never contacting Google; "
        "'earthengine': reduceRegions on Earth Engine with the service account; 'gcs': "
        "download the missing COGs of the cells' UTM zones from gs://alphaearth_foundations "
        "(requester pays, billed to `project`) into `folder`, then as 'offline'.",
    )
    folder: str = Field(
        default="",
        description="COGs in the GCS layout {year}/{zone}N/*.tiff for clients 'offline' and "
        "'gcs' (default DATA_DIR/sources/alphaearth).",
    )
    cache_folder: str = Field(
        default="",
        description="Per-cluster answers, one file per (grid level, year, cluster) "
        "(default DATA_DIR/sources/alphaearth/requests/<client>).",
    )
    service_account: str = Field(
        default="",
        description="Service account e-mail: set it with "
        f"dg.EnvVar('{alphaearth.ENV_SERVICE_ACCOUNT}').",
    )
    key_file: str = Field(
        default="",
        repr=False,
        description="Path of the service account's JSON key: set it with "
        f"dg.EnvVar('{alphaearth.ENV_KEY_FILE}'), never as a literal.",
    )
    key_data: str = Field(
        default="",
        repr=False,
        description="The JSON key's text instead of a file: set it with "
        f"dg.EnvVar('{alphaearth.ENV_KEY_DATA}'), never as a literal.",
    )
    project: str = Field(
        default="",
        description="Google Cloud project registered for Earth Engine, and the project billed "
        f"for the requester-pays bucket (client 'gcs'): set it with "
        f"dg.EnvVar('{alphaearth.ENV_PROJECT}').",
    )
    access_token: str = Field(
        default="",
        repr=False,
        description="OAuth access token for client 'gcs' instead of the service-account key "
        f"(e.g. gcloud auth print-access-token): set it with dg.EnvVar('{alphaearth.ENV_TOKEN}'), "
        "never as a literal.",
    )
    gcs_endpoint: str = Field(
        default=DEFAULT_ENDPOINT,
        description="Root URL of the GCS JSON API for client 'gcs' (tests use a loopback server).",
    )
    high_volume: bool = Field(
        default=True,
        description="Use Earth Engine's high-volume endpoint (many small automated requests).",
    )
    max_cells: int = Field(
        default=_BATCH.max_cells,
        ge=1,
        lt=alphaearth.EE_FEATURE_LIMIT,
        description="Most cells per request (Earth Engine answers at most 5000 features).",
    )
    max_extent_km: float = Field(
        default=_BATCH.max_extent_km, gt=0, description="Largest extent of one request's cells."
    )
    concurrency: int = Field(
        default=0,
        ge=0,
        lt=alphaearth.EE_CONCURRENCY_QUOTA,
        description=f"Requests at once (under the quota of 40); 0: {_REQUESTS.concurrency} for "
        "Earth Engine, 2 for local files.",
    )
    max_attempts: int = Field(
        default=_REQUESTS.max_attempts,
        ge=1,
        description="Attempts per request on HTTP 429/5xx, with exponential backoff.",
    )
    total_timeout_s: float = Field(
        default=_REQUESTS.total_timeout_s, gt=0, description="Time bound of a run's retries."
    )
    device: Device = Field(
        default="cpu",
        description="Clients 'offline' and 'gcs': where the one pass reduces the COGs' strips: "
        "'cpu', or 'cuda' (on the GPU with cupy, the gpu extra; the same means).",
    )

    def root(self, data_dir: Path) -> Path:
        return Path(self.folder) if self.folder else Layout(data_dir).source("alphaearth")

    def cache(self, data_dir: Path) -> alphaearth.ClusterCache:
        default = Layout(data_dir).source("alphaearth") / "requests" / self.client
        return alphaearth.ClusterCache(Path(self.cache_folder) if self.cache_folder else default)

    def years(self, data_dir: Path) -> list[int]:
        """Every year the source has: the year folders offline, the catalogue's otherwise."""
        if self.client == "offline":
            return alphaearth.years_available(self.root(data_dir))
        return list(range(alphaearth.FIRST_YEAR, alphaearth.LAST_YEAR + 1))

    def embedding_client(self, data_dir: Path) -> alphaearth.EmbeddingClient:
        """The client ``client`` names (Earth Engine credentials are checked here)."""
        batch = alphaearth.BatchConfig(max_cells=self.max_cells, max_extent_km=self.max_extent_km)
        requests = alphaearth.RequestConfig(
            concurrency=self.concurrency
            or (_REQUESTS.concurrency if self.client == "earthengine" else 2),
            max_attempts=self.max_attempts,
            total_timeout_s=self.total_timeout_s,
        )
        cache = self.cache(data_dir)
        if self.client == "offline":
            return alphaearth.CogClient(
                self.root(data_dir), cache=cache, batch=batch, requests=requests, device=self.device
            )
        if self.client == "gcs":
            return alphaearth.GcsCogClient(
                self.root(data_dir),
                self.project or None,
                token=self.access_token or None,
                key_file=self.key_file or None,
                key_data=self.key_data or None,
                endpoint=self.gcs_endpoint,
                cache=cache,
                batch=batch,
                requests=requests,
                device=self.device,
            )
        return alphaearth.EarthEngineClient(
            self.service_account or None,
            self.project or None,
            key_file=self.key_file or None,
            key_data=self.key_data or None,
            high_volume=self.high_volume,
            cache=cache,
            batch=batch,
            requests=requests,
        )


def _from_env(name: str) -> Any:
    """``dg.EnvVar(name)`` where the variable is set (resolved at run time, its value never in
    the run config), else empty: the field's fallback applies (cdsapi's ~/.cdsapirc), or, for
    a required credential, the client's one-line error naming the variable."""
    return dg.EnvVar(name) if name in os.environ else ""


def project_resources(data_dir: Path, aoi: str) -> dict[str, Any]:
    """Every resource the assets use, keyed by the names their classes spell, for one data
    directory and area. The sample region uses the offline clients; any other area the real
    ones, with the CDS credentials from CDSAPI_KEY / CDSAPI_URL (or ~/.cdsapirc) and the Earth
    Engine ones from ENTROPICE_EE_SERVICE_ACCOUNT, ENTROPICE_EE_KEY_FILE (or _KEY_DATA) and
    ENTROPICE_EE_PROJECT."""
    sample = AreaOfInterest.check_spec(aoi) == "sample"
    cds = (
        CdsResource(client="offline")
        if sample
        else CdsResource(client="cds", url=_from_env(ENV_CDS_URL), key=_from_env(ENV_CDS_KEY))
    )
    earth_engine = (
        EarthEngineResource(client="offline")
        if sample
        else EarthEngineResource(
            client="earthengine",
            service_account=_from_env(alphaearth.ENV_SERVICE_ACCOUNT),
            key_file=_from_env(alphaearth.ENV_KEY_FILE),
            key_data=_from_env(alphaearth.ENV_KEY_DATA),
            project=_from_env(alphaearth.ENV_PROJECT),
            access_token=_from_env(alphaearth.ENV_TOKEN),
        )
    )
    return {
        GEOPARQUET_IO_MANAGER_KEY: GeoParquetIOManager(data_dir=str(data_dir)),
        ZARR_IO_MANAGER_KEY: ZarrIOManager(data_dir=str(data_dir)),
        EXPERIMENT_IO_MANAGER_KEY: ExperimentIOManager(data_dir=str(data_dir)),
        MANIFEST_IO_MANAGER_KEY: ManifestIOManager(data_dir=str(data_dir)),
        TABLE_IO_MANAGER_KEY: TableIOManager(data_dir=str(data_dir)),
        "data_dir": DataDirResource(path=str(data_dir)),
        "area_of_interest": AreaOfInterestResource(aoi=aoi),
        "grid_settings": GridSettingsResource(),
        "watermask_source": WatermaskSourceResource(),
        "darts_source": DartsSourceResource(client="offline" if sample else "arcticdata"),
        "arcticdem_source": ArcticDEMSourceResource(client="offline" if sample else "pgc"),
        "cds": cds,
        "earth_engine": earth_engine,
        # the sample region is small: worker threads in the run's process start in a moment,
        # and its models train faster in loky processes than on those threads
        "dask": DaskResource(processes=not sample, shared=sample, models=not sample),
    }
