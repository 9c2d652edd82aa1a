"""HTTP(S) downloads that survive dropped connections: retries, resume, checks, atomic rename.

A file is fetched into a hidden ``.<name>.part`` beside the target. A dropped connection keeps
the part; the next attempt asks for the rest with an HTTP ``Range`` header (and starts over if
the server ignores it). The complete part must have the announced size and pass the caller's
check (e.g. opening it with rasterio) before it is renamed onto the target, so a target path
only ever holds a complete, checked file.

Every source that downloads (ERA5 from the CDS, ArcticDEM tiles, the DARTS release, and the
Earth Engine client to come) follows one pattern: an abstract client (a :class:`SourceClient`
subclass in the source's ``ingest`` module) with a real implementation that downloads, and an
offline one that only uses the files already there (the sample region, or a mirror) and raises
:class:`MissingSourceFiles`, one line naming what is absent and how to get it. Credentials are
constructor arguments of the real client (the Dagster resources fill them from ``dg.EnvVar``);
``entropice_core`` never reads them from the environment.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field
from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)

#: Errors after which a download is tried again (the part is kept and resumed).
TRANSIENT = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


class DownloadConfig(BaseModel):
    """How hard to try."""

    model_config = ConfigDict(frozen=True)

    retries: int = Field(default=5, ge=0, description="Attempts after the first one.")
    backoff_s: float = Field(
        default=2.0, ge=0, description="Wait before retry n is backoff_s * 2**(n-1) seconds."
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Socket timeout per request.")
    chunk_bytes: int = Field(default=1 << 20, ge=1024, description="Bytes read at a time.")
    retry_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Most seconds one file is tried for, from its first attempt: no retry "
        "starts whose wait would end later, so an outage fails after about this long.",
    )


class RetryPolicy(Protocol):
    """What a bounded retry loop reads from its config (DownloadConfig, Era5DownloadConfig)."""

    retries: int
    backoff_s: float
    retry_timeout_s: float


def retry_wait(config: RetryPolicy, attempt: int, elapsed: float) -> float | None:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one.

    Exponential backoff (``backoff_s * 2**(attempt-1)``); None where no retry is left: the
    retries are spent, or the wait would end past ``retry_timeout_s`` from the first attempt
    (``elapsed`` seconds ago), so an outage fails in bounded time rather than retrying for an
    hour. :func:`spent_bound` names which bound it was.
    """
    wait = config.backoff_s * 2 ** (attempt - 1)
    if attempt > config.retries or elapsed + wait > config.retry_timeout_s:
        return None
    return wait


def spent_bound(config: RetryPolicy, attempt: int) -> str:
    """Which bound stopped the retries after ``attempt``, for the error message."""
    if attempt > config.retries:
        return f"{config.retries} retries"
    return f"the {config.retry_timeout_s:g} s retry bound (retry_timeout_s)"


class SourceClient(ABC):
    """Base of every source client.

    ``name`` labels the client in logs and metadata (never a secret) and ``offline`` says
    whether it may contact a server.
    """

    name: ClassVar[str]
    offline: ClassVar[bool]

    def __repr__(self) -> str:
        """Show the class and ``name`` only: constructor arguments may hold credentials."""
        return f"{type(self).__name__}(name={self.name!r})"


class MissingSourceFiles(FileNotFoundError):
    """An offline client lacks files it needs; the message names them and how to get them."""

    def __init__(self, source: str, folder: str | Path, missing: Sequence[object], how: str):
        self.source, self.folder, self.missing = source, Path(folder), list(missing)
        example = f" (e.g. {self.missing[0]})" if self.missing else ""
        super().__init__(
            f"{source}: {len(self.missing)} file(s) absent under {folder}{example} and the "
            f"client is offline; {how}"
        )


class NotOnServer(FileNotFoundError):
    """The server answered 404: the file does not exist there (retrying will not help)."""


def _part_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.part")


def _fetch_once(
    url: str,
    part: Path,
    config: DownloadConfig,
    progress: Progress | None,
    task: TaskID | None,
    headers: Mapping[str, str] | None = None,
) -> int:
    """One request, appending to ``part`` from its current size; returns the file's size."""
    offset = part.stat().st_size if part.exists() else 0
    sent = dict(headers or {}) | ({"Range": f"bytes={offset}-"} if offset else {})
    request = urllib.request.Request(url, headers=sent)
    try:
        response = urllib.request.urlopen(request, timeout=config.timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise NotOnServer(f"{url} does not exist on the server (HTTP 404)") from err
        if err.code == 416:  # the part already holds everything
            return offset
        raise
    with response:
        if response.status == 206:
            total = int(response.headers["Content-Range"].rsplit("/", 1)[1])
        else:  # the server sent the whole file: start over
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else -1
        if progress is not None and task is not None:
            progress.update(task, total=total if total >= 0 else None, completed=offset)
        with open(part, "ab" if offset else "wb") as out:
            while chunk := response.read(config.chunk_bytes):
                out.write(chunk)
                if progress is not None and task is not None:
                    progress.advance(task, len(chunk))
    size = part.stat().st_size
    if total >= 0 and size < total:
        raise ConnectionError(f"{url}: connection closed after {size:,} of {total:,} bytes")
    return total if total >= 0 else size


def download(
    url: str,
    target: str | Path,
    config: DownloadConfig = DownloadConfig(),
    check: Callable[[Path], None] | None = None,
    progress: Progress | None = None,
    headers: Mapping[str, str] | None = None,
) -> Path:
    """Download ``url`` to ``target`` with retries and resume.

    A 404 raises at once; other transient errors are retried ``config.retries`` times with
    exponential backoff, but not past ``config.retry_timeout_s`` from the first attempt,
    keeping what arrived so the next attempt resumes it. Each attempt and failure is logged
    (``logging``, this module's logger) with the URL; request headers never are.

    Parameters
    ----------
    url : str
        HTTP(S) URL of the file.
    target : str or Path
        Where the complete, checked file ends up; its parent directory is created if missing.
    config : DownloadConfig
        Retries, backoff, socket timeout and read size.
    check : callable, optional
        Called with the path of the complete file; raises if the file is unusable (it is then
        deleted, not resumed).
    progress : rich.progress.Progress, optional
        Progress display to add a task for this file to.
    headers : mapping of str to str, optional
        Extra request headers (e.g. ``Authorization``); never part of an error message.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    NotOnServer
        If the server answers 404.
    ConnectionError
        On a client error (HTTP 4xx other than 404 and 429), or when every attempt failed or
        the retry bound is spent (the partial file is kept).
    ValueError
        If the complete file has the wrong size or fails ``check`` (the file is deleted).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(target)
    task = progress.add_task(target.name, total=None) if progress is not None else None
    attempts, started = config.retries + 1, time.monotonic()
    for attempt in range(1, attempts + 1):
        log.info("GET %s -> %s: attempt %d/%d", url, target, attempt, attempts)
        try:
            size = _fetch_once(url, part, config, progress, task, headers)
            break
        except TRANSIENT as err:
            if isinstance(err, urllib.error.HTTPError) and err.code < 500 and err.code != 429:
                raise ConnectionError(f"{url}: HTTP {err.code} {err.reason}") from err
            elapsed = time.monotonic() - started
            wait = retry_wait(config, attempt, elapsed)
            if wait is None:
                raise ConnectionError(
                    f"{url}: failed after {attempt} attempts in {elapsed:.0f} s and "
                    f"{spent_bound(config, attempt)} is spent (last error: {err}); the partial "
                    f"file {part} is kept and the next run resumes it"
                ) from err
            log.warning(
                "GET %s: attempt %d/%d failed after %.0f s (%s); retrying in %.0f s",
                url,
                attempt,
                attempts,
                elapsed,
                err,
                wait,
            )
            time.sleep(wait)
    else:  # pragma: no cover - the loop returns or raises
        raise AssertionError("unreachable")
    if part.stat().st_size != size:
        part.unlink()
        raise ValueError(f"{url}: got {part.stat().st_size:,} bytes, expected {size:,}")
    if check is not None:
        try:
            check(part)
        except Exception as err:
            part.unlink()
            raise ValueError(
                f"{url} downloaded but is unusable: {err}. The file was deleted; download it "
                "again, and if it fails again the copy on the server is damaged"
            ) from err
    os.replace(part, target)
    return target
