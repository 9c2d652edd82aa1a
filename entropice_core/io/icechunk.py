"""L2 datasets in an Icechunk repository: every write is one commit with a snapshot id.

Icechunk gives the history the Zarr directory swap cannot: readers stay on the last committed
snapshot while a write is in progress, a failed write commits nothing, and any earlier version
can be read back by its snapshot id (so a model can name the exact data it was trained on).
Each grid level lives in its own group of one repository.

Growth is bounded three ways. A raster written again with the same layout (variables, shapes,
chunks, coordinates, attributes) writes only the chunks whose bytes changed, and a write that
changed nothing commits nothing (the head snapshot stays the version). Snapshots beyond a
retention are expired and unreachable objects, including the chunks a killed or failed
session wrote, are deleted by :func:`maintain_repository` (a scheduled Dagster job). A second
writer whose commit conflicts with one that landed meanwhile gets
:class:`ConcurrentWriteError` saying what happened and what to do; commits that touched
other arrays or chunks rebase and succeed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import dask.base
import icechunk
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
import zarr.codecs
import zarr.errors
import zarr.storage
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from icechunk.xarray import to_icechunk
from xarray.backends.zarr import encode_zarr_variable

from entropice_core.io.zarr import require_l2

BRANCH = "main"
#: Snapshots of the branch that :func:`maintain_repository` keeps by default (the newest ones).
KEEP_SNAPSHOTS = 3
#: Unreachable objects younger than this are kept by default: they may belong to a session
#: still writing (a Dagster run of a large area takes hours).
ORPHAN_AGE = dt.timedelta(hours=24)
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

    Commits from different groups of one repository rebase onto each other; one that
    conflicts with a commit landed meanwhile raises :class:`ConcurrentWriteError`. The local
    file storage is not safe for concurrent commits from several processes, so callers
    serialise them (the Dagster assets run in a pool of size one).

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
    ConcurrentWriteError
        If another writer committed to the same arrays meanwhile.
    """
    require_l2(dataset, f"commit to {repo_path}/{group}")
    return _commit(dataset, repo_path, group, message)


def commit_raster(
    dataset: xr.Dataset,
    repo_path: str | Path,
    message: str,
    overview_strides: tuple[int, ...] = (),
) -> str:
    """Commit a raster dataset as the root group of an Icechunk repository, replacing it.

    The variables are computed and written chunk by chunk. The pixel-sample overviews at
    ``overview_strides`` (group ``overviews``, ``terrain.overviews``) are taken from each
    block in the task that writes it (no chunk is computed or read twice, and no block waits
    in memory for its samples) and land in the same commit, so a snapshot never pairs a
    raster with another version's overviews. Where the repository already holds groups of the
    same layout, each chunk is compared with the stored one and written only if its bytes
    differ; if none differs nothing is committed and the head's snapshot id is returned.

    Parameters
    ----------
    dataset : xarray.Dataset
        Raster with a CRS (rioxarray).
    repo_path : str or Path
        Local repository, created if missing.
    message : str
        Commit message.
    overview_strides : tuple of int, optional
        Strides of the overviews to store with the raster (each at least 2); empty: none.

    Returns
    -------
    str
        Snapshot id of the new commit (of the head, where nothing changed).

    Raises
    ------
    ValueError
        If the raster has no CRS.
    ConcurrentWriteError
        If another writer committed to the same arrays meanwhile.
    """
    if dataset.rio.crs is None:
        raise ValueError(f"refusing to commit to {repo_path}: the raster has no CRS")
    from entropice_core.terrain import overviews

    session = _repository(repo_path).writable_session(BRANCH)
    groups: dict[str | None, xr.Dataset] = {None: dataset}
    if overview_strides:  # the layout; the values come from the raster's write tasks
        groups[overviews.GROUP] = overviews.overview_pyramid(dataset, overview_strides)
    encodings: dict[str | None, dict[str, dict[str, Any]]] = {
        group: {str(name): {"compressors": RASTER_COMPRESSORS} for name in data.data_vars}
        for group, data in groups.items()
    }
    changed_only = _same_layout(session, groups, encodings)
    if not changed_only:  # metadata and coordinates now; the chunks below
        for group, data in groups.items():
            data.to_zarr(
                session.store,
                group=group,
                mode="w",
                compute=False,
                consolidated=False,
                zarr_format=3,
                encoding=encodings[group],
            )
    _store_chunks(session, dataset, overview_strides, changed_only)
    if not session.has_uncommitted_changes:  # the same raster again: its snapshot stays
        return session.snapshot_id
    return _commit_session(session, repo_path, message)


def _layout_of(group: zarr.Group, data_vars: set[str]) -> dict[str, Any]:
    """Describe what a write of ``group`` fixes besides the data chunks.

    Its attributes, every array's metadata, and the values of the arrays that are not data
    variables (coordinates).
    """
    arrays = dict(group.arrays())
    return {
        "attrs": json.dumps(group.attrs.asdict(), sort_keys=True, default=str),
        "arrays": {
            name: json.dumps(array.metadata.to_dict(), sort_keys=True, default=str)
            for name, array in arrays.items()
        },
        "values": {
            name: np.asarray(array[...]).tobytes()
            for name, array in arrays.items()
            if name not in data_vars
        },
    }


class _ChangedChunks:
    """A ``dask.array.store`` target writing a block only where its stored bytes differ.

    It pickles (its array's store is a fork of the writable session), so it works on
    dask.distributed workers; ``store`` lets Icechunk collect the fork's changes afterwards.
    """

    def __init__(self, array: zarr.Array):
        self.array = array
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    @property
    def store(self) -> Any:
        """The array's Icechunk store (``icechunk.distributed.extract_session`` reads it)."""
        return self.array.store

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        value = np.ascontiguousarray(value, dtype=self.dtype)
        if np.asarray(self.array[key]).tobytes() != value.tobytes():
            self.array[key] = value


def _same_layout(
    session: icechunk.Session,
    groups: Mapping[str | None, xr.Dataset],
    encodings: Mapping[str | None, dict[str, dict[str, Any]]],
) -> bool:
    """Tell whether the stored groups have the layout a full write would give.

    Then only the changed chunks need writing. The layout is written (metadata and
    coordinates only) to a memory store and compared with the stored groups, chunk grids
    included.
    """
    for group, data in groups.items():
        try:
            stored = zarr.open_group(session.store, path=group or "", mode="r", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            return False
        expected = zarr.storage.MemoryStore()
        data.to_zarr(
            expected,
            mode="w",
            compute=False,
            consolidated=False,
            zarr_format=3,
            encoding=encodings[group],
        )
        names = set(map(str, data.data_vars))
        expected_group = zarr.open_group(expected, mode="r", zarr_format=3)
        if _layout_of(stored, names) != _layout_of(expected_group, names):
            return False
        for name in names:
            array = stored[name]
            encoded = encode_zarr_variable(data[name].variable, name=name).data
            if not isinstance(array, zarr.Array):
                return False
            if isinstance(encoded, da.Array) and encoded.chunks != da.core.normalize_chunks(
                array.chunks, array.shape
            ):
                return False  # blocks that straddle stored chunks: rewrite
    return True


def _store_chunks(
    session: icechunk.Session,
    raster: xr.Dataset,
    overview_strides: tuple[int, ...],
    changed_only: bool,
) -> None:
    """Compute and write every chunk of the raster and its overviews into ``session``.

    One dask pass: a task per block position of the raster writes every variable's block
    there and takes its overview samples (:func:`_write_blocks`); a task per overview chunk
    puts the samples of the blocks it spans together and writes them
    (:func:`_overview_writes`). Where a dask.distributed client is current
    (``Client.as_current``) the tasks run on the workers and write into forks of the session,
    handed back and merged in a tree of tasks (Icechunk's cooperative writes). Otherwise
    dask's threads write into the session itself. With ``changed_only`` a chunk whose stored
    bytes are the same is not written.
    """
    on_cluster = _current_client() is not None
    target = session.fork() if on_cluster else session
    forks: list[Delayed] = []
    for names, blocks in _chunk_grids(target, raster).items():
        written = _write_blockwise(target, blocks, list(names), changed_only, overview_strides)
        forks.extend(written.to_delayed().ravel())
        for stride in overview_strides:
            forks.extend(
                _overview_writes(target, written, blocks[0].chunks, names, stride, changed_only)
            )
    while len(forks) > 1:
        forks = [
            dask.delayed(_merge_forks)(*forks[i : i + MERGE_EVERY])
            for i in range(0, len(forks), MERGE_EVERY)
        ]
    if not forks:
        return
    (merged,) = dask.compute(forks[0], scheduler=None if on_cluster else "threads")
    if on_cluster:
        session.merge(merged)


#: Fork sessions merged per task of the merge tree.
MERGE_EVERY = 8


def _chunk_grids(
    target: icechunk.Session, data: xr.Dataset
) -> dict[tuple[str, ...], list[da.Array]]:
    """Group the encoded variables of the root group by chunk grid, as dask arrays.

    Returns
    -------
    dict
        Variable names (sorted) to their arrays, one entry per chunk grid; the variables of
        a raster usually share one (the derivatives: 13 bands of each tile).
    """
    grids: dict[tuple[Any, ...], dict[str, da.Array]] = {}
    for name in sorted(map(str, data.data_vars)):
        encoded = encode_zarr_variable(data[name].variable, name=name).data
        if not isinstance(encoded, da.Array):
            chunks = zarr.open_array(target.store, path=name, mode="r").chunks
            encoded = da.from_array(np.asarray(encoded), chunks=chunks)
        grids.setdefault((encoded.shape, encoded.chunks), {})[name] = encoded
    return {tuple(members): list(members.values()) for members in grids.values()}


def _write_blockwise(
    fork: icechunk.Session,
    blocks: list[da.Array],
    paths: list[str],
    changed_only: bool,
    strides: tuple[int, ...],
) -> da.Array:
    """Write the arrays of one chunk grid with one task per block position (lazily).

    ``icechunk.dask.store_dask`` writes each variable's blocks as tasks of their own, which a
    tile's block waits for one by one. Here each task writes every variable's block of one
    position into its copy of ``fork`` and hands the fork back with the block's samples at
    ``strides`` (:func:`_write_blocks`).

    Returns
    -------
    dask.array.Array
        Object array, one element per block position: (fork, samples by stride).
    """
    return da.map_blocks(
        _write_blocks,
        *blocks,
        fork=fork,
        paths=paths,
        changed_only=changed_only,
        strides=strides,
        dtype=object,
        chunks=tuple((1,) * len(c) for c in blocks[0].chunks),
        meta=np.empty((0,) * blocks[0].ndim, dtype=object),
    )


def _write_blocks(
    *blocks: np.ndarray,
    fork: icechunk.Session,
    paths: list[str],
    changed_only: bool,
    strides: tuple[int, ...],
    block_info: dict | None = None,
) -> np.ndarray:
    """Write one block position of several arrays into this task's copy of ``fork``.

    The blocks' overview samples are taken here, while the blocks are in memory (stacked,
    one array per stride).
    """
    from entropice_core.terrain.overviews import block_sample

    assert block_info is not None
    location = block_info[0]["array-location"]
    region = tuple(slice(start, stop) for start, stop in location)
    _write_region(fork, paths, blocks, region, changed_only)
    origin = tuple(start for start, _ in location[-2:])
    samples = {s: np.stack([block_sample(b, origin, s) for b in blocks]) for s in strides}
    out = np.empty((1,) * len(region), dtype=object)
    out.flat[0] = (fork, samples)
    return out


def _overview_writes(
    fork: icechunk.Session,
    written: da.Array,
    chunks: tuple[tuple[int, ...], ...],
    names: tuple[str, ...],
    stride: int,
    changed_only: bool,
) -> list[Delayed]:
    """Write the overview at ``stride`` from the samples the raster's write tasks took.

    One task per overview chunk, depending on the samples of just the raster blocks it
    spans (with 1024-pixel blocks, 3 or 4 per axis: ``overviews.chunk_edge``), so each
    block's samples are released once the chunks they feed are written. A dask rechunk of
    the samples would do the same with about 13 tasks per block and stride.

    Parameters
    ----------
    fork : icechunk.Session
        The session (or fork) the tasks write into.
    written : dask.array.Array
        The raster's write tasks (:func:`_write_blockwise`), one per block position.
    chunks : tuple of tuple of int
        The raster's chunk grid (y, x).
    names : tuple of str
        The raster variables, in the order of the samples.
    stride : int
        The overview's stride.
    changed_only : bool
        Write a chunk only where its stored bytes differ.

    Returns
    -------
    list of Delayed
        One per overview chunk, each computing to the fork it wrote into.
    """
    from entropice_core.terrain.overviews import GROUP, sample_chunks

    paths = [f"{GROUP}/{name}_s{stride}" for name in names]
    stored = zarr.open_array(fork.store, path=paths[0], mode="r")
    token = tokenize(written.name, stride, paths, changed_only)
    samples, writes = f"samples-s{stride}-{token}", f"overview-s{stride}-{token}"
    graph: dict[Any, Any] = {
        (samples, *position): (_samples_at, (written.name, *position), stride)
        for position in np.ndindex(*written.numblocks)
    }
    spans = [
        _overview_spans(sample_chunks(blocks, stride), size, edge)
        for blocks, size, edge in zip(chunks, stored.shape, stored.chunks, strict=True)
    ]
    for i, (rows, y_in, y_out) in enumerate(spans[0]):
        for j, (cols, x_in, x_out) in enumerate(spans[1]):
            pieces = [[(samples, r, c) for c in cols] for r in rows]
            graph[(writes, i, j)] = (
                _write_overview_chunk,
                pieces,
                fork,
                paths,
                (y_in, x_in),
                (y_out, x_out),
                changed_only,
            )
    layers = HighLevelGraph.from_collections(writes, graph, dependencies=[written])  # type: ignore[list-item]
    return [Delayed(key, layers, layer=writes) for key in graph if key[0] == writes]


def _overview_spans(
    counts: tuple[int, ...], size: int, edge: int
) -> list[tuple[list[int], slice, slice]]:
    """Map each overview chunk along one axis to the raster blocks whose samples it holds.

    ``counts`` are the samples per raster block, ``size`` and ``edge`` the overview's length
    and chunk length. Per chunk: the blocks (those with samples), the chunk's slice of their
    samples put together, and its slice of the overview.
    """
    starts = np.cumsum((0, *counts))
    spans = []
    for first in range(0, size, edge):
        last = min(first + edge, size)
        blocks = [
            i for i, n in enumerate(counts) if n and starts[i] < last and starts[i + 1] > first
        ]
        offset = int(starts[blocks[0]])
        spans.append((blocks, slice(first - offset, last - offset), slice(first, last)))
    return spans


def _samples_at(part: np.ndarray, stride: int) -> np.ndarray:
    """Return the samples at ``stride`` in one block of :func:`_write_blockwise`."""
    return part.flat[0][1][stride]


def _write_overview_chunk(
    pieces: list[list[np.ndarray]],
    fork: icechunk.Session,
    paths: list[str],
    window: tuple[slice, slice],
    region: tuple[slice, slice],
    changed_only: bool,
) -> icechunk.Session:
    """Put one overview chunk together from its blocks' samples and write every variable's."""
    _write_region(fork, paths, np.block(pieces)[(slice(None), *window)], region, changed_only)
    return fork


def _write_region(
    fork: icechunk.Session,
    paths: list[str],
    values: Any,
    region: tuple[slice, ...],
    changed_only: bool,
) -> None:
    """Write ``values[i]`` to ``region`` of the array at ``paths[i]`` in ``fork``."""
    for path, block in zip(paths, values, strict=True):
        array = zarr.open_array(fork.store, path=path, mode="r+", zarr_format=3)
        target = _ChangedChunks(array) if changed_only else array
        target[region] = block


def _merge_forks(*parts: Any) -> Any:
    """Merge the forks handed back by write tasks or earlier merges.

    On threads every task wrote into the session itself: nothing to merge.
    """
    from icechunk.distributed import merge_sessions

    forks = [p.flat[0][0] if isinstance(p, np.ndarray) else p for p in parts]
    if not isinstance(forks[0], icechunk.ForkSession):
        return forks[0]
    return merge_sessions(*forks)


def _current_client() -> Any | None:
    """Return the dask.distributed client that dask computes on here and now, if any."""
    from distributed import Client

    owner = getattr(dask.base.get_scheduler(), "__self__", None)
    return owner if isinstance(owner, Client) else None


class ConcurrentWriteError(RuntimeError):
    """Another writer committed changes to the same arrays while this write was running."""


def _commit_session(session: icechunk.Session, repo_path: str | Path, message: str) -> str:
    """Commit, rebasing onto commits that touched other arrays or chunks (they succeed)."""
    try:
        return session.commit(message, rebase_with=icechunk.ConflictDetector())
    except icechunk.RebaseFailedError as err:
        raise ConcurrentWriteError(
            _conflict_message(repo_path, message, err.snapshot, err.conflicts)
        ) from err
    except icechunk.ConflictError as err:
        raise ConcurrentWriteError(
            _conflict_message(repo_path, message, str(err.actual_parent), [])
        ) from err


def _conflict_message(repo_path: str | Path, message: str, snapshot: str, conflicts: list) -> str:
    try:
        info = _repository(repo_path).lookup_snapshot(snapshot)
        other = f"snapshot {snapshot} ({info.message!r}, {info.written_at:%Y-%m-%d %H:%M:%S} UTC)"
    except Exception:  # the message must not fail on the lookup
        other = f"snapshot {snapshot}"
    paths = sorted({str(c.path) for c in conflicts})
    what = "the branch moved"
    if conflicts:
        more = f" and {len(paths) - 5} more paths" if len(paths) > 5 else ""
        what = f"{len(conflicts)} conflicting changes to {', '.join(paths[:5])}{more}"
    return (
        f"{message!r} was not committed to {repo_path}: another writer committed {other} to "
        f"the same arrays while this write was running ({what}). The repository holds the "
        "other write, unchanged and complete. If that write had the inputs you want, there "
        "is nothing to do; otherwise run this one again once it has finished. Writers of one "
        "repository should run one at a time (the Dagster assets that write it share a pool)."
    )


def _commit(dataset: xr.Dataset, repo_path: str | Path, group: str | None, message: str) -> str:
    session = _repository(repo_path).writable_session(BRANCH)
    to_icechunk(dataset, session, group=group, mode="w")
    return _commit_session(session, repo_path, message)


@dataclass(frozen=True)
class Maintenance:
    """What :func:`maintain_repository` did to one repository."""

    path: Path
    snapshots_expired: int
    snapshots_kept: int
    chunks_deleted: int
    objects_deleted: int
    bytes_before: int
    bytes_after: int


def repository_bytes(repo_path: str | Path) -> int:
    """Count the bytes a local repository takes on disk (every object, reachable or not).

    Parameters
    ----------
    repo_path : str or Path
        Local repository.

    Returns
    -------
    int
        Sum of the file sizes under it.
    """
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(repo_path)
        for name in names
    )


def maintain_repository(
    repo_path: str | Path,
    keep_snapshots: int = KEEP_SNAPSHOTS,
    orphan_age: dt.timedelta = ORPHAN_AGE,
    now: dt.datetime | None = None,
) -> Maintenance:
    """Expire old snapshots and delete what no kept snapshot needs.

    The newest ``keep_snapshots`` snapshots of the branch stay readable by their ids; older
    ones are expired. Garbage collection then deletes every object no kept snapshot
    references and older than ``orphan_age``: the chunks of expired snapshots and those a
    killed or failed session wrote but never committed. Objects younger than ``orphan_age``
    are kept because a session still writing may own them.

    Parameters
    ----------
    repo_path : str or Path
        Local repository.
    keep_snapshots : int, default KEEP_SNAPSHOTS
        Snapshots of the branch to keep (at least 1: the head).
    orphan_age : datetime.timedelta, default ORPHAN_AGE
        Unreferenced objects younger than this are kept; make it longer than the longest
        write.
    now : datetime.datetime, optional
        The present (UTC), for tests.

    Returns
    -------
    Maintenance
        Counts and the repository's size before and after.

    Raises
    ------
    FileNotFoundError
        If the repository does not exist.
    ValueError
        If ``keep_snapshots`` is below 1.
    """
    path = Path(repo_path)
    if keep_snapshots < 1:
        raise ValueError(f"keep_snapshots must be at least 1 (the head), got {keep_snapshots}")
    if not path.exists():
        raise FileNotFoundError(f"Icechunk repository {path} does not exist: nothing to maintain")
    now = now or dt.datetime.now(dt.UTC)
    before = repository_bytes(path)
    repo = _repository(path)
    ancestry = list(repo.ancestry(branch=BRANCH))  # newest first
    expired: set[str] = set()
    if len(ancestry) > keep_snapshots:
        expired = repo.expire_snapshots(ancestry[keep_snapshots - 1].written_at)
    summary = repo.garbage_collect(now - orphan_age)
    return Maintenance(
        path=path,
        snapshots_expired=len(expired),
        snapshots_kept=len(list(repo.ancestry(branch=BRANCH))),
        chunks_deleted=summary.chunks_deleted,
        objects_deleted=summary.chunks_deleted
        + summary.manifests_deleted
        + summary.snapshots_deleted
        + summary.attributes_deleted
        + summary.transaction_logs_deleted,
        bytes_before=before,
        bytes_after=repository_bytes(path),
    )


def read_dataset_version(
    repo_path: str | Path,
    group: str | None,
    snapshot_id: str | None = None,
    *,
    dask: bool = True,
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
    dask : bool, default True
        Dask arrays of the stored chunks; False: lazily indexed arrays, nothing cached, for
        readers that take whole windows into memory: zarr then fetches and decodes the
        window's chunks concurrently, at half the time and 60 % of the CPU of one dask task
        per chunk (a band of the sample region's derivatives: 0.7 s against 1.6 s).

    Returns
    -------
    xarray.Dataset
        The dataset, Dask-backed or lazily indexed.

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
        if dask:
            return xr.open_zarr(session.store, group=group, consolidated=False, zarr_format=3)
        return xr.open_dataset(
            cast(Any, session.store),  # a zarr store; xarray's annotation names paths only
            engine="zarr",
            group=group,
            consolidated=False,
            zarr_format=3,
            chunks=None,
            cache=False,
        )
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
