"""L2 datasets in an Icechunk repository: every write is one commit with a snapshot id.

Icechunk gives the history the Zarr directory swap cannot: readers stay on the last committed
snapshot while a write is in progress, a failed write commits nothing, and any earlier version
can be read back by its snapshot id (so a model can name the exact data it was trained on).
Each grid level lives in its own group of one repository.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import dask
import icechunk
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr.codecs
from icechunk.xarray import to_icechunk

from entropice_core.io.zarr import require_l2

BRANCH = "main"
#: Codec of the raster chunks: LZ4 after byte shuffling compresses float32 terrain nearly as
#: well as Zarr's default Zstd (ratio 1.72 against 1.81 on the sample DEM's derivatives) and
#: encodes 4x, decodes 2x faster; every grid level reads the rasters back.
RASTER_COMPRESSORS = (zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
# Icechunk warns on every local repository that local storage is unsafe for concurrent commits;
# commits are serialised by the callers (see commit_dataset), so only errors are shown.
icechunk.set_logs_filter("error")


def _repository(path: str | Path) -> icechunk.Repository:
    return icechunk.Repository.open_or_create(icechunk.local_filesystem_storage(str(path)))


def commit_dataset(
    dataset: xr.Dataset, repo_path: str | Path, group: str | None, message: str
) -> str:
    """Commit an L2 dataset to one group of an Icechunk repository, replacing the group.

    Commits from different groups of one repository rebase onto each other; the local file
    storage is not safe for concurrent commits from several processes, so callers serialise
    them (the Dagster assets run in a pool of size one).

    Parameters
    ----------
    dataset : xarray.Dataset
        L2 dataset with a ``cell_ids`` coordinate carrying xdggs attrs.
    repo_path : str or Path
        Local repository, created if missing.
    group : str or None
        Group to write (one per grid level); None for the root group.
    message : str
        Commit message.

    Returns
    -------
    str
        Snapshot id of the new commit.

    Raises
    ------
    ValueError
        If ``dataset`` has no ``cell_ids`` coordinate with a ``grid_name`` attr.
    """
    require_l2(dataset, f"commit to {repo_path}/{group}")
    return _commit(dataset, repo_path, group, message)


def commit_raster(
    dataset: xr.Dataset,
    repo_path: str | Path,
    message: str,
    derived: Mapping[str, Callable[[xr.Dataset], xr.Dataset]] | None = None,
) -> str:
    """Commit a raster dataset as the root group of an Icechunk repository, replacing it.

    Dask-backed variables are computed and written chunk by chunk. Each ``derived`` group
    (e.g. overviews) is built from the same chunks in the same pass (no chunk is computed
    twice or read back) and lands in the same commit, so a snapshot never pairs a raster
    with another version's derived groups.

    Parameters
    ----------
    dataset : xarray.Dataset
        Raster with a CRS (rioxarray).
    repo_path : str or Path
        Local repository, created if missing.
    message : str
        Commit message.
    derived : mapping of str to callable, optional
        Group name to a function building that group's dataset from the raster (lazily).

    Returns
    -------
    str
        Snapshot id of the new commit.

    Raises
    ------
    ValueError
        If the raster has no CRS.
    """
    if dataset.rio.crs is None:
        raise ValueError(f"refusing to commit to {repo_path}: the raster has no CRS")
    session = _repository(repo_path).writable_session(BRANCH)
    # One graph for the raster and its derived groups, so each chunk is computed once and
    # feeds both its own write and the derived groups; on threads, because writable
    # sessions do not pickle.
    groups = {None: dataset} | {group: build(dataset) for group, build in (derived or {}).items()}
    writes = [
        data.to_zarr(
            session.store,
            group=group,
            mode="w",
            compute=False,
            consolidated=False,
            zarr_format=3,
            encoding={name: {"compressors": RASTER_COMPRESSORS} for name in data.data_vars},
        )
        for group, data in groups.items()
    ]
    with dask.config.set(scheduler="threads"):
        dask.compute(*writes)
    return session.commit(message, rebase_with=icechunk.ConflictDetector())


def _commit(dataset: xr.Dataset, repo_path: str | Path, group: str | None, message: str) -> str:
    session = _repository(repo_path).writable_session(BRANCH)
    to_icechunk(dataset, session, group=group, mode="w")
    return session.commit(message, rebase_with=icechunk.ConflictDetector())


def read_dataset_version(
    repo_path: str | Path, group: str | None, snapshot_id: str | None = None
) -> xr.Dataset:
    """Open one group of an Icechunk repository lazily, at the branch head or a snapshot.

    Parameters
    ----------
    repo_path : str or Path
        Local repository.
    group : str or None
        Group to open; None for the root group.
    snapshot_id : str, optional
        Snapshot to read; the head of the ``main`` branch when None.

    Returns
    -------
    xarray.Dataset
        Dask-backed dataset.

    Raises
    ------
    FileNotFoundError
        If the repository, or the group at that version, does not exist.
    """
    path = Path(repo_path)
    if not path.exists():
        raise FileNotFoundError(
            f"Icechunk repository {path} does not exist: materialise the asset that writes it"
        )
    repo = _repository(path)
    session = (
        repo.readonly_session(snapshot_id=snapshot_id)
        if snapshot_id
        else repo.readonly_session(branch=BRANCH)
    )
    try:
        return xr.open_zarr(session.store, group=group, consolidated=False, zarr_format=3)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{path} has no group {group!r} at {snapshot_id or BRANCH}: materialise that "
            "partition first"
        ) from err


def branch_snapshot(repo_path: str | Path, branch: str = BRANCH) -> str:
    """Look up the snapshot id at the head of ``branch``: what a read of the branch sees now.

    Parameters
    ----------
    repo_path : str or Path
        Local repository.
    branch : str, default "main"
        Branch name.

    Returns
    -------
    str
        Snapshot id.

    Raises
    ------
    FileNotFoundError
        If the repository does not exist.
    """
    path = Path(repo_path)
    if not path.exists():
        raise FileNotFoundError(
            f"Icechunk repository {path} does not exist: materialise the asset that writes it"
        )
    return _repository(path).lookup_branch(branch)
