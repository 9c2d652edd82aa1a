"""Asset values at their place in the storage layout: how they are written and read back.

The one code path of the Dagster IO managers and the ``entropice`` CLI, so that a stage run
either way leaves the same files: datasets as Zarr stores published atomically (with the
flat Parquet table the layout names for some, published with the store as one version),
rasters and datasets in Icechunk repositories as one commit each (rasters with their
pixel-sample overviews in the same commit), and source manifests as JSON replaced atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from entropice_core.io.atomic import atomic_path

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr

    from entropice_core.layout import Layout


@dataclass(frozen=True)
class StoredDataset:
    """Where :func:`store_dataset` wrote a dataset, and the Icechunk commit if it made one."""

    path: Path
    table_path: Path | None = None
    snapshot_id: str | None = None
    group: str | None = None


def store_dataset(
    dataset: xr.Dataset | xr.DataTree,
    layout: Layout,
    asset: str,
    partition: str | None = None,
    *,
    overview_strides: tuple[int, ...] = (),
    **dimensions: str,
) -> StoredDataset:
    """Write one partition of a dataset asset to its place in the layout.

    Where the layout names an Icechunk repository (``*.icechunk``) the value is one commit:
    to the partition's group, or, unpartitioned, as the root raster with its overviews
    (``overview_strides``) in the same commit. Otherwise an L2 dataset (xdggs ``cell_ids``)
    or a plain raster goes to a Zarr v3 store published once complete. Where the layout
    names a flat table for the asset, the dataset is also written there as Parquet, published
    together with the store (readers never see one without the other).

    Parameters
    ----------
    dataset : xarray.Dataset or xarray.DataTree
        The asset's value; a tree (several grid levels) is one Zarr store, a group per node.
    layout : Layout
        The storage layout of the data directory.
    asset : str
        Asset name (a key of ``layout.ASSET_PATHS``).
    partition : str, optional
        Partition key (``h3_5``, ``2023``); None for an unpartitioned asset.
    overview_strides : tuple of int, optional
        Unpartitioned Icechunk rasters: the strides of the pixel-sample overviews committed
        with them (``terrain.overviews.STRIDES``); empty: none.
    **dimensions : str
        Partition keys by dimension, for assets with several.

    Returns
    -------
    StoredDataset
        The store, the table and, for Icechunk, the snapshot id and group.
    """
    import xarray as xr

    from entropice_core.io.zarr import dataset_table, write_dataset, write_store

    path = layout.asset_path(asset, partition, **dimensions)
    table_path = layout.table_path(asset, partition, **dimensions)
    snapshot, group = None, None
    if isinstance(dataset, xr.DataTree):  # several grid levels: one Zarr store, a group each
        if path.suffix != ".zarr" or table_path is not None:
            raise ValueError(f"{asset}: a tree of datasets is stored as one Zarr store only")
        write_store(dataset, path)
    elif path.suffix == ".icechunk":
        snapshot, group = _commit(dataset, path, asset, partition, overview_strides)
        if table_path is not None:
            with atomic_path(table_path) as tmp:
                dataset_table(dataset).to_parquet(tmp, index=False)
    elif "cell_ids" in dataset.coords:  # an L2 dataset
        write_dataset(dataset, path, table=table_path)  # store and table as one version
    else:
        write_store(dataset, path)
    return StoredDataset(path, table_path, snapshot, group)


def _commit(
    dataset: xr.Dataset,
    path: Path,
    asset: str,
    partition: str | None,
    strides: tuple[int, ...],
) -> tuple[str, str | None]:
    from entropice_core.io.icechunk import commit_dataset, commit_raster

    if partition is not None:
        return commit_dataset(dataset, path, partition, f"{asset} {partition}"), partition
    return commit_raster(dataset, path, asset, strides), None


def load_dataset(
    layout: Layout,
    asset: str,
    partition: str | None = None,
    groups: Sequence[str] | None = None,
    **dimensions: str,
) -> xr.Dataset | xr.DataTree:
    """Open one partition of a dataset asset lazily, as :func:`store_dataset` wrote it.

    From Icechunk the branch head is read, its snapshot id in ``attrs["icechunk_snapshot_id"]``
    so that downstream can record the version; an unpartitioned raster comes as a DataTree
    with the raster at the root and, where it was written with them, the overviews in the
    child ``overviews``, both of one snapshot. The root is lazily indexed, not Dask-backed:
    its readers take a whole window of a variable at a time, which zarr reads faster itself
    (``read_dataset_version(dask=False)``).

    Parameters
    ----------
    layout : Layout
        The storage layout of the data directory.
    asset : str
        Asset name.
    partition : str, optional
        Partition key; None for an unpartitioned asset.
    groups : sequence of str, optional
        Of a tree of grid levels (``terrain_statistics``), open only these levels' groups.
    **dimensions : str
        Partition keys by dimension, for assets with several.

    Returns
    -------
    xarray.Dataset or xarray.DataTree
        The value (Dask-backed, but for the root of an unpartitioned raster).

    Raises
    ------
    FileNotFoundError
        If the store, repository or group does not exist.
    """
    from entropice_core.io.zarr import read_dataset, read_tree

    path = layout.asset_path(asset, partition, **dimensions)
    if path.suffix != ".icechunk":
        tree = read_tree(path, asset, groups)
        return tree if tree is not None else read_dataset(path, asset)
    return _load_icechunk(path, partition)


def _load_icechunk(path: Path, partition: str | None) -> xr.Dataset | xr.DataTree:
    import xarray as xr

    from entropice_core.io.icechunk import branch_snapshot, read_dataset_version
    from entropice_core.terrain.overviews import GROUP

    # One repository for all partitions; each partition is a group in it. The snapshot is
    # looked up once, so the data and the recorded id are the same version.
    snapshot = branch_snapshot(path)
    # the raster is read a whole window per variable (spatial.levels): lazily indexed, not dask
    dataset = read_dataset_version(path, partition, snapshot, dask=partition is not None)
    dataset.attrs["icechunk_snapshot_id"] = snapshot
    if partition is not None:
        return dataset
    try:
        pyramid = {GROUP: read_dataset_version(path, GROUP, snapshot)}
    except FileNotFoundError:  # written without overviews
        pyramid = {}
    return xr.DataTree.from_dict({"/": dataset, **pyramid})


def write_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    """Write a source manifest (the files a download client put under ``sources/``) as JSON.

    Parameters
    ----------
    manifest : dict
        JSON-serialisable manifest.
    path : str or Path
        The file, replaced atomically.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return path


def read_manifest(path: str | Path, writer: str = "the source asset") -> dict[str, Any]:
    """Read a manifest written by :func:`write_manifest`.

    Parameters
    ----------
    path : str or Path
        The file.
    writer : str, optional
        What writes it, for the error message.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialise {writer} first")
    return json.loads(path.read_text())


def load_grid_levels(
    layout: Layout, keys: Sequence[str] | None = None
) -> dict[str, gpd.GeoDataFrame]:
    """Read the ``grid_cells`` of several grid levels, for work that serves them in one pass.

    Parameters
    ----------
    layout : Layout
        The storage layout of the data directory.
    keys : sequence of str, optional
        Grid level keys, each of which must have its cells; None: every default grid level
        (``config.DEFAULT_GRID_LEVELS``) whose cells exist.

    Returns
    -------
    dict of str to geopandas.GeoDataFrame
        Per level key (in the order given, or the default order), its cells.

    Raises
    ------
    FileNotFoundError
        If a requested level, or with ``keys=None`` every level, has no cells; the message
        names the levels and the fix.
    """
    from entropice_core.config import DEFAULT_GRID_LEVELS
    from entropice_core.io.geoparquet import read_geoparquet

    wanted = list(keys) if keys is not None else list(DEFAULT_GRID_LEVELS)
    paths = {key: layout.asset_path("grid_cells", key) for key in wanted}
    missing = [key for key, path in paths.items() if not path.exists()]
    if keys is None:
        paths = {key: path for key, path in paths.items() if path.exists()}
    if (keys is not None and missing) or not paths:
        raise FileNotFoundError(
            f"grid_cells missing for {', '.join(missing)} under {layout.root / 'grids'}: "
            "materialise grid_cells for these grid levels first (or leave them out)"
        )
    return {key: read_geoparquet(path) for key, path in paths.items()}
