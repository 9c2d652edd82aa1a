"""GDAL's block cache, bounded in the Dask workers that read the GeoTIFF tiles.

GDAL keeps the decoded blocks of every open raster in one cache per process, 5 % of the
machine's memory by default, and frees them only when the raster is closed (xarray keeps up
to 128 tiles open). The terrain derivatives read each 512-pixel block of a tile once (a
1,024-pixel chunk holds whole blocks), so the cache holds blocks never read again, outside
dask's accounting of a worker's memory: at 1x, 0.8 GB of one worker's 2.3 GB peak; with 32
workers on a 256 GB node each worker could keep 12.8 GB.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


def limit_gdal_cache(nbytes: int) -> None:
    """Bound GDAL's block cache in this process to ``nbytes`` (blocks beyond it are evicted)."""
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", int(nbytes))


class GdalCacheLimit(WorkerPlugin):
    """Bounds GDAL's block cache on every worker of a cluster, present and future.

    Registered on a client (``Client.register_plugin``), it reaches workers of any cluster:
    a LocalCluster, an existing scheduler's or dask-jobqueue's, where an environment variable
    would have to be set in each job's script.
    """

    name = "entropice-gdal-cache"

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)

    def setup(self, worker: Any) -> None:
        """Set the bound as the worker starts (or now, for a running worker)."""
        limit_gdal_cache(self.nbytes)
