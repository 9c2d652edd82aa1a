"""IO managers: each asset's file path comes from its ``entropice/path`` metadata.

The storage layout is a contract (architecture.md), so paths are spelled out on the assets
rather than derived from asset keys: ``{"entropice/path": "grids/{partition_key}.parquet"}``
is relative to ``data_dir`` and filled in with the partition key; a multi-partitioned asset
can also name each dimension (``training-results/{grid_level}/{experiment}``).
"""

from abc import abstractmethod
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
from entropice_core.io.icechunk import commit_dataset, read_dataset_version
from entropice_core.io.zarr import dataset_table, read_dataset, write_dataset
from entropice_core.ml.training import TrainedExperiment, load_model, save_experiment

#: Resource keys of the two IO managers, as the assets name them.
GEOPARQUET_IO_MANAGER_KEY = "geoparquet_io_manager"
ZARR_IO_MANAGER_KEY = "zarr_io_manager"
EXPERIMENT_IO_MANAGER_KEY = "experiment_io_manager"
PATH_METADATA_KEY = "entropice/path"
TABLE_METADATA_KEY = "entropice/table_path"
ICECHUNK_METADATA_KEY = "entropice/icechunk"


def _partitions_def(context: dg.OutputContext) -> dg.PartitionsDefinition | None:
    """The asset's partitions definition; None where a context built by hand has none."""
    try:
        return context.asset_partitions_def
    except dg.DagsterInvariantViolationError:
        return None


def _dimension_keys(partitions_def: dg.PartitionsDefinition | None, key: str) -> dict[str, str]:
    """``{dimension: key}`` of a multi-partition key, for path templates; {} otherwise."""
    if not isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return {}
    return dict(partitions_def.get_partition_key_from_str(key).keys_by_dimension)


def _column_schema(frame: gpd.GeoDataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]
    )


class _DataDirIOManager(dg.ConfigurableIOManager):
    """Files under ``data_dir`` at the path template of the asset's ``entropice/path``.

    Several upstream partitions load as a dict ``{partition_key: value}``; a single one loads
    as the value itself.
    """

    data_dir: str = Field(description="Root of the storage hierarchy (ENTROPICE_DATA_DIR).")

    def _path(
        self,
        metadata: Mapping[str, Any] | None,
        asset: str,
        partition_key: str | None,
        key: str = PATH_METADATA_KEY,
        dimensions: Mapping[str, str] | None = None,
    ) -> Path:
        template = (metadata or {}).get(key)
        if template is None:
            raise dg.DagsterInvariantViolationError(
                f"asset {asset} has no {key!r} metadata: add e.g. "
                f'metadata={{"{key}": "grids/{{partition_key}}.parquet"}} '
                "to its definition"
            )
        if partition_key is None and "{partition_key}" in template:
            raise dg.DagsterInvariantViolationError(
                f"asset {asset} is not partitioned but its path {template!r} needs a partition key"
            )
        return Path(self.data_dir) / template.format(
            partition_key=partition_key, **(dimensions or {})
        )

    def _output_path(self, context: dg.OutputContext, key: str = PATH_METADATA_KEY) -> Path:
        partition = context.partition_key if context.has_asset_partitions else None
        dimensions = _dimension_keys(_partitions_def(context), partition) if partition else {}
        return self._path(
            context.definition_metadata,
            context.asset_key.to_user_string(),
            partition,
            key,
            dimensions,
        )

    @abstractmethod
    def _read(self, path: Path) -> Any:
        """Load what ``handle_output`` wrote at ``path``."""

    def _load(
        self,
        metadata: Mapping[str, Any],
        asset: str,
        partition: str | None,
        dimensions: Mapping[str, str] | None = None,
    ) -> Any:
        """Load one partition (or the unpartitioned asset) of ``asset``."""
        return self._read(self._path(metadata, asset, partition, dimensions=dimensions))

    def load_input(self, context: dg.InputContext) -> Any:
        metadata = context.upstream_output.definition_metadata or {}
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            return self._load(metadata, asset, None)
        values = {
            key: self._load(
                metadata, asset, key, _dimension_keys(context.asset_partitions_def, key)
            )
            for key in context.asset_partition_keys
        }
        return next(iter(values.values())) if len(values) == 1 else values


class GeoParquetIOManager(_DataDirIOManager):
    """GeoDataFrames as GeoParquet files under ``data_dir``, replaced atomically.

    A write goes to a temporary file that is renamed over the target only when complete, so a
    failed run leaves the previous version readable.
    """

    def handle_output(self, context: dg.OutputContext, obj: gpd.GeoDataFrame) -> None:
        path = self._output_path(context)
        write_geoparquet(obj, path)
        # The UI shows these standard keys as the asset's row count and column schema.
        count_key = (
            "dagster/partition_row_count" if context.has_asset_partitions else "dagster/row_count"
        )
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "bytes": path.stat().st_size,
                "crs": obj.crs.to_string(),
                count_key: parquet_row_count(path),
                "dagster/column_schema": _column_schema(obj),
            }
        )

    def _read(self, path: Path) -> gpd.GeoDataFrame:
        return read_geoparquet(path)


class ZarrIOManager(_DataDirIOManager):
    """L2 datasets (xarray with an xdggs ``cell_ids`` coordinate) as Zarr v3 stores.

    The store path comes from the asset's ``entropice/path`` metadata like the GeoParquet
    manager's; an optional ``entropice/table_path`` also writes the dataset as a flat Parquet
    table (one row per cell and year) for pandas users. Both are replaced atomically. With
    ``entropice/icechunk: true`` the path is an Icechunk repository instead: each
    materialisation is one commit to the partition's group, and its snapshot id goes into the
    metadata. Loading is lazy (Dask-backed), from the branch head.
    """

    def handle_output(self, context: dg.OutputContext, obj: xr.Dataset) -> None:
        path = self._output_path(context)
        extra: dict[str, Any] = {}
        if (context.definition_metadata or {}).get(ICECHUNK_METADATA_KEY):
            group = context.partition_key if context.has_asset_partitions else None
            snapshot = commit_dataset(
                obj, path, group, f"{context.asset_key.to_user_string()} {group or ''}".strip()
            )
            extra["icechunk_snapshot_id"] = snapshot
            extra["icechunk_group"] = group or "/"
        else:
            write_dataset(obj, path)
        if TABLE_METADATA_KEY in (context.definition_metadata or {}):
            table_path = self._output_path(context, TABLE_METADATA_KEY)
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

    def _read(self, path: Path) -> xr.Dataset:
        return read_dataset(path)

    def _load(
        self,
        metadata: Mapping[str, Any],
        asset: str,
        partition: str | None,
        dimensions: Mapping[str, str] | None = None,
    ) -> xr.Dataset:
        if not metadata.get(ICECHUNK_METADATA_KEY):
            return super()._load(metadata, asset, partition, dimensions)
        # One repository for all partitions; each partition is a group in it.
        return read_dataset_version(self._path(metadata, asset, None), partition)


class ExperimentIOManager(_DataDirIOManager):
    """Trained experiments as a folder: model file (skops, else joblib) with its version stamp,
    CV results, scores and feature importance (Parquet) and the resolved config (TOML).

    Each file is replaced atomically; loading gives ``(fitted pipeline, stamp)``.
    """

    def handle_output(self, context: dg.OutputContext, obj: TrainedExperiment) -> None:
        paths = save_experiment(obj, self._output_path(context))
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(paths["model"].parent)),
                "model_file": dg.MetadataValue.path(str(paths["model"])),
                "bytes": paths["model"].stat().st_size,
            }
        )

    def _read(self, path: Path) -> tuple[Any, dict[str, Any]]:
        return load_model(path)
