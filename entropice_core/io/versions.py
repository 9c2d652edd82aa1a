"""Content versions of asset values: what tells one version of the data from another.

A dataset's fingerprint hashes its values, not its storage, so the same data in Zarr, Icechunk
or memory has one version; the Dagster assets give it as their data version, so that the UI
marks downstream assets stale only when an input's content changed. Source files are told
apart by name, size and modification time (reading terabytes to hash them is not an option).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the sensors hash files without loading pandas or xarray
    import xarray as xr


def fingerprint(dataset: xr.Dataset) -> str:
    """Hash a dataset's content (names, dims, dtypes, values, coordinates), not its layout.

    The same data in Zarr, Icechunk or memory gives the same hash, so a model names the exact
    data it was trained on whatever the storage.

    Parameters
    ----------
    dataset : xarray.Dataset
        The dataset; its values are read.

    Returns
    -------
    str
        The sha256 hex digest.
    """
    digest = hashlib.sha256()
    for name in sorted(map(str, dataset.variables)):
        variable = dataset[name].variable
        values = np.ascontiguousarray(variable.to_numpy())
        header = f"{name}|{variable.dims}|{values.dtype.str}|{values.shape}"
        digest.update(header.encode())
        if values.dtype.kind in "OUS":
            digest.update("\x1f".join(map(str, values.ravel())).encode())
        else:
            digest.update(values.tobytes())
    return digest.hexdigest()


def files_fingerprint(paths: Sequence[Path]) -> str:
    """Hash files' names, sizes and modification times (12 hex digits).

    It tells which version of a year's files a cached answer came from.

    Parameters
    ----------
    paths : sequence of Path
        The files.

    Returns
    -------
    str
        The fingerprint.
    """
    h = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()
        h.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def content_version(value: Any) -> str | None:
    """Return a short content hash of an asset value held in memory, None for other values.

    Parameters
    ----------
    value : Any
        An in-memory ``xarray.Dataset`` or ``DataTree`` (lazy, Dask-backed ones are not read
        twice: None),
        a (Geo)DataFrame (geometries hashed as WKB), or a source manifest (a JSON-able dict:
        its listing, e.g. the tiles or month files on disk).

    Returns
    -------
    str or None
        16 hex digits, or None where the value's content is not hashed.
    """
    import json

    import pandas as pd
    import xarray as xr

    if isinstance(value, dict):
        try:
            listing = json.dumps(value, sort_keys=True)
        except TypeError:
            return None
        return hashlib.sha256(listing.encode()).hexdigest()[:16]

    if isinstance(value, xr.Dataset):
        return None if value.chunks else fingerprint(value)[:16]
    if isinstance(value, xr.DataTree):  # one hash over every node, by path
        nodes = [(node.path, node.to_dataset(inherit=False)) for node in value.subtree]
        if any(dataset.chunks for _, dataset in nodes):
            return None
        joined = "|".join(f"{path}:{fingerprint(dataset)}" for path, dataset in nodes)
        return hashlib.sha256(joined.encode()).hexdigest()[:16]
    if isinstance(value, pd.DataFrame):
        frame = value.to_wkb() if hasattr(value, "to_wkb") else value
        rows = pd.util.hash_pandas_object(frame, index=True).to_numpy()
        header = "|".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items())
        return hashlib.sha256(header.encode() + rows.tobytes()).hexdigest()[:16]
    return None
