"""L2 datasets (xdggs-decodable xarray) as Zarr v3 stores, replaced by a swap of directories.

A new version is written to a temporary store beside the target, then swapped in with two
renames (old -> backup, new -> target) and the backup removed. A failed write leaves the old
store untouched. The swap itself is not atomic for readers: between the two renames no store
exists at the target (a reader then fails to open it), and a process killed between them leaves
the previous version only as ``.<name>.<tag>.old``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy libraries are imported where they are used
    import pandas as pd
    import xarray as xr


@contextmanager
def atomic_store(path: str | Path) -> Iterator[Path]:
    """Give a temporary store path to write to, swapping it in only if the block succeeds.

    For any Zarr store written in several steps (e.g. appended month by month). A failure
    leaves the previous store at ``path`` untouched. The swap is two renames, not atomic for
    readers: there is a short window without a store (see the module docstring).

    Parameters
    ----------
    path : str or Path
        Store directory to replace; its parent directory is created if missing.

    Yields
    ------
    Path
        Temporary store path beside ``path`` to write the new store to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    backup = path.with_name(f".{path.name}.{tag}.old")
    try:
        yield tmp
        if path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)


def write_dataset(dataset: xr.Dataset, path: str | Path) -> Path:
    """Write an L2 dataset as a Zarr v3 store, swapped in only once complete.

    Parameters
    ----------
    dataset : xarray.Dataset
        L2 dataset with a ``cell_ids`` coordinate carrying xdggs attrs.
    path : str or Path
        Store directory to replace (see :func:`atomic_store`).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``dataset`` has no ``cell_ids`` coordinate with a ``grid_name`` attr.
    """
    path = Path(path)
    require_l2(dataset, f"write {path}")
    return write_store(dataset, path)


def require_l2(dataset: xr.Dataset, action: str) -> None:
    """Refuse a dataset that is not L2: without xdggs cell ids nothing downstream can join it.

    Parameters
    ----------
    dataset : xarray.Dataset
        Dataset about to be stored.
    action : str
        What was about to happen, for the message (e.g. ``"write data/x.zarr"``).

    Raises
    ------
    ValueError
        If ``dataset`` has no ``cell_ids`` coordinate with a ``grid_name`` attr.
    """
    if "cell_ids" not in dataset.coords or "grid_name" not in dataset["cell_ids"].attrs:
        raise ValueError(
            f"refusing to {action}: an L2 dataset needs a cell_ids coordinate with xdggs "
            "attrs (grid_name, level, ...); build it with GridSpec.xdggs_attrs"
        )


def write_store(dataset: xr.Dataset, path: str | Path) -> Path:
    """Write any dataset (e.g. a raster of indices) as a Zarr v3 store at ``path`` atomically.

    Parameters
    ----------
    dataset : xarray.Dataset
        The dataset; no L2 checks.
    path : str or Path
        Store directory; replaced if it exists.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    with atomic_store(path) as tmp:
        dataset.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    return path


def read_dataset(
    path: str | Path, writer: str = "the asset that writes it first (`make demo`)"
) -> xr.Dataset:
    """Open a Zarr v3 store lazily (Dask-backed), naming the file and the fix on failure.

    Parameters
    ----------
    path : str or Path
        Store directory.
    writer : str, optional
        What to materialise when the store is missing, for the error message.

    Returns
    -------
    xarray.Dataset
        Dask-backed dataset.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a readable Zarr v3 store.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialise {writer}")
    try:
        return xr.open_zarr(path, consolidated=False, zarr_format=3)
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable Zarr v3 store ({err}); delete it and materialise again"
        ) from err


def dataset_table(dataset: xr.Dataset) -> pd.DataFrame:
    """Flatten an L2 dataset to a table: one row per cell (and year, band, ...).

    Variables without the extra dimensions (e.g. all-years aggregates) repeat on each row.

    Parameters
    ----------
    dataset : xarray.Dataset
        L2 dataset indexed by ``cell_ids``.

    Returns
    -------
    pandas.DataFrame
        One column per dimension (``cell_ids`` renamed ``cell_id``) and per variable.
    """
    return dataset.to_dataframe().reset_index().rename(columns={"cell_ids": "cell_id"})
