"""ERA5 single levels from the Copernicus Climate Data Store: download, read, daily aggregates.

Facts (ECMWF documentation, see docs/climate.md): the new CDS (since September 2024) delivers
netCDF with dims ``valid_time`` (seconds since 1970), ``latitude`` (descending), ``longitude``;
asking for instantaneous and accumulated variables together returns a zip of one file per GRIB
step type, so requests are split by step type and stored unzipped as
``era5/{year}/{month:02d}/data_stream-oper_stepType-{instant,accum}.nc`` (the sample region
writes the same layout). Hourly ``tp``/``sf`` are totals over the hour *ending* at
``valid_time``: the total of UTC day d is the sum of 01..23 UTC of d and 00 UTC of d + 1.

An Arctic year Y runs from 1 October Y - 1 to 30 September Y and is labelled Y.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import time
import zipfile
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from entropice_core.io.atomic import atomic_path
from entropice_core.io.download import MissingSourceFiles, SourceClient, retry_wait, spent_bound

if TYPE_CHECKING:  # heavy libraries are imported where they are used
    import pandas as pd
    import xarray as xr

DATASET = "reanalysis-era5-single-levels"
#: ERA5 single-levels grid spacing in degrees.
GRID_STEP = 0.25
#: The Arctic box north of 50 N as a CDS ``area`` (N, W, S, E).
ARCTIC_AREA: tuple[float, float, float, float] = (90.0, -180.0, 50.0, 180.0)
#: CDS variable names per GRIB step type, and the short names the netCDF files use.
STEP_VARIABLES: dict[str, dict[str, str]] = {
    "instant": {"2m_temperature": "t2m", "snow_depth": "sd"},
    "accum": {"total_precipitation": "tp", "snowfall": "sf"},
}
STEP_TYPES = tuple(STEP_VARIABLES)
#: The oldest Arctic year registered (the architecture's partitions start in 2000).
FIRST_ARCTIC_YEAR = 2000
#: Days after the end of a month until ERA5 (as ERA5T) has published it (ECMWF: about 5 days).
PUBLICATION_LATENCY_DAYS = 5
#: The new CDS (since September 2024).
CDS_URL = "https://cds.climate.copernicus.eu/api"
CREDENTIALS_HELP = (
    f"set CDSAPI_KEY=<your personal access token> (from your profile page on "
    f"cds.climate.copernicus.eu) and optionally CDSAPI_URL={CDS_URL}, or write them as "
    "'url: ...' and 'key: ...' lines to ~/.cdsapirc; then accept the ERA5 licence on the "
    "dataset's download page"
)
#: How to get ERA5 files an offline client lacks.
OFFLINE_HOW = (
    "download them with the CDS client (CdsEra5Client; in Dagster set the cds resource's "
    "client='cds'), copy them from a mirror in the same layout, or run `make demo` for the "
    "sample region"
)


class CdsCredentialsError(RuntimeError):
    """The CDS credentials are missing or were refused."""


# --- Arctic years ---------------------------------------------------------------------------


def arctic_year(date: dt.date | np.datetime64 | np.ndarray) -> int | np.ndarray:
    """Return the Arctic year of a date: October to December count toward the next year.

    Parameters
    ----------
    date : datetime.date, numpy.datetime64 or numpy.ndarray
        One date, or an array of datetime64 values.

    Returns
    -------
    int or numpy.ndarray
        The Arctic year (an int for a ``datetime.date``, else an int64 array).
    """
    if isinstance(date, dt.date):
        return date.year + (date.month >= 10)
    months = np.asarray(date).astype("datetime64[M]").astype(np.int64)
    return (months + 3) // 12 + 1970


def arctic_year_days(year: int) -> np.ndarray:
    """List every UTC day of Arctic year ``year`` (1 Oct year-1 .. 30 Sep year).

    Parameters
    ----------
    year : int
        Arctic year.

    Returns
    -------
    numpy.ndarray
        The days as datetime64[D], in order.
    """
    return np.arange(np.datetime64(f"{year - 1}-10-01"), np.datetime64(f"{year}-10-01"))


def arctic_year_months(year: int) -> list[tuple[int, int]]:
    """List the 12 months of Arctic year ``year``, in order.

    Parameters
    ----------
    year : int
        Arctic year.

    Returns
    -------
    list of tuple of int
        ``(calendar year, month)`` of each month.
    """
    return [(year - 1, m) for m in (10, 11, 12)] + [(year, m) for m in range(1, 10)]


def latest_published_arctic_year(
    now: dt.datetime, latency_days: int = PUBLICATION_LATENCY_DAYS
) -> int:
    """Find the newest Arctic year that has ended and that ERA5 has published by ``now``.

    Year Y is complete once 1 October Y 00 UTC (which closes the precipitation of 30
    September) is out, i.e. ``latency_days`` after 1 October Y.

    Parameters
    ----------
    now : datetime.datetime
        The moment to judge at (naive or aware; compared in its own time zone).
    latency_days : int
        Days after a month's end until ERA5 publishes it.

    Returns
    -------
    int
        The newest published Arctic year.
    """
    year = now.year if (now.month, now.day) >= (10, 1) else now.year - 1
    published = dt.datetime(year, 10, 1, tzinfo=now.tzinfo) + dt.timedelta(days=latency_days)
    return year if now >= published else year - 1


def era5_path(root: str | Path, year: int, month: int, step_type: str) -> Path:
    """Build the path of one month file under ``root``.

    Parameters
    ----------
    root : str or Path
        Folder of the hourly files.
    year : int
        Calendar year.
    month : int
        Calendar month (1-12).
    step_type : str
        GRIB step type, ``instant`` or ``accum``.

    Returns
    -------
    Path
        ``root/{year}/{month:02d}/data_stream-oper_stepType-{step_type}.nc``.
    """
    return Path(root) / f"{year}" / f"{month:02d}" / f"data_stream-oper_stepType-{step_type}.nc"


def arctic_year_files(root: str | Path, year: int) -> list[Path]:
    """List the 24 files (12 months x 2 step types) of Arctic year ``year``.

    Parameters
    ----------
    root : str or Path
        Folder of the hourly files (layout: :func:`era5_path`).
    year : int
        Arctic year.

    Returns
    -------
    list of Path
        The month files (see :func:`era5_path`), month by month.
    """
    return [era5_path(root, y, m, s) for y, m in arctic_year_months(year) for s in STEP_TYPES]


def hourly_manifest(root: str | Path, year: int) -> dict[str, Any]:
    """Return the manifest of Arctic year ``year``'s hourly files (the ``era5_hourly`` value).

    Parameters
    ----------
    root : str or Path
        Folder of the hourly files (layout: :func:`era5_path`).
    year : int
        Arctic year.

    Returns
    -------
    dict
        ``arctic_year`` and ``files``, the month files on disk.
    """
    files = [p for p in arctic_year_files(root, year) if p.exists()]
    return {"arctic_year": year, "files": [str(p) for p in files]}


def missing_hourly_files(root: str | Path, year: int) -> list[Path]:
    """List the month files of Arctic year ``year`` that are absent under ``root``.

    Parameters
    ----------
    root : str or Path
        Folder of the hourly files (layout: :func:`era5_path`).
    year : int
        Arctic year.

    Returns
    -------
    list of Path
        The absent files; empty when the daily aggregates can be computed.
    """
    return [p for p in arctic_year_files(root, year) if not p.exists()]


# --- CDS requests ---------------------------------------------------------------------------


class Era5DownloadConfig(BaseModel):
    """What to download and how to split and retry the requests."""

    model_config = ConfigDict(frozen=True)

    area: tuple[float, float, float, float] = Field(
        default=ARCTIC_AREA, description="CDS area N, W, S, E in degrees (default north of 50N)."
    )
    max_fields: int = Field(
        default=120_000,
        gt=0,
        description="Most fields (variables x days x hours) per request: the classic CDS item "
        "limit.",
    )
    max_values: int = Field(
        default=1_000_000_000,
        gt=0,
        description="Most values (fields x grid points) per request; the new CDS caps the "
        "'cost' of netCDF requests (exact limit undocumented), so months are split into day "
        "ranges above this.",
    )
    retries: int = Field(default=5, ge=0, description="Retries of a failed request.")
    backoff_s: float = Field(
        default=60.0, ge=0, description="Wait before the first retry; doubles on each retry."
    )
    retry_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Most seconds one request is tried for, from its first attempt: no retry "
        "starts whose wait would end later, so a CDS outage fails after about this long "
        "(cdsapi's own retries are off; these are the only ones).",
    )


@dataclass(frozen=True)
class CdsRequest:
    """One CDS retrieve call: ``request`` for ``dataset``, downloaded to ``target``."""

    dataset: str
    request: dict[str, Any]
    target: Path


@dataclass(frozen=True)
class MonthPlan:
    """The requests that together make one month file (several day-range parts if split)."""

    path: Path
    year: int
    month: int
    step_type: str
    parts: tuple[CdsRequest, ...] = field(default=())
    #: Only 1 Oct 00 UTC of the next Arctic year, which closes 30 September's accumulations.
    closing_hour: bool = False

    def is_done(self) -> bool:
        """Tell whether the month file is complete (or, for the closing hour, holds that hour).

        Returns
        -------
        bool
            True if nothing needs downloading.
        """
        if not self.closing_hour:
            return month_is_complete(self.path, self.year, self.month, self.step_type)
        if not self.path.exists():
            return False
        try:
            with open_month(self.path, self.step_type) as ds:
                return bool((ds["valid_time"] == _closing_time(self.year)).any())
        except ValueError:
            return False


def _closing_time(year: int) -> np.datetime64:
    return np.datetime64(f"{year}-10-01T00", "ns")


def cds_area(bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Turn a lon/lat box into a CDS ``area``, widened to whole 0.25 degree steps.

    Parameters
    ----------
    bounds : tuple of float
        ``(min lon, min lat, max lon, max lat)`` in degrees.

    Returns
    -------
    tuple of float
        ``(north, west, south, east)`` in degrees, multiples of :data:`GRID_STEP`.
    """
    minlon, minlat, maxlon, maxlat = bounds
    north, west = math.ceil(maxlat / GRID_STEP), math.floor(minlon / GRID_STEP)
    south, east = math.floor(minlat / GRID_STEP), math.ceil(maxlon / GRID_STEP)
    return (north * GRID_STEP, west * GRID_STEP, south * GRID_STEP, east * GRID_STEP)


def crop_to_area(
    dataset: xr.Dataset, boxes: Sequence[tuple[float, float, float, float]]
) -> xr.Dataset:
    """Keep the grid points that a CDS request for ``boxes`` would return.

    Each box is widened to whole 0.25 degree steps (:func:`cds_area`); rows and columns of
    any box are kept, so the two halves of a box split at 180 degrees select their columns on
    both sides.

    Parameters
    ----------
    dataset : xarray.Dataset
        ERA5 data on ``latitude``/``longitude`` (-180..180).
    boxes : sequence of tuple of float
        ``(min lon, min lat, max lon, max lat)`` in degrees, e.g. an area's parts' bounds.

    Returns
    -------
    xarray.Dataset
        The points inside the boxes.

    Raises
    ------
    ValueError
        If no grid point of ``dataset`` lies in the boxes.
    """
    lat, lon = dataset["latitude"].to_numpy(), dataset["longitude"].to_numpy()
    rows, columns = np.zeros(lat.shape, bool), np.zeros(lon.shape, bool)
    tolerance = GRID_STEP / 100
    for box in boxes:
        north, west, south, east = cds_area(box)
        rows |= (lat >= south - tolerance) & (lat <= north + tolerance)
        columns |= (lon >= west - tolerance) & (lon <= east + tolerance)
    if not rows.any() or not columns.any():
        raise ValueError(
            f"no ERA5 grid point in {[tuple(round(v, 2) for v in b) for b in boxes]}: the "
            f"data covers {lon.min():g}..{lon.max():g} E, {lat.min():g}..{lat.max():g} N; "
            "download the area first (entropice era5 download --aoi ...)"
        )
    return dataset.isel(latitude=rows, longitude=columns)


def grid_points(area: tuple[float, float, float, float]) -> int:
    """Count the 0.25 degree points the CDS returns for ``area`` (both edges included).

    Parameters
    ----------
    area : tuple of float
        CDS area ``(north, west, south, east)`` in degrees.

    Returns
    -------
    int
        Rows times columns of the returned grid.
    """
    north, west, south, east = area
    rows = round((north - south) / GRID_STEP) + 1
    cols = round(((east - west) % 360 or 360) / GRID_STEP) + 1
    return rows * cols


def _day_ranges(n_days: int, parts: int) -> list[list[int]]:
    days = np.arange(1, n_days + 1)
    return [list(map(int, chunk)) for chunk in np.array_split(days, parts)]


def plan_month(
    root: Path, year: int, month: int, step_type: str, config: Era5DownloadConfig
) -> MonthPlan:
    """Plan the requests for one month and step type, split into day ranges within the limits.

    Parameters
    ----------
    root : Path
        Folder of the hourly files.
    year : int
        Calendar year.
    month : int
        Calendar month (1-12).
    step_type : str
        GRIB step type, ``instant`` or ``accum``.
    config : Era5DownloadConfig
        Area and request limits.

    Returns
    -------
    MonthPlan
        The month file and its requests (hidden part files if split).

    Raises
    ------
    ValueError
        If a single day over ``config.area`` exceeds the request limits.
    """
    variables = list(STEP_VARIABLES[step_type])
    n_days = calendar.monthrange(year, month)[1]
    fields_per_day = len(variables) * 24
    values_per_day = fields_per_day * grid_points(config.area)
    days_per_part = min(config.max_fields // fields_per_day, config.max_values // values_per_day)
    if days_per_part < 1:
        raise ValueError(
            f"one day of {variables} over {config.area} ({values_per_day:,} values) exceeds "
            f"the request limits (max_fields={config.max_fields:,}, "
            f"max_values={config.max_values:,}): raise the limits or request a smaller area"
        )
    path = era5_path(root, year, month, step_type)
    ranges = _day_ranges(n_days, math.ceil(n_days / days_per_part))
    parts = tuple(
        CdsRequest(
            dataset=DATASET,
            request={
                "product_type": ["reanalysis"],
                "variable": variables,
                "year": [f"{year}"],
                "month": [f"{month:02d}"],
                "day": [f"{d:02d}" for d in days],
                "time": [f"{h:02d}:00" for h in range(24)],
                "area": list(config.area),
                "data_format": "netcdf",
                "download_format": "unarchived",
            },
            target=path
            if len(ranges) == 1
            else path.with_name(f".{path.stem}.part{i + 1:02d}-of-{len(ranges):02d}.nc"),
        )
        for i, days in enumerate(ranges)
    )
    return MonthPlan(path=path, year=year, month=month, step_type=step_type, parts=parts)


def plan_arctic_year(root: str | Path, year: int, config: Era5DownloadConfig) -> list[MonthPlan]:
    """Plan every month file of Arctic year ``year`` with its requests, plus the closing hour.

    The accumulation of the hour ending 1 October 00 UTC belongs to 30 September; it is
    fetched on its own into next October's file, which the next Arctic year's download sees as
    incomplete and replaces with the whole month.

    Parameters
    ----------
    root : str or Path
        Folder of the hourly files (layout: :func:`era5_path`).
    year : int
        Arctic year.
    config : Era5DownloadConfig
        Area and request limits.

    Returns
    -------
    list of MonthPlan
        The 24 month plans, then the closing-hour plan.
    """
    months = [
        plan_month(Path(root), y, m, s, config)
        for y, m in arctic_year_months(year)
        for s in STEP_TYPES
    ]
    october = plan_month(Path(root), year, 10, "accum", config)
    request = october.parts[0].request | {"day": ["01"], "time": ["00:00"]}
    closing = MonthPlan(
        path=october.path,
        year=year,
        month=10,
        step_type="accum",
        parts=(CdsRequest(DATASET, request, october.path),),
        closing_hour=True,
    )
    return [*months, closing]


# --- download ---------------------------------------------------------------------------------


class CdsApi(Protocol):
    """The one call of ``cdsapi.Client`` used here (tests pass an offline fake)."""

    def retrieve(self, name: str, request: dict[str, Any], target: str) -> Any:
        """Download ``request`` of dataset ``name`` to the file ``target``.

        Parameters
        ----------
        name : str
            CDS dataset name, e.g. :data:`DATASET`.
        request : dict of str to Any
            CDS request (variables, dates, area, formats).
        target : str
            File to write the result to.

        Returns
        -------
        Any
            cdsapi's result object (unused here).
        """
        ...


class CdsCredentials(BaseModel):
    """CDS endpoint and personal access token.

    The key is a ``SecretStr``: its repr, str and model dump show ``**********``, so it never
    reaches a log line or metadata by accident.

    Without ``key``, cdsapi's own lookup applies (``CDSAPI_URL``/``CDSAPI_KEY``, then
    ``~/.cdsapirc``); ``entropice_core`` never reads them itself.
    """

    model_config = ConfigDict(frozen=True)

    url: str | None = Field(default=None, description="CDS API URL; None: CDS_URL or cdsapi's.")
    key: SecretStr | None = Field(default=None, description="Personal access token.")


def cds_credentials(credentials: CdsCredentials = CdsCredentials()) -> tuple[str, str]:
    """Resolve the CDS URL and key: the given key (with its URL or :data:`CDS_URL`), else cdsapi's.

    Errors are one line that says how to set the credentials and never show the key.

    Parameters
    ----------
    credentials : CdsCredentials
        URL and key; without a key, cdsapi's lookup (environment, ``~/.cdsapirc``) applies.

    Returns
    -------
    tuple of str
        ``(url, key)``.

    Raises
    ------
    CdsCredentialsError
        If no key is found or it has the old ``UID:key`` form.
    """
    if credentials.key is not None and credentials.key.get_secret_value():
        url, key = credentials.url or CDS_URL, credentials.key.get_secret_value()
    else:
        from cdsapi.api import get_url_key_verify

        try:
            url, key, _ = get_url_key_verify(credentials.url or None, None, None)
        except Exception:
            raise CdsCredentialsError(f"no CDS credentials found: {CREDENTIALS_HELP}") from None
    if ":" in key:
        raise CdsCredentialsError(
            "the CDS key has the old 'UID:key' form, which the new CDS (since September 2024) "
            f"refuses: {CREDENTIALS_HELP}"
        )
    return url, key


def cds_api(credentials: CdsCredentials = CdsCredentials()) -> CdsApi:
    """Create a ``cdsapi.Client`` for the new CDS with the credentials of :func:`cds_credentials`.

    Parameters
    ----------
    credentials : CdsCredentials
        URL and key (see :func:`cds_credentials`).

    Returns
    -------
    CdsApi
        A quiet ``cdsapi.Client``.
    """
    import cdsapi

    url, key = cds_credentials(credentials)
    # retry_max=1: one try per call. The retries are _retrieve's alone, bounded in time and
    # logged; cdsapi's (500 tries by default, 120 s apart) would multiply them silently.
    return cdsapi.Client(url=url, key=key, quiet=True, progress=False, retry_max=1)


class Era5Client(SourceClient):
    """Brings the hourly files of an Arctic year under a folder (layout: :func:`era5_path`)."""

    @abstractmethod
    def fetch_year(
        self,
        root: str | Path,
        year: int,
        config: Era5DownloadConfig = Era5DownloadConfig(),
        *,
        log: Callable[[str], None] = print,
    ) -> DownloadReport:
        """Make the 24 month files of ``year`` complete under ``root``; report what it did.

        Parameters
        ----------
        root : str or Path
            Folder of the hourly files (layout: :func:`era5_path`).
        year : int
            Arctic year.
        config : Era5DownloadConfig
            Area, request limits and retries.
        log : callable
            Receives one line per request or retry.

        Returns
        -------
        DownloadReport
            Month files downloaded, already complete, and absent.
        """

    def published_years(
        self, root: str | Path, now: dt.datetime, first_year: int = FIRST_ARCTIC_YEAR
    ) -> list[int]:
        """List the Arctic years this client can deliver at ``now``.

        Parameters
        ----------
        root : str or Path
            Folder of the hourly files (layout: :func:`era5_path`).
        now : datetime.datetime
            The moment to judge at.
        first_year : int
            The oldest Arctic year wanted.

        Returns
        -------
        list of int
            From ``first_year`` to the newest year ERA5 has published by ``now``
            (:func:`latest_published_arctic_year`).
        """
        return list(range(first_year, latest_published_arctic_year(now) + 1))


class CdsEra5Client(Era5Client):
    """Downloads from the Copernicus Climate Data Store with cdsapi.

    Resumable, see :func:`download_arctic_year`. ``api`` replaces the cdsapi client (tests).
    """

    name = "cds"
    offline = False

    def __init__(
        self,
        credentials: CdsCredentials = CdsCredentials(),
        *,
        api: CdsApi | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._credentials, self._api, self._sleep = credentials, api, sleep
        self._clock = clock

    def fetch_year(
        self,
        root: str | Path,
        year: int,
        config: Era5DownloadConfig = Era5DownloadConfig(),
        *,
        log: Callable[[str], None] = print,
    ) -> DownloadReport:
        """Download what is absent or incomplete; credentials are checked before any request.

        Parameters
        ----------
        root : str or Path
            Folder of the hourly files (layout: :func:`era5_path`).
        year : int
            Arctic year.
        config : Era5DownloadConfig
            Area, request limits and retries.
        log : callable
            Receives one line per request or retry.

        Returns
        -------
        DownloadReport
            Month files downloaded, already complete, and absent.

        Raises
        ------
        CdsCredentialsError
            If the credentials are missing or refused.
        RuntimeError
            If a request still fails after ``config.retries`` retries.
        """
        if self._api is None:
            self._api = cds_api(self._credentials)
        return download_arctic_year(
            self._api, root, year, config, sleep=self._sleep, log=log, clock=self._clock
        )


class OfflineEra5Client(Era5Client):
    """Uses the files under the folder only (the sample region, or a mirror of the CDS files).

    Absent or incomplete month files raise :class:`MissingSourceFiles`; only the closing hour
    (1 October 00 UTC of the next year, which ends 30 September's precipitation) may be absent
    and is reported as missing. ``how`` is the fix the message names.
    """

    name = "offline"
    offline = True

    def __init__(self, how: str = OFFLINE_HOW) -> None:
        self._how = how

    def published_years(
        self, root: str | Path, now: dt.datetime, first_year: int = FIRST_ARCTIC_YEAR
    ) -> list[int]:
        """List the Arctic years whose 24 month files are all under ``root``.

        Offline the folder is the whole source; years newer than the newest published by
        ``now``, or older than ``first_year``, are left out.

        Parameters
        ----------
        root : str or Path
            Folder of the hourly files (layout: :func:`era5_path`).
        now : datetime.datetime
            The moment to judge at.
        first_year : int
            The oldest Arctic year wanted.

        Returns
        -------
        list of int
            The years present, oldest first.
        """
        folders = [p.name for p in Path(root).glob("[0-9][0-9][0-9][0-9]") if p.is_dir()]
        candidates = {int(y) + shift for y in folders for shift in (0, 1)}
        return [
            year
            for year in sorted(super().published_years(root, now, first_year))
            if year in candidates and all(p.exists() for p in arctic_year_files(root, year))
        ]

    def fetch_year(
        self,
        root: str | Path,
        year: int,
        config: Era5DownloadConfig = Era5DownloadConfig(),
        *,
        log: Callable[[str], None] = print,
    ) -> DownloadReport:
        """Check that the month files of ``year`` are complete under ``root``.

        Parameters
        ----------
        root : str or Path
            Folder of the hourly files (layout: :func:`era5_path`).
        year : int
            Arctic year.
        config : Era5DownloadConfig
            Area, request limits and retries.
        log : callable
            Receives one line per request or retry.

        Returns
        -------
        DownloadReport
            Month files downloaded, already complete, and absent.

        Raises
        ------
        MissingSourceFiles
            If a month file other than the closing hour is absent or incomplete.
        """
        report = DownloadReport()
        for plan in plan_arctic_year(root, year, config):
            (report.skipped if plan.is_done() else report.missing).append(plan.path)
        closing = era5_path(root, year, 10, "accum")
        absent = [p for p in report.missing if p != closing]
        if absent:
            raise MissingSourceFiles(f"ERA5 Arctic year {year}", root, absent, self._how)
        return report


def _is_credentials_error(err: Exception) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("401", "unauthorized", "authentication", "licence", "license"))


def describe_request(request: CdsRequest) -> str:
    """One line naming what a request asks for (the request holds no credential).

    Parameters
    ----------
    request : CdsRequest
        The request.

    Returns
    -------
    str
        Dataset, variables, month, days, hours and area.
    """
    body = request.request
    days, hours = body.get("day", []), body.get("time", [])
    return (
        f"{request.dataset} {','.join(body.get('variable', []))} "
        f"{'/'.join(body.get('year', []))}-{'/'.join(body.get('month', []))} "
        f"days {days[0] if days else '?'}-{days[-1] if days else '?'} "
        f"({len(hours)} hours) area {body.get('area')}"
    )


def _retrieve(
    client: CdsApi,
    request: CdsRequest,
    config: Era5DownloadConfig,
    sleep: Callable[[float], None],
    log: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Download one request to its target atomically, retrying with exponential backoff.

    Each attempt is logged with the request; retries stop after ``config.retries`` or when
    the next one would end past ``config.retry_timeout_s`` from the first attempt.
    """
    step_type = "accum" if request.request["variable"][0] in STEP_VARIABLES["accum"] else "instant"
    attempts = config.retries + 1
    started = clock()
    for attempt in range(1, attempts + 1):
        log(f"{request.target.name}: attempt {attempt}/{attempts}: {describe_request(request)}")
        try:
            with atomic_path(request.target) as tmp:
                client.retrieve(request.dataset, request.request, str(tmp))
                _unzip_in_place(tmp, step_type)
                open_month(tmp, step_type).close()
            return
        except CdsCredentialsError:
            raise
        except Exception as err:
            if _is_credentials_error(err):
                raise CdsCredentialsError(
                    f"the CDS refused the request ({type(err).__name__}); {CREDENTIALS_HELP}"
                ) from None
            elapsed = clock() - started
            wait = retry_wait(config, attempt, elapsed)
            if wait is None:
                raise RuntimeError(
                    f"downloading {request.target} failed {attempt} times in {elapsed:.0f} s "
                    f"and {spent_bound(config, attempt)} are spent; last error: "
                    f"{type(err).__name__}: {err}. The CDS "
                    "may be down or overloaded (https://status.ecmwf.int): run the asset again "
                    "later to resume (complete files are kept)"
                ) from err
            log(
                f"{request.target.name}: attempt {attempt}/{attempts} failed after "
                f"{elapsed:.0f} s ({type(err).__name__}: {err}); retrying in {wait:.0f} s"
            )
            sleep(wait)


def _unzip_in_place(path: Path, step_type: str) -> None:
    """Keep our member of a CDS zip (mixed step types come zipped even if ``unarchived``)."""
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        member = next((n for n in archive.namelist() if f"stepType-{step_type}" in n), None)
        if member is None:
            raise ValueError(f"the CDS zip holds {archive.namelist()}, no {step_type} file")
        data = archive.read(member)
    path.write_bytes(data)


def month_is_complete(path: Path, year: int, month: int, step_type: str) -> bool:
    """Tell whether the file exists, opens, and holds every hour of the month.

    Parameters
    ----------
    path : Path
        Month file.
    year : int
        Calendar year.
    month : int
        Calendar month (1-12).
    step_type : str
        GRIB step type, ``instant`` or ``accum``.

    Returns
    -------
    bool
        True if the file is complete.
    """
    if not path.exists():
        return False
    try:
        with open_month(path, step_type) as ds:
            hours = calendar.monthrange(year, month)[1] * 24
            return ds.sizes["valid_time"] == hours
    except ValueError:
        return False


@dataclass
class DownloadReport:
    """Month files downloaded, already complete, and (offline) absent.

    Absent is only ever the closing hour, see :class:`OfflineEra5Client`.
    """

    downloaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)


def download_arctic_year(
    client: CdsApi,
    root: str | Path,
    year: int,
    config: Era5DownloadConfig = Era5DownloadConfig(),
    *,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> DownloadReport:
    """Download the 24 month files of Arctic year ``year`` under ``root``; resumable.

    Complete files are skipped; a month split into day ranges keeps its finished parts until
    all are there, then they are joined into the month file (written atomically). Use
    :class:`CdsEra5Client` (or :class:`OfflineEra5Client`) rather than calling this directly.

    Parameters
    ----------
    client : CdsApi
        The cdsapi client (or a fake).
    root : str or Path
        Folder of the hourly files (layout: :func:`era5_path`).
    year : int
        Arctic year.
    config : Era5DownloadConfig
        Area, request limits and retries.
    sleep : callable
        Waits between retries (seconds).
    log : callable
        Receives one line per attempt (with the request, never a credential) and per retry.
    clock : callable
        Monotonic seconds, for the retry bound.

    Returns
    -------
    DownloadReport
        Month files downloaded and already complete.

    Raises
    ------
    CdsCredentialsError
        If the CDS refuses the credentials.
    RuntimeError
        If a request still fails after ``config.retries`` retries or
        ``config.retry_timeout_s`` seconds.
    """
    report = DownloadReport()
    for plan in plan_arctic_year(root, year, config):
        if plan.is_done():
            report.skipped.append(plan.path)
            continue
        for part in plan.parts:
            if len(plan.parts) > 1 and part.target.exists():
                continue
            _retrieve(client, part, config, sleep, log, clock)
        if len(plan.parts) > 1:
            _join_parts(plan)
        report.downloaded.append(plan.path)
    return report


def _join_parts(plan: MonthPlan) -> None:
    import xarray as xr

    parts = [open_month(p.target, plan.step_type) for p in plan.parts]
    joined = xr.concat(parts, dim="valid_time").load()
    for dataset in parts:
        dataset.close()
    encoding = {name: {"zlib": True, "complevel": 1} for name in joined.data_vars}
    with atomic_path(plan.path) as tmp:
        joined.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
    for part in plan.parts:
        part.target.unlink()


# --- reading ----------------------------------------------------------------------------------


def open_month(path: str | Path, step_type: str) -> xr.Dataset:
    """Open one month file lazily, checking it is readable and holds its variables.

    Parameters
    ----------
    path : str or Path
        Month file.
    step_type : str
        GRIB step type, ``instant`` or ``accum``; decides the variables required.

    Returns
    -------
    xarray.Dataset
        The file's data, with the time dimension named ``valid_time``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is truncated, corrupt or lacks its variables (the message names the fix).
    """
    import xarray as xr

    path = Path(path)
    fix = "delete it and materialise era5_hourly for its Arctic year again (it resumes)"
    try:
        ds = xr.open_dataset(path, engine="h5netcdf", decode_timedelta=False)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path} is not a readable netCDF file ({err}); {fix}") from err
    if "time" in ds.dims and "valid_time" not in ds.dims:
        ds = ds.rename(time="valid_time")
    missing = [v for v in STEP_VARIABLES[step_type].values() if v not in ds]
    if missing or "valid_time" not in ds.dims:
        ds.close()
        raise ValueError(f"{path} lacks {missing or ['valid_time']}: not an ERA5 file? {fix}")
    return ds


def _normalise(ds: xr.Dataset) -> xr.Dataset:
    """Put longitudes in [-180, 180) ascending (no duplicate 180), latitude descending.

    Only the data variables are kept (``number``/``expver`` dropped).
    """
    ds = ds.drop_vars([v for v in ("number", "expver") if v in ds.variables])
    lon = ((ds["longitude"].to_numpy() + 180.0) % 360.0) - 180.0
    ds = ds.assign_coords(longitude=np.round(lon, 6))
    _, first = np.unique(ds["longitude"].to_numpy(), return_index=True)
    ds = ds.isel(longitude=np.sort(first)).sortby("longitude")
    return ds.sortby("latitude", ascending=False)


def _hours(ds: xr.Dataset, names: Sequence[str], times: np.ndarray, path: Path) -> np.ndarray:
    """Read ``(variable, hour, lat, lon)`` float32 at ``times``; absent hours are NaN."""
    present = ds.sel(valid_time=ds["valid_time"].isin(times))
    try:
        values = np.stack([present[n].to_numpy().astype(np.float32) for n in names])
    except Exception as err:
        raise ValueError(
            f"{path} could not be read ({err}); delete it and materialise era5_hourly again"
        ) from err
    out = np.full((len(names), len(times), *values.shape[2:]), np.nan, np.float32)
    out[:, np.searchsorted(times, present["valid_time"].to_numpy())] = values
    return out


DAILY_VARIABLES = {
    "t2m_mean": ("degC", "daily mean of the 24 hourly 2 m temperatures"),
    "t2m_min": ("degC", "lowest hourly 2 m temperature of the day"),
    "t2m_max": ("degC", "highest hourly 2 m temperature of the day"),
    "precipitation": ("mm", "total precipitation, 00-24 UTC (hours ending 01..24 UTC)"),
    "snowfall": ("mm", "snowfall in mm of water equivalent, 00-24 UTC"),
    "snow_water_equivalent": ("mm", "daily mean ERA5 snow depth (sd), mm of water equivalent"),
}


def daily_from_hourly(
    t2m: np.ndarray,
    sd: np.ndarray,
    accum: np.ndarray,
    days: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
) -> xr.Dataset:
    """Aggregate hourly arrays ``(day * 24, lat, lon)`` in ERA5 units to UTC days.

    A missing hour (NaN) makes that day's value NaN: gaps are not filled. Tiny negative
    accumulations are clipped to 0.

    Parameters
    ----------
    t2m : numpy.ndarray
        2 m temperature (K), hours 00..23 of each day.
    sd : numpy.ndarray
        Snow depth (m of water equivalent), hours 00..23 of each day.
    accum : numpy.ndarray
        ``tp`` and ``sf`` (m) stacked ``(2, day * 24, lat, lon)``, hours *ending* 01..24 UTC.
    days : numpy.ndarray
        The days, datetime64.
    latitude : numpy.ndarray
        Latitudes of the grid rows.
    longitude : numpy.ndarray
        Longitudes of the grid columns.

    Returns
    -------
    xarray.Dataset
        The variables of :data:`DAILY_VARIABLES` (float32, degC or mm) over
        (time, latitude, longitude).
    """
    import xarray as xr

    shape = (len(days), 24, len(latitude), len(longitude))
    t = t2m.reshape(shape)
    tp, sf = np.clip(accum, 0.0, None).reshape(2, *shape).sum(axis=2, dtype=np.float64)
    # float64 accumulators, and unit conversions on the daily values (24 times fewer)
    mean_t = t.mean(axis=1, dtype=np.float64) - 273.15
    mean_sd = sd.reshape(shape).mean(axis=1, dtype=np.float64) * 1000.0
    kelvin = np.float32(273.15)
    dims = ("time", "latitude", "longitude")
    return xr.Dataset(
        {
            "t2m_mean": (dims, mean_t.astype(np.float32)),
            "t2m_min": (dims, t.min(axis=1) - kelvin),
            "t2m_max": (dims, t.max(axis=1) - kelvin),
            "precipitation": (dims, (tp * 1000.0).astype(np.float32)),
            "snowfall": (dims, (sf * 1000.0).astype(np.float32)),
            "snow_water_equivalent": (dims, mean_sd.astype(np.float32)),
        },
        coords={
            "time": np.asarray(days).astype("datetime64[ns]"),
            "latitude": latitude,
            "longitude": longitude,
        },
    )


def _month_daily(
    root: Path, year: int, month: int, grid: xr.Dataset | None
) -> tuple[xr.Dataset, dict[str, int]]:
    """Daily aggregates of one calendar month and its gap counts."""
    n_days = calendar.monthrange(year, month)[1]
    start = np.datetime64(f"{year}-{month:02d}-01T00", "ns")
    days = start.astype("datetime64[D]") + np.arange(n_days)
    hour = np.timedelta64(1, "h")
    path = era5_path(root, year, month, "instant")
    with open_month(path, "instant") as ds:
        ds = _normalise(ds)
        times = start + np.arange(n_days * 24) * hour
        t2m, sd = _hours(ds, ["t2m", "sd"], times, path)
        lat, lon = ds["latitude"].to_numpy(), ds["longitude"].to_numpy()
    # accumulations of day d: hours ending 01..23 UTC of d and 00 UTC of d + 1
    times = start + hour + np.arange(n_days * 24) * hour
    path = era5_path(root, year, month, "accum")
    with open_month(path, "accum") as ds:
        accum = _hours(_normalise(ds), ["tp", "sf"], times, path)
    nxt = np.datetime64(f"{year}-{month:02d}", "M") + np.timedelta64(1, "M")
    next_path = era5_path(root, int(str(nxt)[:4]), int(str(nxt)[5:7]), "accum")
    if next_path.exists():
        with open_month(next_path, "accum") as ds:
            accum[:, -1:] = _hours(_normalise(ds), ["tp", "sf"], times[-1:], next_path)
    daily = daily_from_hourly(t2m, sd, accum, days, lat, lon)
    if grid is not None and not (
        np.array_equal(grid["latitude"], lat) and np.array_equal(grid["longitude"], lon)
    ):
        raise ValueError(f"{path} is on another grid than the months before it")
    gaps = {
        "missing_instant_hours": int(np.isnan(t2m).all(axis=(1, 2)).sum()),
        "missing_accum_hours": int(np.isnan(accum[0]).all(axis=(1, 2)).sum()),
    }
    return daily, gaps


@dataclass
class DailyReport:
    """Gaps found while aggregating: per month, hours absent from the files (not filled)."""

    gaps: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def missing_hours(self) -> int:
        """Hours absent from the files, over all months and both step types."""
        return sum(
            g["missing_instant_hours"] + g["missing_accum_hours"] for g in self.gaps.values()
        )

    def gap_days(self, daily: xr.Dataset) -> list[str]:
        """List the days on which a variable is missing everywhere.

        Parameters
        ----------
        daily : xarray.Dataset
            Daily aggregates (see :func:`daily_from_hourly`).

        Returns
        -------
        list of str
            ``YYYY-MM-DD`` of each day whose ``t2m_mean`` or ``precipitation`` is all NaN.
        """
        bad = np.zeros(daily.sizes["time"], bool)
        for name in ("t2m_mean", "precipitation"):
            bad |= daily[name].isnull().all(("latitude", "longitude")).to_numpy()
        return [str(d)[:10] for d in daily["time"].to_numpy()[bad]]


def daily_months(root: str | Path, year: int) -> Iterator[tuple[xr.Dataset, dict[str, int]]]:
    """Aggregate Arctic year ``year`` to days, month by month (bounded memory).

    Parameters
    ----------
    root : str or Path
        Folder of the hourly files (layout: :func:`era5_path`).
    year : int
        Arctic year.

    Yields
    ------
    tuple of (xarray.Dataset, dict of str to int)
        Each month's daily aggregates and its gap counts.

    Raises
    ------
    FileNotFoundError
        If a month file of the year is absent.
    ValueError
        If a month lies on another grid than the months before it.
    """
    root = Path(root)
    missing = missing_hourly_files(root, year)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} ERA5 files of Arctic year {year} are missing (e.g. {missing[0]}); "
            "materialise era5_hourly for that year first"
        )
    grid: xr.Dataset | None = None
    for y, m in arctic_year_months(year):
        daily, gaps = _month_daily(root, y, m, grid)
        grid = daily
        yield daily, gaps


def write_daily(
    root: str | Path,
    year: int,
    path: str | Path,
    log: Callable[[str], None] = print,
    boxes: Sequence[tuple[float, float, float, float]] | None = None,
) -> DailyReport:
    """Write the daily aggregates of Arctic year ``year`` as one Zarr store, atomically.

    Months are computed and appended one at a time, so memory stays about one month of
    hourly data (Arctic box: ~0.7 GB per variable).

    Parameters
    ----------
    root : str or Path
        Folder of the hourly files (layout: :func:`era5_path`).
    year : int
        Arctic year.
    path : str or Path
        Zarr store to replace (see :func:`~entropice_core.io.zarr.atomic_store`).
    log : callable
        Receives one line per month with its gap counts.
    boxes : sequence of tuple of float, optional
        Keep only the grid points of these lon/lat boxes (:func:`crop_to_area`); default:
        every point of the hourly files.

    Returns
    -------
    DailyReport
        The hours absent per month.
    """
    from entropice_core.io.zarr import atomic_store

    report = DailyReport()
    with atomic_store(path) as tmp:
        for i, (daily, gaps) in enumerate(daily_months(root, year)):
            if boxes is not None:
                daily = crop_to_area(daily, boxes)
            stamp = str(daily["time"].to_numpy()[0])[:7]
            report.gaps[stamp] = gaps
            log(f"era5 daily {stamp}: {gaps}")
            for name, (units, description) in DAILY_VARIABLES.items():
                daily[name].attrs.update(units=units, description=description)
            if i == 0:
                daily.attrs.update(arctic_year=year, source=DATASET, days="UTC days")
                daily.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
            else:
                daily.to_zarr(tmp, append_dim="time", zarr_format=3, consolidated=False)
    return report


def read_daily(path: str | Path) -> xr.Dataset:
    """Open an ``era5_daily`` store lazily, naming the file and the fix on failure.

    Parameters
    ----------
    path : str or Path
        Zarr store written by :func:`write_daily`.

    Returns
    -------
    xarray.Dataset
        The daily aggregates.
    """
    from entropice_core.io.zarr import read_dataset

    return read_dataset(path, "era5_daily for that year")


def daily_summary(daily: xr.Dataset) -> pd.DataFrame:
    """Summarise daily aggregates: monthly domain means of 2 m temperature, precipitation sums.

    Parameters
    ----------
    daily : xarray.Dataset
        Daily aggregates with ``t2m_mean`` (degC) and ``precipitation`` (mm).

    Returns
    -------
    pandas.DataFrame
        Columns ``t2m_degC`` and ``precipitation_mm``, indexed by ``month``.
    """
    domain = daily[["t2m_mean", "precipitation"]].mean(("latitude", "longitude"))
    monthly = domain["t2m_mean"].resample(time="MS").mean().to_pandas().to_frame("t2m_degC")
    monthly["precipitation_mm"] = domain["precipitation"].resample(time="MS").sum().to_pandas()
    return monthly.rename_axis("month")
