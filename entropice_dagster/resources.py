"""Resources: where data lives, which area to cover, and how the grids and water mask are built.

Defaults and field descriptions come from the core pydantic models, so the Dagster UI shows the
same documentation as the library and the two cannot drift apart.
"""

import os
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from entropice_core.config import AreaOfInterest, GridCellsConfig, WatermaskConfig
from entropice_core.ingest.arcticdem import (
    FetchedTiles,
    fetch_tiles,
    find_tiles,
    read_tile_index,
    tile_rowcol,
)
from entropice_core.ingest.darts import find_darts_files
from entropice_core.ingest.era5 import (
    DownloadReport,
    Era5DownloadConfig,
    cds_area,
    cds_client,
    download_arctic_year,
)
from entropice_core.io.download import DownloadConfig
from entropice_core.layout import Layout
from entropice_dagster.io_managers import (
    EXPERIMENT_IO_MANAGER_KEY,
    GEOPARQUET_IO_MANAGER_KEY,
    MANIFEST_IO_MANAGER_KEY,
    ZARR_IO_MANAGER_KEY,
    ExperimentIOManager,
    GeoParquetIOManager,
    ManifestIOManager,
    ZarrIOManager,
)

_GRID = GridCellsConfig()
_WATER = WatermaskConfig()


def _describe(model: type, field: str) -> str:
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

    def area(self) -> AreaOfInterest:
        """Parse the spec; a bad spec fails here with the core's explanation."""
        return AreaOfInterest.parse(self.aoi)


class GridCellsResource(dg.ConfigurableResource):
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


class WatermaskResource(dg.ConfigurableResource):
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
        return WatermaskConfig(source=self.source, path=self.path, tile_deg=self.tile_deg)


class DartsSourceResource(dg.ConfigurableResource):
    """Where the DARTS release lies: a folder of GeoPackage/GeoParquet files.

    Empty ``folder`` means ``DATA_DIR/sources/darts``, where the sample region writes its
    DARTS-schema files; for real runs download the release (NSF Arctic Data Center,
    doi:10.18739/A22B8VD7C) and point ``folder`` at it.
    """

    folder: str = Field(
        default="", description="Folder with the DARTS files (default DATA_DIR/sources/darts)."
    )
    pattern: str = Field(
        default="*level2.*",
        description="Glob of the files to read: '*level2.*' for the annual product, "
        "'*level1.*' for per-image footprints (dissolved per year).",
    )

    def files(self, data_dir: Path) -> list[Path]:
        folder = Path(self.folder) if self.folder else Layout(data_dir).source("darts")
        return find_darts_files(folder, self.pattern)


class DaskResource(dg.ConfigurableResource):
    """A dask.distributed client for the heavy work (aggregation, terrain, training, inference).

    By default a LocalCluster sized to the machine; or an existing scheduler (``scheduler_address``,
    e.g. a cluster started by ``dask-jobqueue`` or on Kubernetes); or a dask-jobqueue cluster
    started here (``jobqueue``: ``SLURMCluster``, ``PBSCluster``, ...) and configured the
    dask-jobqueue way, in ``~/.config/dask/jobqueue.yaml`` (queue, cores, memory, walltime).
    The client and any cluster started here are closed when the run ends.
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
    shared: bool = Field(
        default=False,
        description="With processes=False: keep the in-process cluster for every later run in "
        "this process (one start for the demo's in-process runs) instead of one per run.",
    )

    _client: Any = PrivateAttr(default=None)
    _cluster: Any = PrivateAttr(default=None)
    _shared: bool = PrivateAttr(default=False)

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
        from distributed import Client

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

    def metadata(self) -> dict[str, Any]:
        """Dashboard link and worker count, for the materialisation's metadata."""
        workers = self.client.scheduler_info()["workers"]
        return {
            "dask_dashboard": dg.MetadataValue.url(self.client.dashboard_link),
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
    and where missing ones are downloaded from.

    Empty ``folder`` means ``DATA_DIR/sources/arcticdem``, where the sample region writes its
    tiles. With ``base_url`` set, tiles of the area that are not on disk are downloaded from
    it (the PGC bucket: ``entropice_core.ingest.arcticdem.BASE_URL``, or a mirror); empty
    means use the tiles on disk only.
    """

    folder: str = Field(
        default="", description="Folder of the tile folders (default DATA_DIR/sources/arcticdem)."
    )
    base_url: str = Field(
        default="",
        description="Download missing tiles from here (e.g. https://pgc-opendata-dems.s3."
        "us-west-2.amazonaws.com/arcticdem/mosaics/v4.1/32m); empty: use the tiles on disk.",
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

    def fetch(self, data_dir: Path, area: AreaOfInterest) -> FetchedTiles:
        """Tiles for the area on disk, downloading missing ones when ``base_url`` is set."""
        bbox = area.geometry.bounds
        if not self.base_url:
            present, missing = find_tiles(self.root(data_dir), bbox)
            return FetchedTiles(present, [tile_rowcol(p) for p in missing], [])
        index = read_tile_index(self.index_path) if self.index_path else None
        return fetch_tiles(
            bbox,
            self.root(data_dir),
            self.base_url,
            index,
            DownloadConfig(retries=self.retries),
            show_progress=False,
            stac=self.stac,
        )

    def tiles(self, data_dir: Path, area: AreaOfInterest) -> tuple[list[Path], list[Path]]:
        """(present, missing) tiles on disk for the area; see ``find_tiles``."""
        return find_tiles(self.root(data_dir), area.geometry.bounds)


_CDS = Era5DownloadConfig()


class CdsResource(dg.ConfigurableResource):
    """ERA5 downloads from the Copernicus Climate Data Store (cdsapi), resumable.

    Credentials come from CDSAPI_URL / CDSAPI_KEY or ~/.cdsapirc (as cdsapi reads them) and are
    never logged or stored in the run config. ``offline`` only checks the files already under
    ``folder`` (the sample region, or a mirror) and never contacts the CDS.
    """

    folder: str = Field(
        default="", description="Where the month files go (default DATA_DIR/sources/era5)."
    )
    offline: bool = Field(
        default=False, description="Use the files present only; never contact the CDS."
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

    def root(self, data_dir: Path) -> Path:
        return Path(self.folder) if self.folder else Layout(data_dir).source("era5")

    def download(
        self, data_dir: Path, year: int, area: AreaOfInterest, log: Any = print
    ) -> DownloadReport:
        """Fetch (or, offline, check) the files of one Arctic year over ``area``."""
        config = Era5DownloadConfig(
            area=cds_area(area.geometry.bounds),
            max_fields=self.max_fields,
            max_values=self.max_values,
            retries=self.retries,
            backoff_s=self.backoff_s,
        )
        client = None if self.offline else cds_client()
        return download_arctic_year(client, self.root(data_dir), year, config, log=log)


def project_resources(data_dir: Path, aoi: str) -> dict[str, Any]:
    """Every resource the assets use, with defaults, for one data directory and area."""
    return {
        GEOPARQUET_IO_MANAGER_KEY: GeoParquetIOManager(data_dir=str(data_dir)),
        ZARR_IO_MANAGER_KEY: ZarrIOManager(data_dir=str(data_dir)),
        EXPERIMENT_IO_MANAGER_KEY: ExperimentIOManager(data_dir=str(data_dir)),
        MANIFEST_IO_MANAGER_KEY: ManifestIOManager(data_dir=str(data_dir)),
        "data_dir": DataDirResource(path=str(data_dir)),
        "area_of_interest": AreaOfInterestResource(aoi=aoi),
        "grid_settings": GridCellsResource(),
        "watermask_source": WatermaskResource(),
        "darts_source": DartsSourceResource(),
        "arcticdem_source": ArcticDEMSourceResource(),
        "cds": CdsResource(offline=aoi == "sample"),
        # the sample region is small: worker threads in the run's process start in a moment
        "dask": DaskResource(processes=aoi != "sample", shared=aoi == "sample"),
    }
