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
from pydantic import Field

from entropice_core.io.geoparquet import parquet_row_count, read_geoparquet, write_geoparquet

PATH_METADATA_KEY = "entropice/path"


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
