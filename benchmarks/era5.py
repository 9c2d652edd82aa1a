"""ERA5 hourly -> daily -> yearly indices: this pipeline vs plain xarray resample/groupby.

One Arctic year (2019) plus the next October-December (which the thaw season, SON and the
autumn shoulder need) over the Arctic box north of 50 N at 0.25 degree: 161 x 1440 points,
10,968 hours, four variables (t2m, sd, tp, sf), i.e. 10.2 G hourly values (41 GB as float32).

Memory: the box is streamed in bands of ``--band-rows`` latitude rows. Each band's hourly
fields are synthesised (seasonal cycle, diurnal cycle, noise; not timed), then both methods run
on the same band: ~0.7 GB of hourly float32 per 4-row band, plus each method's temporaries.
(The pipeline itself streams month files the same way, one month at a time; reading netCDF
is not part of this comparison.)

- entropice: ``daily_from_hourly`` (reshape to day x 24 h, reduce) and ``yearly_from_daily``.
- xarray: ``resample(valid_time="1D")`` for the daily values, ``resample(time="QS-DEC")`` for
  the seasons, ``where``/``argmax`` for the thaw season and the shoulder windows.

Run: ``.venv/bin/python benchmarks/era5.py [--rows 161] [--lon 1440] [--band-rows 4]``
(development: ``--rows 4 --lon 180``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import xarray as xr
from rich.console import Console
from rich.progress import track
from rich.table import Table

from entropice_core.climate.indices import ClimateIndexConfig
from entropice_core.features.climate import yearly_from_daily
from entropice_core.ingest.era5 import daily_from_hourly

YEAR = 2019
START = np.datetime64(f"{YEAR - 1}-10-01T00", "ns")
STOP = np.datetime64(f"{YEAR + 1}-01-01T00", "ns")
HOUR = np.timedelta64(1, "h")
CONFIG = ClimateIndexConfig()


def synthetic_band(lat: np.ndarray, lon: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Hourly t2m (K), sd (m w.e.), tp and sf (m, hours ending 01..24 UTC) for one band."""
    rng = np.random.default_rng(seed)
    n = int((STOP - START) / HOUR)
    days = np.arange(n, dtype=np.float32) / 24 + 273  # day of year from 1 Oct
    season = np.cos(2 * np.pi * (days - 200) / 365.25).astype(np.float32)
    diurnal = np.cos(2 * np.pi * (np.arange(n) % 24 - 15) / 24).astype(np.float32)
    shape = (n, len(lat), len(lon))
    t = rng.standard_normal(shape, dtype=np.float32) * 3
    t += (263.0 + 20 * season + 3 * diurnal)[:, None, None]
    t -= (0.6 * (lat - 65)).astype(np.float32)[None, :, None]
    tp = np.clip(rng.standard_normal(shape, dtype=np.float32) - 1.2, 0, None) * 3e-4
    sf = np.where(t < 273.15, tp, 0).astype(np.float32)
    sd = np.maximum(np.cumsum(sf - 2e-4 * (t > 273.15), axis=0, dtype=np.float32), 0)
    # stacked as the reader returns them (one array per step type)
    return {"t2m": t, "sd": sd, "accum": np.stack([tp, sf])}


def entropice(band: dict[str, np.ndarray], lat, lon) -> tuple[xr.Dataset, float, float]:
    start = time.perf_counter()
    days = np.arange(START.astype("datetime64[D]"), STOP.astype("datetime64[D]"))
    daily = daily_from_hourly(band["t2m"], band["sd"], band["accum"], days, lat, lon)
    mid = time.perf_counter()
    yearly = yearly_from_daily(daily, None, YEAR, CONFIG, band_rows=len(lat))
    return yearly, mid - start, time.perf_counter() - mid


def plain_xarray(band: dict[str, np.ndarray], lat, lon) -> tuple[xr.Dataset, float, float]:
    """The same indices written the way an xarray user would."""
    start = time.perf_counter()
    hours = START + np.arange(band["t2m"].shape[0]) * HOUR
    dims = ("valid_time", "latitude", "longitude")
    coords = {"latitude": lat, "longitude": lon}
    inst = xr.Dataset(
        {"t2m": (dims, band["t2m"]), "sd": (dims, band["sd"])}, {"valid_time": hours, **coords}
    )
    # accumulations are totals over the hour ending at valid_time: shift back one hour
    accum = xr.Dataset(
        {"tp": (dims, band["accum"][0]), "sf": (dims, band["accum"][1])},
        {"valid_time": hours, **coords},
    )
    t = (inst["t2m"] - 273.15).resample(valid_time="1D")
    daily = xr.Dataset(
        {
            "t2m_mean": t.mean(),
            "t2m_min": t.min(),
            "t2m_max": t.max(),
            "precipitation": (accum["tp"].clip(min=0) * 1000).resample(valid_time="1D").sum(),
            "snowfall": (accum["sf"].clip(min=0) * 1000).resample(valid_time="1D").sum(),
            "snow_water_equivalent": (inst["sd"] * 1000).resample(valid_time="1D").mean(),
        }
    ).rename(valid_time="time")
    mid = time.perf_counter()

    year = daily.sel(time=slice(f"{YEAR - 1}-10-01", f"{YEAR}-09-30"))
    tm = year["t2m_mean"]
    out = {
        "thawing_degree_days": tm.clip(min=0).sum("time"),
        "freezing_degree_days": (-tm).clip(min=0).sum("time"),
        "thaw_days": (tm > 0).sum("time"),
        "snow_cover_days": (year["snow_water_equivalent"] >= CONFIG.snow_threshold_mm).sum("time"),
        "missing_days": year.to_array().isnull().any("variable").sum("time"),
        "t2m_mean": tm.mean("time"),
        "t2m_min": year["t2m_min"].min("time"),
        "t2m_max": year["t2m_max"].max("time"),
        "precipitation": year["precipitation"].sum("time"),
        "snowfall": year["snowfall"].sum("time"),
        "swe_max": year["snow_water_equivalent"].max("time"),
    }
    seasons = daily.sel(time=slice(f"{YEAR - 1}-12-01", f"{YEAR}-11-30")).resample(time="QS-DEC")
    means, sums = seasons.mean(), seasons.sum()
    for i, name in enumerate(("djf", "mam", "jja", "son")):
        out[f"t2m_mean_{name}"] = means["t2m_mean"].isel(time=i)
        out[f"precipitation_{name}"] = sums["precipitation"].isel(time=i)
        out[f"snowfall_{name}"] = sums["snowfall"].isel(time=i)
    # day of year Y for every day of the series (negative before 1 January)
    day = (daily["time"] - np.datetime64(f"{YEAR}-01-01")).dt.days + 1
    thawed = (daily["t2m_mean"] > 0).where(day >= 1, False)
    spring = thawed.where(daily["time"] < np.datetime64(f"{YEAR}-10-01"), False)
    has_thaw = spring.any("time")
    onset = day.isel(time=spring.argmax("time")).where(has_thaw)
    last = day.isel(time=thawed.sizes["time"] - 1 - thawed[::-1].argmax("time"))
    censored = thawed.isel(time=-1)
    out["thaw_onset"] = onset
    out["freeze_up"] = (last + 1).where(has_thaw & ~censored)
    out["thaw_period_days"] = (out["freeze_up"] - onset).where(has_thaw, 0)
    n = CONFIG.shoulder_days
    freeze = out["freeze_up"]
    windows = {
        "spring_shoulder": (day >= onset - n) & (day < onset),
        "autumn_shoulder": ((day >= freeze) & (day < freeze + n)).where(
            freeze + n - 1 <= day.max(), False
        ),
    }
    for name, window in windows.items():
        out[f"t2m_mean_{name}"] = daily["t2m_mean"].where(window).mean("time")
        for var in ("precipitation", "snowfall"):
            out[f"{var}_{name}"] = daily[var].where(window).sum("time", min_count=1)
    result = xr.Dataset({k: v.reset_coords(drop=True) for k, v in out.items()}).compute()
    return result, mid - start, time.perf_counter() - mid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=161, help="latitude rows from 90 N (161)")
    parser.add_argument("--lon", type=int, default=1440, help="longitudes (1440 = 0.25 deg)")
    parser.add_argument("--band-rows", type=int, default=4, help="rows per streamed band")
    args = parser.parse_args()
    lat_all = 90.0 - 0.25 * np.arange(args.rows)
    lon = -180.0 + 360.0 / args.lon * np.arange(args.lon)
    timings = {"entropice": [0.0, 0.0], "xarray": [0.0, 0.0]}
    worst: dict[str, float] = {}
    mismatched: dict[str, int] = {}
    for i in track(range(0, args.rows, args.band_rows), description="bands"):
        lat = lat_all[i : i + args.band_rows]
        band = synthetic_band(lat, lon, seed=i)
        ours, d1, y1 = entropice(band, lat, lon)
        theirs, d2, y2 = plain_xarray(band, lat, lon)
        for key, (d, y) in (("entropice", (d1, y1)), ("xarray", (d2, y2))):
            timings[key][0] += d
            timings[key][1] += y
        for name in theirs.data_vars:
            a = ours[name].isel(year=0).to_numpy().astype(np.float64)
            b = theirs[name].to_numpy().astype(np.float64)
            both = np.isfinite(a) & np.isfinite(b)
            # float32 rounding differs (xarray converts each hour to degC, this pipeline
            # accumulates in float64), so a day within ~1e-5 degC of 0 can flip
            mismatched[name] = mismatched.get(name, 0) + int((np.isfinite(a) != both).sum())
            mismatched[name] += int((np.isfinite(b) != both).sum())
            diff = np.abs(a[both] - b[both]) / np.maximum(np.abs(b[both]), 1.0)
            worst[name] = max(worst.get(name, 0.0), float(diff.max()) if diff.size else 0.0)
        del band
    values = args.rows * args.lon * int((STOP - START) / HOUR) * 4
    table = Table(
        title=f"Arctic year {YEAR} + Oct-Dec, {args.rows} x {args.lon} points, "
        f"{values / 1e9:.2f} G hourly values, bands of {args.band_rows} rows"
    )
    for column in ("method", "hourly->daily s", "daily->yearly s", "total s", "M values/s"):
        table.add_column(column, justify="right")
    table.add_column("vs xarray", justify="right")
    base = sum(timings["xarray"])
    for name, (d, y) in timings.items():
        total = d + y
        table.add_row(
            name, f"{d:.2f}", f"{y:.2f}", f"{total:.2f}", f"{values / total / 1e6:.0f}",
            f"{base / total:.2f}x",
        )  # fmt: skip
    console = Console()
    console.print(table)
    console.print(
        f"largest relative difference over {len(worst)} shared indices: "
        f"{max(worst.values()):.1e} ({max(worst, key=worst.get)}); pixels defined in one "
        f"method only: {sum(mismatched.values())} of {args.rows * args.lon} per index "
        f"({', '.join(f'{k}: {v}' for k, v in mismatched.items() if v) or 'none'})"
    )


if __name__ == "__main__":
    main()
