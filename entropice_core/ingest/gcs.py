"""Google Cloud Storage over its JSON API: list a bucket's objects and download them.

Plain HTTPS (``urllib``), no Google client library: ``GET {endpoint}/storage/v1/b/{bucket}/o
?prefix=...`` lists (pages joined through ``nextPageToken``) and ``GET .../o/{name}?alt=media``
downloads, through the project's resumable :func:`entropice_core.io.download.download`
(retries, resume, atomic part file, size check). Requester-pays buckets bill ``user_project``
(sent as ``userProject`` on every request). The OAuth token goes in an ``Authorization: Bearer``
header only: never in a URL, a log line, an error message or ``repr``.

A token comes either as a string (e.g. ``gcloud auth print-access-token``) or from a service
account's JSON key through google-auth (installed with the ``earthengine`` extra; imported
lazily), refreshed when it expires. The endpoint is configurable so tests can use a loopback
server.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from rich.progress import Progress

from entropice_core.io.download import TRANSIENT, DownloadConfig, download

log = logging.getLogger(__name__)

#: The public GCS endpoint.
DEFAULT_ENDPOINT = "https://storage.googleapis.com"
#: OAuth scope of read-only object access.
READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"


@dataclass(frozen=True)
class GcsObject:
    """One object of a listing: its name (path in the bucket) and size in bytes."""

    name: str
    size: int


def service_account_token(
    key_file: str | Path | None = None, key_data: str | None = None
) -> Callable[[], str]:
    """Return a function giving a valid read-only access token of a service account.

    google-auth is imported here (the ``earthengine`` extra installs it); the token is
    refreshed whenever it has expired.

    Parameters
    ----------
    key_file : str or Path, optional
        Path of the service account's JSON key.
    key_data : str, optional
        The key's JSON text instead of a file.

    Returns
    -------
    callable
        No arguments; returns the current access token.

    Raises
    ------
    ImportError
        If google-auth is not installed (the message names the ``earthengine`` extra).
    ValueError
        If neither ``key_file`` nor ``key_data`` is given.
    """
    try:
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account
    except ImportError as err:
        raise ImportError(
            "GCS access with a service-account key needs google-auth: install the "
            "'earthengine' extra (uv sync --extra earthengine, or pip install "
            "'entropice[earthengine]'), or pass an access token instead"
        ) from err
    if key_file:
        creds = service_account.Credentials.from_service_account_file(
            str(key_file), scopes=[READ_ONLY_SCOPE]
        )
    elif key_data:
        creds = service_account.Credentials.from_service_account_info(
            json.loads(key_data), scopes=[READ_ONLY_SCOPE]
        )
    else:
        raise ValueError("service_account_token needs key_file or key_data")

    def token() -> str:
        if not creds.valid:
            creds.refresh(Request())
        return str(creds.token)

    return token


class GcsBucket:
    """Lists and downloads the objects of one bucket through the GCS JSON API.

    Parameters
    ----------
    bucket : str
        The bucket's name (no ``gs://``).
    user_project : str, optional
        Project billed for requester-pays buckets (sent as ``userProject``).
    token : str or callable, optional
        OAuth access token, or a function returning a valid one
        (:func:`service_account_token`); None sends no ``Authorization`` header.
    endpoint : str, optional
        The API's root URL.
    config : DownloadConfig, optional
        Retries, backoff and timeouts (also of the listing requests).
    """

    def __init__(
        self,
        bucket: str,
        *,
        user_project: str | None = None,
        token: str | Callable[[], str] | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        config: DownloadConfig = DownloadConfig(),
    ) -> None:
        self.bucket = bucket
        self.user_project = user_project
        self._token = token
        self.endpoint = endpoint.rstrip("/")
        self.config = config

    def __repr__(self) -> str:
        """Show the bucket and endpoint, never the token."""
        return f"GcsBucket(bucket={self.bucket!r}, endpoint={self.endpoint!r})"

    def _headers(self) -> dict[str, str]:
        token = self._token() if callable(self._token) else self._token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _url(self, path: str, **params: str) -> str:
        if self.user_project:
            params["userProject"] = self.user_project
        query = urlencode(params)
        return f"{self.endpoint}/storage/v1/b/{quote(self.bucket, safe='')}/o{path}" + (
            f"?{query}" if query else ""
        )

    def object_url(self, name: str) -> str:
        """Return the download URL of an object (``alt=media``).

        Parameters
        ----------
        name : str
            The object's name.

        Returns
        -------
        str
            The URL (with ``userProject`` where set; never the token).
        """
        return self._url("/" + quote(name, safe=""), alt="media")

    def _get_json(self, url: str) -> dict[str, Any]:
        for attempt in range(self.config.retries + 1):
            request = urllib.request.Request(url, headers=self._headers())
            try:
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    return json.loads(response.read())
            except TRANSIENT as err:
                if isinstance(err, urllib.error.HTTPError) and err.code < 500 and err.code != 429:
                    raise ConnectionError(
                        f"GCS listing of gs://{self.bucket} failed: HTTP {err.code} "
                        f"{err.reason} ({_hint(err.code)})"
                    ) from err
                if attempt == self.config.retries:
                    raise ConnectionError(
                        f"GCS listing of gs://{self.bucket} failed after {attempt + 1} "
                        f"attempts ({err})"
                    ) from err
                time.sleep(self.config.backoff_s * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def list(self, prefix: str) -> list[GcsObject]:
        """Return every object whose name starts with ``prefix``, following all pages.

        Parameters
        ----------
        prefix : str
            Name prefix, e.g. ``"2022/8N/"``.

        Returns
        -------
        list of GcsObject
            Names and sizes, in the server's (lexicographic) order.

        Raises
        ------
        ConnectionError
            On an HTTP client error (401/403: token or billing project) or when every
            attempt failed.
        """
        found: list[GcsObject] = []
        page: str | None = None
        while True:
            params = {"prefix": prefix, "fields": "items(name,size),nextPageToken"}
            if page:
                params["pageToken"] = page
            answer = self._get_json(self._url("", **params))
            found += [GcsObject(i["name"], int(i["size"])) for i in answer.get("items", [])]
            page = answer.get("nextPageToken")
            if not page:
                return found

    def read_range(self, name: str, start: int, length: int) -> bytes:
        """Return ``length`` bytes of an object from ``start`` (one HTTP Range request).

        Parameters
        ----------
        name : str
            The object's name.
        start, length : int
            Byte offset and count.

        Returns
        -------
        bytes
            The bytes (fewer at the end of the object).

        Raises
        ------
        ConnectionError
            If the request fails.
        """
        headers = self._headers() | {"Range": f"bytes={start}-{start + length - 1}"}
        request = urllib.request.Request(self.object_url(name), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                if response.status != 206 and start:  # not reading a whole file to skip
                    raise ConnectionError(f"gs://{self.bucket}/{name}: Range ignored")
                return response.read(length)
        except TRANSIENT as err:
            raise ConnectionError(f"range request to gs://{self.bucket}/{name} failed") from err

    def download(
        self,
        obj: GcsObject,
        target: str | Path,
        check: Callable[[Path], None] | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download one object to ``target`` (resumable, size-checked against the listing).

        Parameters
        ----------
        obj : GcsObject
            The object, as listed.
        target : str or Path
            Where the complete file ends up.
        check : callable, optional
            Extra check of the complete file (raises if unusable).
        progress : rich.progress.Progress, optional
            Progress display.

        Returns
        -------
        Path
            ``target``.
        """

        def checked(path: Path) -> None:
            size = path.stat().st_size
            if size != obj.size:
                raise ValueError(f"{size:,} bytes, the listing says {obj.size:,}")
            if check is not None:
                check(path)

        return download(
            self.object_url(obj.name),
            target,
            self.config,
            checked,
            progress,
            headers=self._headers(),
        )


def _hint(code: int) -> str:
    if code == 400:
        return "a requester-pays bucket needs a billing project (userProject)"
    if code in (401, 403):
        return "check the token and that the billing project may be charged"
    return "client error"
