"""Atomic replacement of files and of directories, with recovery from killed writes.

Files are written beside the target and renamed over it (``os.replace``, atomic on POSIX
within one file system): readers see the previous file or the new one, never a part.

A directory cannot be renamed over a non-empty directory, so directory outputs (a Zarr store,
an experiment folder) and outputs that belong together (``labels_h3_6.zarr`` with its
``labels_h3_6.parquet``) are published as *versions* behind one pointer::

    labels_h3_6.zarr     -> .labels_h3_6.zarr.current/labels_h3_6.zarr     (fixed link)
    labels_h3_6.parquet  -> .labels_h3_6.zarr.current/labels_h3_6.parquet  (fixed link)
    .labels_h3_6.zarr.current -> .labels_h3_6.zarr.v<tag>                  (the pointer)
    .labels_h3_6.zarr.v<tag>/labels_h3_6.zarr/ and labels_h3_6.parquet     (one version)

A write fills a hidden temporary directory, renames it to a new version and replaces the
pointer with a new symbolic link in one ``os.replace``: every public path shows the previous
version or the new one, all members of one version together, never nothing. The previous
version stays on disk until the next write (and any version for
:data:`SUPERSEDED_GRACE_S` after it was replaced), so a reader that resolved the path once
(:func:`resolve_published`) keeps reading a complete version while writes are published;
older versions are deleted. Opening the public path lazily without resolving it (plain
``xr.open_zarr``) follows the pointer on every chunk read, as any path does.

Every write first sweeps what killed writes left: temporaries named with their writer's host
and process id are deleted once that process is gone (on another host: after
:data:`STALE_AGE_S`), temporaries of the previous naming (no process id) after
:data:`LEGACY_AGE_S`, and a backup ``.<name>.<tag>.old`` of the earlier two-rename swap is
restored when the killed swap left no store (on a read too), else deleted. A plain directory
of the earlier layout becomes a version on its first write. Publishing is serialised per
output by a lock file (``.<name>.lock``); writers compute in parallel, the last to publish
wins.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: Temporaries of a writer on another host are deleted when older than this (seconds).
STALE_AGE_S = 7 * 86_400
#: Temporaries without a process id (written by the earlier code) are deleted after this.
LEGACY_AGE_S = 3_600
#: A version replaced less than this long ago (seconds) is kept even beyond the previous one,
#: so a reader that resolved it just before two quick writes can finish.
SUPERSEDED_GRACE_S = 60.0
_HOST = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"


def _writer_tag() -> str:
    """``<host>-<pid>-<random>``: who writes a temporary, so a sweep can tell if it is alive."""
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _process_alive(pid: int, since: float) -> bool:
    """Whether process ``pid`` runs and was started before ``since`` (else it is a reused id)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= since + 1.0
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # exists, owned by someone else
        return True


def _temp_pattern(stem: str, suffix: str) -> re.Pattern[str]:
    """Match the temporaries of ``stem``: ``.<stem>.<host>-<pid>-<tag>.tmp<suffix>``.

    Also those of the earlier code, ``.<stem>.<tag>.tmp<suffix>``, and its ``.old`` backups.
    """
    return re.compile(
        rf"\.{re.escape(stem)}\.(?:(?P<host>.+)-(?P<pid>\d+)-)?(?P<tag>[0-9a-f]{{8}})"
        rf"\.(?P<kind>tmp{re.escape(suffix)}|link|old)"
    )


def _is_abandoned(path: Path, host: str | None, pid: str | None) -> bool:
    try:
        mtime = path.lstat().st_mtime
    except FileNotFoundError:
        return False
    if pid is None:
        return time.time() - mtime > LEGACY_AGE_S
    if host != _HOST:
        return time.time() - mtime > STALE_AGE_S
    return not _process_alive(int(pid), mtime)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def sweep_temporaries(target: str | Path) -> list[Path]:
    """Delete the temporaries that killed writes of ``target`` left beside it.

    A temporary is deleted when the process that wrote it (its name holds host and pid) is
    gone; one from another host, or without a pid, only once it is old (see the module
    docstring). A live writer's temporary is never touched.

    Parameters
    ----------
    target : str or Path
        The file or store whose temporaries to sweep.

    Returns
    -------
    list of Path
        What was deleted.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    # Directories and links are named by the full name, files keep their suffix last.
    patterns = [_temp_pattern(target.name, "")]
    if target.suffix:
        patterns.append(_temp_pattern(target.stem, target.suffix))
    removed = []
    for entry in target.parent.iterdir():
        for pattern in patterns:
            match = pattern.fullmatch(entry.name)
            if match is None or match["kind"] == "old":
                continue
            if _is_abandoned(entry, match["host"], match["pid"]):
                _remove(entry)
                removed.append(entry)
            break
    return removed


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Give a temporary path to write to, replacing ``target`` only if the block succeeds.

    The hidden temporary file lies beside ``target`` (same file system), is named with the
    writer's host and pid and is renamed onto it when the ``with`` block ends without error;
    otherwise it is deleted and ``target`` is left as it was. Temporaries of killed earlier
    writes are swept first (:func:`sweep_temporaries`). The temporary name keeps the
    target's suffix, which GDAL drivers (GeoPackage, GeoTIFF) use to choose the format.

    Parameters
    ----------
    target : str or Path
        File to replace; its parent directory is created if missing.

    Yields
    ------
    Path
        Temporary path to write the new file to.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(target)
    tmp = target.with_name(f".{target.stem}.{_writer_tag()}.tmp{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _pointer(path: Path) -> Path:
    return path.with_name(f".{path.name}.current")


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive lock of ``path``'s publication (a hidden lock file beside it)."""
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_with_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old one)."""
    tmp = link.with_name(f".{link.name}.{_writer_tag()}.link")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _legacy_backups(path: Path) -> list[Path]:
    pattern = _temp_pattern(path.name, "")
    return sorted(
        (
            p
            for p in path.parent.iterdir()
            if (m := pattern.fullmatch(p.name)) and m["kind"] == "old"
        ),
        key=lambda p: p.lstat().st_mtime,
    )


def _recover(path: Path) -> None:
    """Repair what a killed publication left (call with the lock held).

    A backup of the earlier two-rename swap is restored where the swap left no store and
    deleted otherwise; a pointer without its public link (killed before the link was made)
    gets the link.
    """
    backups = _legacy_backups(path)
    if backups and not os.path.lexists(path):
        os.rename(backups.pop(), path)
    for backup in backups:
        _remove(backup)
    pointer = _pointer(path)
    if not os.path.lexists(path) and (pointer / path.name).exists():
        _replace_with_link(path, f"{pointer.name}/{path.name}")


def resolve_published(path: str | Path) -> Path:
    """Resolve a published output to the version it shows now, once.

    A reader that opens the returned path keeps reading one complete version even if a
    writer publishes a new one meanwhile (the previous version stays until the next write).
    Where a killed write left no public path, the half-finished publication is recovered
    (when the directory is writable) or read where it lies.

    Parameters
    ----------
    path : str or Path
        The public path (a file, a store or a folder).

    Returns
    -------
    Path
        The real path of the current version; ``path`` itself if nothing is there.
    """
    path = Path(path)
    if path.exists():
        return path.resolve()
    if not path.parent.is_dir():
        return path
    if os.path.lexists(_pointer(path)) or _legacy_backups(path):
        with contextlib.suppress(OSError), _lock(path):
            _recover(path)
    if path.exists():
        return path.resolve()
    member = _pointer(path) / path.name
    if member.exists():
        return member.resolve()
    backups = _legacy_backups(path)
    return backups[-1] if backups else path


@contextmanager
def atomic_dirs(
    path: str | Path, *companions: str | Path, keep_others: bool = False
) -> Iterator[tuple[Path, ...]]:
    """Give temporary paths for ``path`` and its companions, publishing them together.

    The outputs are written to a hidden temporary directory beside ``path`` and, when the
    ``with`` block ends without error, published as one new version behind one pointer (see
    the module docstring): every public path then shows the new version; before, the
    previous one. A failure publishes nothing and deletes the temporaries.

    Parameters
    ----------
    path : str or Path
        The main output (a store or folder); it names the version and the pointer.
    *companions : str or Path
        Further outputs published with it, in the same folder (a Parquet table).
    keep_others : bool, default False
        ``path`` is a folder: files of the current version that the new one does not write
        (e.g. predictions written by a later step) are carried over as hard links.

    Yields
    ------
    tuple of Path
        Temporary paths of ``path`` and of each companion, in order; the caller creates them.

    Raises
    ------
    ValueError
        If a companion lies in another folder.
    FileNotFoundError
        If the block did not create one of the outputs.
    """
    path = Path(path)
    members = [path, *map(Path, companions)]
    if any(m.parent != path.parent for m in members) or len({m.name for m in members}) < len(
        members
    ):
        raise ValueError(f"outputs published together must lie in one folder: {members}")
    path.parent.mkdir(parents=True, exist_ok=True)
    for member in members:
        sweep_temporaries(member)
    tag = _writer_tag()
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    tmp.mkdir()
    try:
        yield tuple(tmp / m.name for m in members)
        missing = [m.name for m in members if not os.path.lexists(tmp / m.name)]
        if missing:
            raise FileNotFoundError(f"the write of {path} did not create {', '.join(missing)}")
        _publish(path, members, tmp, keep_others)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(path: Path, members: Sequence[Path], tmp: Path, keep_others: bool) -> None:
    pointer = _pointer(path)
    version = path.with_name(f".{path.name}.v{uuid.uuid4().hex[:12]}")
    with _lock(path):
        _recover(path)
        sweep_temporaries(pointer)  # link temporaries are made under the lock: all are dead
        previous = os.readlink(pointer) if pointer.is_symlink() else None
        if keep_others and path.exists():
            _carry_over(path.resolve(), tmp / path.name)
        os.rename(tmp, version)
        _replace_with_link(pointer, version.name)
        for member in members:
            _link_public(member, pointer)
        if previous is not None and pointer.parent.joinpath(previous).is_dir():
            os.utime(pointer.parent / previous)  # its mtime: when it stopped being current
        keep = {version.name, previous}
        cutoff = time.time() - SUPERSEDED_GRACE_S
        for old in path.parent.glob(f".{glob_escape(path.name)}.v*"):
            if old.name in keep or not re.fullmatch(r"v[0-9a-f]{12}", old.suffix[1:]):
                continue
            with contextlib.suppress(FileNotFoundError):
                if old.stat().st_mtime < cutoff:
                    _remove(old)


def glob_escape(name: str) -> str:
    """Escape glob metacharacters in a file name."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _link_public(member: Path, pointer: Path) -> None:
    """Make ``member`` the fixed link through the pointer.

    An earlier plain file or directory is converted; a directory cannot be replaced by a link
    in one rename, readers that resolve through :func:`resolve_published` read the pointer
    meanwhile.
    """
    target = f"{pointer.name}/{member.name}"
    if member.is_symlink() and os.readlink(member) == target:
        return
    if member.is_dir() and not member.is_symlink():
        aside = member.with_name(f".{member.name}.{_writer_tag()}.tmp")
        os.rename(member, aside)
        _replace_with_link(member, target)
        shutil.rmtree(aside, ignore_errors=True)
        return
    _replace_with_link(member, target)


def _carry_over(current: Path, new: Path) -> None:
    """Hard-link files of the current folder that the new one lacks (copy across devices)."""
    if not current.is_dir() or not new.is_dir():
        return
    for source in current.iterdir():
        destination = new / source.name
        if source.is_file() and not source.name.startswith(".") and not destination.exists():
            try:
                os.link(source, destination)
            except OSError:
                shutil.copy2(source, destination)


def published_versions(path: str | Path) -> list[Path]:
    """List the versions of ``path`` on disk (the current one and at most one previous).

    Parameters
    ----------
    path : str or Path
        The public path.

    Returns
    -------
    list of Path
        Version directories, sorted by name.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{glob_escape(path.name)}.v*"))


def resolve_together(path: str | Path, *companions: str | Path) -> tuple[Path, ...]:
    """Resolve an output and its companions to one version (see :func:`atomic_dirs`).

    Resolving each public path on its own could straddle a publication and pair one version's
    store with the next one's table; this reads the pointer once.

    Parameters
    ----------
    path : str or Path
        The main output, as given to :func:`atomic_dirs`.
    *companions : str or Path
        The outputs published with it.

    Returns
    -------
    tuple of Path
        Real paths of ``path`` and each companion, all of one version.
    """
    path = Path(path)
    real = resolve_published(path)
    if real.parent.name.startswith(f".{path.name}.v"):
        return (real, *(real.parent / Path(c).name for c in companions))
    return (real, *(resolve_published(c) for c in companions))
