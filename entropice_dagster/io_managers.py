"""IO managers: each asset's file path comes from the storage layout (``entropice_core.layout``).

The layout is a contract (architecture.md), owned by one module: an IO manager asks
``Layout(data_dir).asset_path(asset, partition)`` where the asset's output goes, so assets,
the CLI and dataset configs cannot disagree about a path. Heavy libraries (geopandas, xarray,
the ML stack) are imported when a value is written or read, not when the definitions load.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from entropice_core.config import DEFAULT_GRID_LEVELS
from entropice_core.io.assets import read_manifest, write_manifest
from entropice_core.layout import Layout

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd
    import xarray as xr

    from entropice_core.ml.training import TrainedExperiment

#: Resource keys of the IO managers, as the assets name them.
GEOPARQUET_IO_MANAGER_KEY = "geoparquet_io_manager"
ZARR_IO_MANAGER_KEY = "zarr_io_manager"
EXPERIMENT_IO_MANAGER_KEY = "experiment_io_manager"
MANIFEST_IO_MANAGER_KEY = "manifest_io_manager"
TABLE_IO_MANAGER_KEY = "table_io_manager"
#: Optional asset metadata: the raster variable the Zarr IO manager previews after writing.
PREVIEW_METADATA_KEY = "entropice/preview"
#: Optional asset metadata: the raster also gets pixel-sample overviews at these strides
#: (``entropice_core.terrain.overviews``), committed with it and loaded beside it.
OVERVIEWS_METADATA_KEY = "entropice/overview_strides"


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


class _DataDirIOManager(dg.ConfigurableIOManager):
    """Files under ``data_dir`` at the asset's place in the storage layout.

    Several upstream partitions load as a dict ``{partition_key: value}``; a single one loads
    as the value itself.
    """

    data_dir: str = Field(description="Root of the storage hierarchy (ENTROPICE_DATA_DIR).")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Fail the run before any work where nothing can be written: a read-only data
        directory, or a file in its place (otherwise the computation runs, then fails)."""
        from entropice_core.io.writable import check_writable

        check_writable(Path(self.data_dir), option="ENTROPICE_DATA_DIR", kind="folder")

    @property
    def layout(self) -> Layout:
        return Layout(Path(self.data_dir))

    def _output_path(self, context: dg.OutputContext) -> Path:
        partition = context.partition_key if context.has_asset_partitions else None
        dimensions = _dimension_keys(_partitions_def(context), partition) if partition else {}
        return self._path(context.asset_key.to_user_string(), partition, dimensions)

    def _path(self, asset: str, partition: str | None, dimensions: dict[str, str]) -> Path:
        if dimensions:
            return self.layout.asset_path(asset, **dimensions)
        return self.layout.asset_path(asset, partition)

    @abstractmethod
    def _read(self, path: Path) -> Any:
        """Load what ``handle_output`` wrote at ``path``."""

    def _load(self, asset: str, partition: str | None, dimensions: dict[str, str]) -> Any:
        """Load one partition (or the unpartitioned asset) of ``asset``."""
        return self._read(self._path(asset, partition, dimensions))

    def load_input(self, context: dg.InputContext) -> Any:
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            return self._load(asset, None, {})
        values = {
            key: self._load(asset, key, _dimension_keys(context.asset_partitions_def, key))
            for key in context.asset_partition_keys
        }
        return next(iter(values.values())) if len(values) == 1 else values


def _column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    from entropice_dagster.metadata import column_description

    return dg.TableSchema(
        columns=[
            dg.TableColumn(str(name), str(dtype), description=column_description(str(name)))
            for name, dtype in frame.dtypes.items()
        ]
    )


class GeoParquetIOManager(_DataDirIOManager):
    """GeoDataFrames as GeoParquet files under ``data_dir``, replaced atomically.

    A write goes to a temporary file that is renamed over the target only when complete, so a
    failed run leaves the previous version readable.
    """

    def handle_output(self, context: dg.OutputContext, obj: gpd.GeoDataFrame) -> None:
        from entropice_core.io.geoparquet import parquet_row_count, write_geoparquet

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
        from entropice_core.io.geoparquet import read_geoparquet

        return read_geoparquet(path)


class ZarrIOManager(_DataDirIOManager):
    """Datasets as Zarr v3 stores, or as commits to an Icechunk repository.

    L2 datasets (an xdggs ``cell_ids`` coordinate) and rasters on a regular grid (era5 indices)
    go to Zarr stores replaced atomically; where the layout names a flat table (rts_labels) the
    dataset is also written as Parquet (one row per cell and year). Where the layout path is an
    Icechunk repository (``*.icechunk``), each materialisation is one commit (to the
    partition's group, or the root group of an unpartitioned raster) and its snapshot id goes
    into the metadata. Loading is lazy (Dask-backed); from Icechunk, at the branch head, with
    the snapshot id read in ``attrs["icechunk_snapshot_id"]`` so downstream can record it. A
    unpartitioned raster loads as a DataTree: the raster at the root and, where it was written
    with overviews (asset metadata ``OVERVIEWS_METADATA_KEY``), the overviews in the child
    ``overviews``, both of one snapshot. Writing and loading are
    ``entropice_core.io.assets.store_dataset`` / ``load_dataset``, which the CLI uses too.
    """

    def handle_output(
        self, context: dg.OutputContext, obj: xr.Dataset | dict[str, xr.Dataset]
    ) -> None:
        if not isinstance(obj, dict):
            partition = context.partition_key if context.has_asset_partitions else None
            context.add_output_metadata(self._store(context, obj, partition))
            return
        # a run over several partitions (BackfillPolicy.single_run): {partition: dataset},
        # each published on its own; the asset gives each partition its own metadata
        partitions = context.asset_partition_keys
        missing = sorted(set(partitions) - set(obj))
        if missing:
            raise dg.Failure(
                f"{context.asset_key.to_user_string()} returned no value for {missing}"
            )
        stored = {key: self._store(context, obj[key], key) for key in partitions}
        paths = {key: str(metadata["path"].value) for key, metadata in stored.items()}
        context.add_output_metadata({"paths": dg.MetadataValue.json(paths)})

    def _store(
        self, context: dg.OutputContext, obj: xr.Dataset, partition: str | None
    ) -> dict[str, Any]:
        """Write one partition (or the unpartitioned asset); its metadata."""
        from entropice_core.io.assets import store_dataset

        asset = context.asset_key.to_user_string()
        dimensions = _dimension_keys(_partitions_def(context), partition) if partition else {}
        strides = (context.definition_metadata or {}).get(OVERVIEWS_METADATA_KEY, ())
        stored = store_dataset(
            obj, self.layout, asset, partition, overview_strides=tuple(strides), **dimensions
        )
        extra: dict[str, Any] = {}
        if stored.snapshot_id is not None:
            _record_data_version(context, stored.snapshot_id)
            extra["icechunk_snapshot_id"] = stored.snapshot_id
            extra["icechunk_group"] = stored.group or "/"
            variable = (context.definition_metadata or {}).get(PREVIEW_METADATA_KEY)
            if variable:
                extra[f"{variable}_preview"] = _raster_preview(
                    stored.path, variable, stored.snapshot_id
                )
        if stored.table_path is not None:
            extra["table_path"] = dg.MetadataValue.path(str(stored.table_path))
        if "cell_ids" in obj.coords:
            extra["grid"] = dg.MetadataValue.json(dict(obj["cell_ids"].attrs))
        return {
            "path": dg.MetadataValue.path(str(stored.path)),
            "dims": dg.MetadataValue.json({str(k): int(v) for k, v in obj.sizes.items()}),
            "variables": sorted(map(str, obj.data_vars)),
            **extra,
        }

    def _read(self, path: Path) -> xr.Dataset:
        from entropice_core.io.zarr import read_dataset

        return read_dataset(path)

    def load_input(self, context: dg.InputContext) -> Any:
        """Load as every IO manager here does, but a tree of grid levels (an unpartitioned
        one-pass asset such as ``terrain_statistics``) read by a run of one grid level comes
        with that level's group only: opening every level's arrays costs about a second."""
        from entropice_core.io.assets import load_dataset

        level = context.partition_key if context.has_partition_key else None
        if context.has_asset_partitions or level not in DEFAULT_GRID_LEVELS:
            return super().load_input(context)
        return load_dataset(self.layout, context.asset_key.to_user_string(), groups=[level])

    def _load(
        self, asset: str, partition: str | None, dimensions: dict[str, str]
    ) -> xr.Dataset | xr.DataTree:
        from entropice_core.io.assets import load_dataset

        return load_dataset(self.layout, asset, partition, **dimensions)


def _record_data_version(context: dg.OutputContext, version: str) -> None:
    """Make ``version`` the data version of the materialisation being written.

    An Icechunk commit's snapshot id names its content exactly (a run that changes no chunk
    commits nothing and keeps the id), but it is known only after the write, while Dagster takes
    a data version from the asset's ``Output``. Dagster records the materialisation after
    ``handle_output``, taking the version from the step's data-version cache where the Output
    gave none; that cache is what this fills. A context built by hand has no step: nothing to do.
    """
    try:
        step = context.step_context
    except dg.DagsterInvariantViolationError:
        return
    if context.has_asset_key and not step.has_data_version(context.asset_key):
        step.set_data_version(context.asset_key, dg.DataVersion(version))


def _raster_preview(path: Path, variable: str, snapshot: str) -> dg.MetadataValue:
    """A small PNG of every 32nd pixel of ``variable`` as it was committed.

    Read from the stride-32 overview where the commit has one (a 1/1024 read), else from
    the raster itself (which decompresses every chunk of ``variable``).
    """
    from entropice_core.io.icechunk import read_dataset_version
    from entropice_core.plots import raster_png
    from entropice_core.terrain.overviews import GROUP, stored_sample
    from entropice_dagster.metadata import png_markdown

    try:
        sample = stored_sample(read_dataset_version(path, GROUP, snapshot), 32)
    except FileNotFoundError:  # committed without overviews
        sample = None
    if sample is None:
        sample = read_dataset_version(path, None, snapshot).isel(
            y=slice(None, None, 32), x=slice(None, None, 32)
        )
    values = sample[variable].to_numpy()
    title = f"{variable}, every 32nd pixel"
    return png_markdown(raster_png(values, title), title)


class ExperimentIOManager(_DataDirIOManager):
    """Trained experiments as a folder: model file (skops, else joblib) with its version stamp,
    CV results, scores and feature importance (Parquet) and the resolved config (TOML).

    Each file is replaced atomically; loading gives ``(fitted pipeline, stamp)``.
    """

    def handle_output(self, context: dg.OutputContext, obj: TrainedExperiment) -> None:
        from entropice_core.ml.training import save_experiment

        paths = save_experiment(obj, self._output_path(context))
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(paths["model"].parent)),
                "model_file": dg.MetadataValue.path(str(paths["model"])),
                "bytes": paths["model"].stat().st_size,
            }
        )

    def _read(self, path: Path) -> tuple[Any, dict[str, Any]]:
        from entropice_core.ml.training import load_model

        return load_model(path)


class ManifestIOManager(_DataDirIOManager):
    """Source assets whose files a download client puts under ``sources/``: the value is the
    manifest of those files (a JSON-serialisable dict), stored as JSON at the asset's place in
    the layout and loaded back as that dict."""

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        path = write_manifest(obj, self._output_path(context))
        context.add_output_metadata({"manifest": dg.MetadataValue.path(str(path))})

    def _read(self, path: Path) -> dict[str, Any]:
        return read_manifest(path)


class TableIOManager(_DataDirIOManager):
    """Plain tables (pandas, no geometry) as Parquet files, replaced atomically."""

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        from entropice_core.io.atomic import atomic_path

        path = self._output_path(context)
        with atomic_path(path) as tmp:
            obj.to_parquet(tmp, index=False)
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": len(obj),
                "dagster/column_schema": _column_schema(obj),
            }
        )

    def _read(self, path: Path) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(path)
