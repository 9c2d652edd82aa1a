"""IO managers: each asset's file path comes from its ``entropice/path`` metadata.

The storage layout is a contract (architecture.md), so paths are spelled out on the assets
rather than derived from asset keys: ``{"entropice/path": "grids/{partition_key}.parquet"}``
is relative to ``data_dir`` and filled in with the partition key.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import geopandas as gpd
import xarray as xr
from pydantic import Field

from entropice_core.io.atomic import atomic_path
from entropice_core.io.geoparquet import (
    parquet_row_count,
    read_geoparquet,
    write_geoparquet,
)
from entropice_core.io.zarr import dataset_table, read_dataset, write_dataset

PATH_METADATA_KEY = "entropice/path"
TABLE_METADATA_KEY = "entropice/table_path"


def _column_schema(frame: gpd.GeoDataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]
    )


class GeoParquetIOManager(dg.ConfigurableIOManager):
    """GeoDataFrames as GeoParquet files under ``data_dir``, replaced atomically.

    A write goes to a temporary file that is renamed over the target only when complete, so a
    failed run leaves the previous version readable. Several upstream partitions load as a dict
    ``{partition_key: frame}``; a single one loads as the frame itself.
    """

    data_dir: str = Field(description="Root of the storage hierarchy (ENTROPICE_DATA_DIR).")

    def _path(
        self, metadata: Mapping[str, Any] | None, asset: str, partition_key: str | None
    ) -> Path:
        template = (metadata or {}).get(PATH_METADATA_KEY)
        if template is None:
            raise dg.DagsterInvariantViolationError(
                f"asset {asset} has no {PATH_METADATA_KEY!r} metadata: add e.g. "
                f'metadata={{"{PATH_METADATA_KEY}": "grids/{{partition_key}}.parquet"}} '
                "to its definition"
            )
        if partition_key is None and "{partition_key}" in template:
            raise dg.DagsterInvariantViolationError(
                f"asset {asset} is not partitioned but its path {template!r} needs a partition key"
            )
        return Path(self.data_dir) / template.format(partition_key=partition_key)

    def handle_output(self, context: dg.OutputContext, obj: gpd.GeoDataFrame) -> None:
        key = context.partition_key if context.has_asset_partitions else None
        path = self._path(context.definition_metadata, context.asset_key.to_user_string(), key)
        write_geoparquet(obj, path)
        # The UI shows these standard keys as the asset's row count and column schema.
        count_key = "dagster/partition_row_count" if key is not None else "dagster/row_count"
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "bytes": path.stat().st_size,
                "crs": obj.crs.to_string(),
                count_key: parquet_row_count(path),
                "dagster/column_schema": _column_schema(obj),
            }
        )

    def load_input(
        self, context: dg.InputContext
    ) -> gpd.GeoDataFrame | dict[str, gpd.GeoDataFrame]:
        metadata = context.upstream_output.definition_metadata
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            return read_geoparquet(self._path(metadata, asset, None))
        frames = {
            key: read_geoparquet(self._path(metadata, asset, key))
            for key in context.asset_partition_keys
        }
        return next(iter(frames.values())) if len(frames) == 1 else frames


class ZarrIOManager(dg.ConfigurableIOManager):
    """L2 datasets (xarray with an xdggs ``cell_ids`` coordinate) as Zarr v3 stores.

    The store path comes from the asset's ``entropice/path`` metadata like the GeoParquet
    manager's; an optional ``entropice/table_path`` also writes the dataset as a flat Parquet
    table (one row per cell and year) for pandas users. Both are replaced atomically. Loading
    is lazy (Dask-backed).
    """

    data_dir: str = Field(description="Root of the storage hierarchy (ENTROPICE_DATA_DIR).")

    def _path(self, metadata: Mapping[str, Any] | None, key: str, partition: str | None) -> Path:
        return GeoParquetIOManager(data_dir=self.data_dir)._path(metadata, key, partition)

    def handle_output(self, context: dg.OutputContext, obj: xr.Dataset) -> None:
        key = context.partition_key if context.has_asset_partitions else None
        metadata = context.definition_metadata
        path = self._path(metadata, context.asset_key.to_user_string(), key)
        write_dataset(obj, path)
        extra: dict[str, Any] = {}
        if TABLE_METADATA_KEY in (metadata or {}):
            table_path = Path(self.data_dir) / metadata[TABLE_METADATA_KEY].format(
                partition_key=key
            )
            with atomic_path(table_path) as tmp:
                dataset_table(obj).to_parquet(tmp, index=False)
            extra["table_path"] = dg.MetadataValue.path(str(table_path))
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "dims": dg.MetadataValue.json({k: int(v) for k, v in obj.sizes.items()}),
                "variables": sorted(obj.data_vars),
                "grid": dg.MetadataValue.json(dict(obj["cell_ids"].attrs)),
                **extra,
            }
        )

    def load_input(self, context: dg.InputContext) -> xr.Dataset | dict[str, xr.Dataset]:
        metadata = context.upstream_output.definition_metadata
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            return read_dataset(self._path(metadata, asset, None))
        datasets = {
            key: read_dataset(self._path(metadata, asset, key))
            for key in context.asset_partition_keys
        }
        return next(iter(datasets.values())) if len(datasets) == 1 else datasets
