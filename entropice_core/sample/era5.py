"""ERA5-like hourly single-level fields drawn from the latent world, in the new CDS layout.

One NetCDF file per month and step type, as the new CDS (since September 2024) delivers a
request for instantaneous and accumulated variables together once its zip is unpacked::

    era5/{year}/{month:02d}/data_stream-oper_stepType-instant.nc   t2m (K), sd (m w.e.)
    era5/{year}/{month:02d}/data_stream-oper_stepType-accum.nc     tp (m), sf (m w.e.)

Dimensions ``valid_time`` (int64 seconds since 1970-01-01), ``latitude`` (descending) and
``longitude`` on the 0.25 degree grid; scalar ``number`` and per-time ``expver`` coordinates;
accumulations are totals over the hour ending at ``valid_time``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage
from scipy.signal import lfilter

from entropice_core.ingest.era5 import arctic_year
from entropice_core.io.atomic import atomic_path
from entropice_core.sample.world import LatentWorld, to_polar

#: ERA5 single-levels grid spacing in degrees.
GRID_STEP = 0.25
#: Arctic years covered (Arctic year Y runs 1 Oct Y-1 to 30 Sep Y), matching the DARTS years.
ARCTIC_YEARS = (2018, 2023)
#: The CDS splits a request into one file per GRIB step type.
STEP_TYPES = ("instant", "accum")
#: Random stream of the climate.
ERA5_STREAM = 3
#: Expected annual precipitation (m) over land: 250-350 mm/yr is typical of the region.
ANNUAL_PRECIP = 0.3
#: Degree-day melt factor in m w.e. per degree C per hour (3.5 mm per degree-day).
MELT_FACTOR = 0.0035 / 24.0

_VARIABLES = {
    "t2m": {"paramId": 167, "shortName": "2t", "name": "2 metre temperature", "units": "K",
            "stepType": "instant", "dataType": "an"},
    "sd": {"paramId": 141, "shortName": "sd", "name": "Snow depth",
           "units": "m of water equivalent", "stepType": "instant", "dataType": "an"},
    "tp": {"paramId": 228, "shortName": "tp", "name": "Total precipitation", "units": "m",
           "stepType": "accum", "dataType": "fc"},
    "sf": {"paramId": 144, "shortName": "sf", "name": "Snowfall",
           "units": "m of water equivalent", "stepType": "accum", "dataType": "fc"},
}  # fmt: skip
#: Mantissa bits kept per variable: about GRIB's 16-bit packing precision, and the zeroed bits
#: let zlib shrink the files several times (as ``numcodecs.BitRound`` does).
_KEEP_BITS = {"t2m": 14, "sd": 12, "tp": 12, "sf": 12}


@dataclass(frozen=True, eq=False)
class Era5Hourly:
    """Hourly fields on the ERA5 grid; arrays are ``(valid_time, latitude, longitude)``.

    Attributes
    ----------
    valid_time : numpy.ndarray
        Hours (``datetime64[s]``).
    latitude, longitude : numpy.ndarray
        Grid axes (degrees; latitude descending).
    t2m : numpy.ndarray
        2 m temperature (K).
    sd : numpy.ndarray
        Snow depth (m of water equivalent).
    tp, sf : numpy.ndarray
        Total precipitation (m) and snowfall (m of water equivalent) per hour.
    """

    valid_time: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    t2m: np.ndarray
    sd: np.ndarray
    tp: np.ndarray
    sf: np.ndarray


def era5_axes(bbox: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Lay out the 0.25 degree ERA5 points covering ``bbox`` plus one grid step on every side.

    The points are those an ``area`` request for that box would return.

    Parameters
    ----------
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` in degrees.

    Returns
    -------
    lat, lon : numpy.ndarray
        Latitudes (descending) and longitudes (ascending) in degrees.
    """
    minlon, minlat, maxlon, maxlat = bbox
    lat0 = np.floor(minlat / GRID_STEP) * GRID_STEP - GRID_STEP
    lat1 = np.ceil(maxlat / GRID_STEP) * GRID_STEP + GRID_STEP
    lon0 = np.floor(minlon / GRID_STEP) * GRID_STEP - GRID_STEP
    lon1 = np.ceil(maxlon / GRID_STEP) * GRID_STEP + GRID_STEP
    lat = np.round(np.arange(lat1, lat0 - GRID_STEP / 2, -GRID_STEP), 6)
    lon = np.round(np.arange(lon0, lon1 + GRID_STEP / 2, GRID_STEP), 6)
    return lat, lon


def hours(arctic_years: tuple[int, int] = ARCTIC_YEARS) -> np.ndarray:
    """List every hour from 1 Oct before the first Arctic year to 30 Sep 23:00 of the last.

    Parameters
    ----------
    arctic_years : tuple of int, optional
        First and last Arctic year (inclusive).

    Returns
    -------
    numpy.ndarray
        Hourly ``datetime64[s]`` values.
    """
    start = np.datetime64(f"{arctic_years[0] - 1}-10-01T00", "s")
    stop = np.datetime64(f"{arctic_years[1]}-10-01T00", "s")
    return np.arange(start, stop, np.timedelta64(1, "h"))


def cell_terrain(
    world: LatentWorld, lat: np.ndarray, lon: np.ndarray, samples: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Average the latent terrain over each 0.25 degree ERA5 cell.

    ERA5 sees terrain through its own smooth orography and land-sea mask; averaging the latent
    world over ``samples`` x ``samples`` points per cell gives the same kind of field.

    Parameters
    ----------
    world : LatentWorld
        The latent world.
    lat, lon : numpy.ndarray
        ERA5 grid axes (degrees), from :func:`era5_axes`.
    samples : int, default 8
        Sample points per cell along each axis.

    Returns
    -------
    height, land : numpy.ndarray
        ``(lat, lon)`` mean elevation (m, sea counted as 0) and land fraction.
    """
    offsets = (np.arange(samples) + 0.5) / samples * GRID_STEP - GRID_STEP / 2
    sub_lat = (lat[:, None] + offsets[None, :]).ravel()
    sub_lon = (lon[:, None] + offsets[None, :]).ravel()
    lon2, lat2 = np.meshgrid(sub_lon, sub_lat)
    x, y = to_polar(lon2, lat2)
    grid = world.grid
    coords = np.stack([(grid.top - y) / grid.res - 0.5, (x - grid.left) / grid.res - 0.5])
    land = 1.0 - ndimage.map_coordinates(world.sea.astype(np.float32), coords, order=0)
    height = ndimage.map_coordinates(world.elevation, coords, order=1) * land
    shape = (len(lat), samples, len(lon), samples)
    return height.reshape(shape).mean(axis=(1, 3)), land.reshape(shape).mean(axis=(1, 3))


def _ar1(rng: np.random.Generator, n: int, e_folding_hours: float, count: int) -> np.ndarray:
    """``count`` unit-variance AR(1) series of ``n`` hours, shape ``(n, count)``."""
    phi = np.exp(-1.0 / e_folding_hours)
    burn = int(5 * e_folding_hours)
    noise = rng.standard_normal((n + burn, count))
    series = lfilter([np.sqrt(1.0 - phi**2)], [1.0, -phi], noise, axis=0)[burn:]
    return series.astype(np.float32)


def _bitround(values: np.ndarray, keepbits: int) -> np.ndarray:
    """Round float32 ``values`` to ``keepbits`` mantissa bits (round to nearest, ties to even)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    drop = 23 - keepbits
    half = np.uint32((1 << (drop - 1)) - 1) + ((bits >> np.uint32(drop)) & np.uint32(1))
    return ((bits + half) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)).view(np.float32)


def _column(values: np.ndarray) -> np.ndarray:
    """Shape a per-hour series as float32 ``(time, 1, 1)`` for broadcasting over cells."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def simulate_era5(world: LatentWorld, arctic_years: tuple[int, int] = ARCTIC_YEARS) -> Era5Hourly:
    """Simulate hourly t2m, sd, tp and sf over the sample box for ``arctic_years``.

    Temperature: the two-harmonic seasonal cycle of Inuvik's 1981-2010 normals, about 1 K
    colder (January about -28 C, July about +14 C), a diurnal cycle that is large in summer
    and vanishes in the polar night, a lapse rate that turns into an inversion in winter,
    cooler summers over the sea, spatially coherent synoptic anomalies (AR(1), about 2.5
    days), and per-year summer and winter anomalies so some summers are clearly warmer.
    Precipitation comes from a storm process with an August maximum and orographic
    enhancement, scaled to ``ANNUAL_PRECIP``; it falls as snow below about 0 C. Snow depth
    accumulates snowfall and melts with a degree-day model.

    Parameters
    ----------
    world : LatentWorld
        The latent world (its seed, box and terrain).
    arctic_years : tuple of int, optional
        First and last Arctic year (inclusive).

    Returns
    -------
    Era5Hourly
        Fields on the grid of :func:`era5_axes`, rounded to about GRIB's packing precision.
    """
    rng = np.random.default_rng([ERA5_STREAM, world.seed])
    lat, lon = era5_axes(world.bbox)
    height, land = cell_terrain(world, lat, lon)
    time = hours(arctic_years)
    n, shape = len(time), (len(time), len(lat), len(lon))
    days = (time - np.datetime64("2000-01-01T00", "s")) / np.timedelta64(1, "D")
    omega = 2 * np.pi / 365.2425
    season = np.cos(omega * (days - 202.0))  # +1 around 21 July
    summer = np.clip(season, 0.0, None) ** 1.5
    winter = np.clip(-season, 0.0, None) ** 1.5

    # Per-year anomalies: summers keyed by calendar year, winters by Arctic year, so both are
    # continuous where their seasonal weight is zero.
    first = arctic_years[0] - 1
    summer_anom = rng.normal(0.0, 1.3, arctic_years[1] - first + 1)
    winter_anom = rng.normal(0.0, 2.5, arctic_years[1] - first + 1)
    calendar_year = time.astype("datetime64[Y]").astype(np.int64) + 1970
    base = (
        -8.0
        + 21.5 * season
        + 1.9 * np.cos(2 * omega * (days - 12.4))
        + summer * summer_anom[calendar_year - first]
        + winter * winter_anom[arctic_year(time) - first]
        + 0.06 * (days / 365.2425 - 20.0)  # warming trend, K per year
    )

    elev_km = (height / 1000.0).astype(np.float32)
    sea = (1.0 - land).astype(np.float32)
    east = ((lon - lon.mean()) / np.ptp(lon)).astype(np.float32)
    north = ((lat - lat.mean()) / np.ptp(lat)).astype(np.float32)[:, None]
    lapse = 1.0 - 3.75 * (season + 1.0)  # K/km: -6.5 in summer, +1 (inversions) in winter
    synoptic = _ar1(rng, n, 60.0, 3) * (4.5 - 2.0 * season)[:, None].astype(np.float32)

    t_c = 0.3 * rng.standard_normal(shape, dtype=np.float32)
    t_c += _column(base)
    t_c += (-0.8 * (lat - 67.8)).astype(np.float32)[None, :, None]
    t_c += _column(lapse) * elev_km
    t_c += _column(-7.0 * summer) * sea + _column(3.0 * winter) * sea
    t_c += _column(synoptic[:, 0])
    t_c += _column(1.2 * synoptic[:, 1]) * east
    t_c += _column(1.2 * synoptic[:, 2]) * north
    solar = np.clip(np.cos(omega * (days - 172.0)), 0.0, None)
    utc_hour = (days % 1.0) * 24.0
    local_phase = 2 * np.pi * (utc_hour[:, None] + lon[None, :] / 15.0 - 15.0) / 24.0
    diurnal = (0.5 + 3.5 * solar)[:, None] * np.cos(local_phase)  # (time, lon)
    t_c += diurnal.astype(np.float32)[:, None, :] * (0.3 + 0.7 * land).astype(np.float32)

    storms = _ar1(rng, n, 12.0, 2)
    wetness = 0.5 * rng.standard_normal(shape, dtype=np.float32)
    wetness += _column(storms[:, 0]) + _column(0.6 * storms[:, 1]) * east - 1.0
    intensity = np.clip(wetness, 0.0, None) ** 1.5
    intensity *= _column(1.0 + 0.6 * np.cos(omega * (days - 220.0)))
    intensity *= 1.0 + 0.6 * elev_km
    n_years = arctic_years[1] - arctic_years[0] + 1
    land_mean_annual = (intensity.sum(axis=0, dtype=np.float64) * land).sum() / land.sum()
    tp = intensity * np.float32(ANNUAL_PRECIP * n_years / land_mean_annual)
    sf = tp * np.clip((1.0 - t_c) / 2.0, 0.0, 1.0)

    # Snow store S(t) = max(0, S(t-1) + snowfall - melt): a Lindley recursion, solved without
    # a time loop as the cumulative sum minus its running minimum (clipped at 0).
    change = sf - np.float32(MELT_FACTOR) * np.clip(t_c, 0.0, None) - np.float32(5e-7)
    store = np.cumsum(change, axis=0, dtype=np.float64)
    sd = (store - np.minimum(np.minimum.accumulate(store, axis=0), 0.0)) * (land >= 0.5)

    return Era5Hourly(
        valid_time=time,
        latitude=lat,
        longitude=lon,
        t2m=_bitround(t_c + np.float32(273.15), _KEEP_BITS["t2m"]),
        sd=_bitround(sd, _KEEP_BITS["sd"]),
        tp=_bitround(tp, _KEEP_BITS["tp"]),
        sf=_bitround(sf, _KEEP_BITS["sf"]),
    )


def daily_mean_temperature(hourly: Era5Hourly) -> tuple[np.ndarray, np.ndarray]:
    """Average t2m over each UTC day.

    Parameters
    ----------
    hourly : Era5Hourly
        Hourly fields starting at 00 UTC; a trailing partial day is dropped.

    Returns
    -------
    tmean : numpy.ndarray
        ``(day, lat, lon)`` daily means in degrees C.
    days : numpy.ndarray
        ``(day,)`` ``datetime64[D]`` dates.
    """
    n_days = len(hourly.valid_time) // 24
    t = hourly.t2m[: n_days * 24].reshape(n_days, 24, *hourly.t2m.shape[1:])
    days = hourly.valid_time[: n_days * 24 : 24].astype("datetime64[D]")
    return t.mean(axis=1, dtype=np.float64) - 273.15, days


def thawing_degree_days(hourly: Era5Hourly) -> tuple[np.ndarray, np.ndarray]:
    """Sum thawing degree days (degree C days above 0 from daily means) per Arctic year.

    October thaw days count toward the next Arctic year, as the project's climate features
    define it.

    Parameters
    ----------
    hourly : Era5Hourly
        Hourly fields.

    Returns
    -------
    years : numpy.ndarray
        The Arctic years present.
    tdd : numpy.ndarray
        ``(year, lat, lon)`` thawing degree days.
    """
    tmean, days = daily_mean_temperature(hourly)
    years = arctic_year(days)
    labels = np.unique(years)
    tdd = np.stack([np.clip(tmean[years == y], 0.0, None).sum(axis=0) for y in labels])
    return labels, tdd


def month_dataset(hourly: Era5Hourly, year: int, month: int, step_type: str) -> xr.Dataset:
    """Lay out one month of one step type as the new CDS netCDF converter writes it.

    Parameters
    ----------
    hourly : Era5Hourly
        Hourly fields.
    year, month : int
        Calendar month.
    step_type : {"instant", "accum"}
        ``instant`` holds t2m and sd, ``accum`` tp and sf.

    Returns
    -------
    xarray.Dataset
        The month's variables with CDS-style coords (``valid_time`` in seconds since 1970,
        ``number``, ``expver``) and GRIB attrs.
    """
    start = np.datetime64(f"{year}-{month:02d}", "M")
    hours_in = (hourly.valid_time >= start) & (hourly.valid_time < start + np.timedelta64(1, "M"))
    times = hourly.valid_time[hours_in]
    seconds = (times - np.datetime64("1970-01-01T00", "s")).astype(np.int64)
    coords = {
        "number": xr.Variable(
            (),
            np.int64(0),
            {"long_name": "ensemble member numerical id", "units": "1",
             "standard_name": "realization"},
        ),
        "valid_time": xr.Variable(
            "valid_time",
            seconds,
            {"long_name": "time", "standard_name": "time",
             "units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian"},
        ),
        "latitude": xr.Variable(
            "latitude",
            hourly.latitude,
            {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude",
             "stored_direction": "decreasing"},
        ),
        "longitude": xr.Variable(
            "longitude",
            hourly.longitude,
            {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"},
        ),
        "expver": xr.Variable(
            "valid_time", np.full(len(times), "0001"), {"long_name": "Experiment version"}
        ),
    }  # fmt: skip
    dims = ("valid_time", "latitude", "longitude")
    data = {}
    for name, meta in _VARIABLES.items():
        if meta["stepType"] != step_type:
            continue
        attrs = {f"GRIB_{key}": value for key, value in meta.items()}
        attrs |= {
            "GRIB_typeOfLevel": "surface",
            "GRIB_gridType": "regular_ll",
            "GRIB_stepUnits": 1,
            "long_name": meta["name"],
            "units": meta["units"],
            "standard_name": "unknown",
        }
        data[name] = xr.Variable(dims, getattr(hourly, name)[hours_in], attrs)
    return xr.Dataset(
        data,
        coords=coords,
        attrs={
            "Conventions": "CF-1.7",
            "institution": "synthetic: Entropice sample region",
            "history": "Written by entropice_core.sample in the layout of the new CDS "
            "GRIB-to-netCDF converter; not ECMWF data.",
        },
    )


def write_month(dataset: xr.Dataset, path: Path) -> Path:
    """Write a month file atomically (netCDF4 via h5netcdf, zlib level 1 with shuffle).

    Parameters
    ----------
    dataset : xarray.Dataset
        A month from :func:`month_dataset`.
    path : Path
        Target ``.nc`` file.

    Returns
    -------
    Path
        ``path``.
    """
    shape = tuple(dataset.sizes[d] for d in ("valid_time", "latitude", "longitude"))
    encoding = {
        name: {"zlib": True, "complevel": 1, "shuffle": True, "chunksizes": shape,
               "_FillValue": np.float32(np.nan)}
        for name in dataset.data_vars
    }  # fmt: skip
    encoding |= {name: {"_FillValue": None} for name in ("valid_time", "latitude", "longitude")}
    with atomic_path(path) as tmp:
        dataset.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
    return path
