"""Climate indices per Arctic year from daily ERA5 aggregates (definitions in docs/climate.md).

Arctic year Y = 1 October Y-1 .. 30 September Y. Windows:

- **Arctic-year window** (1 Oct Y-1 .. 30 Sep Y): thawing / freezing degree days (daily mean
  2 m temperature, base 0 degC, degC day), thaw days, snow-cover days, annual means and sums.
- **Thaw season of summer Y**: *thaw onset* is the first day from 1 January Y to 30 September
  Y with a daily mean above 0 degC, so an October-December warm spell at the start of the Arctic
  year never counts as onset. The season's last thaw day is searched up to 31 December Y, in the
  next Arctic year's days where they exist; *freeze-up* is the day after it and *thaw period*
  = freeze-up - onset days. If the series ends while still thawed, freeze-up and the period are
  NaN (censored); a year without a thaw day has no onset and a thaw period of 0.
- **Seasons**: DJF (Dec Y-1 .. Feb Y), MAM, JJA and SON (Sep .. Nov Y, needs the next Arctic
  year's October and November). **Shoulder seasons**: the 30 days before thaw onset (spring)
  and the 30 days from freeze-up (autumn), per pixel.

Gaps are not filled: sums and means cover the days present, ``missing_days`` counts the rest;
a window with no day at all (or that runs past the data) is NaN.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from entropice_core.ingest.era5 import arctic_year_days

SEASONS: dict[str, tuple[str, str]] = {
    "djf": ("{prev}-12-01", "{year}-03-01"),
    "mam": ("{year}-03-01", "{year}-06-01"),
    "jja": ("{year}-06-01", "{year}-09-01"),
    "son": ("{year}-09-01", "{year}-12-01"),
}
#: Daily variables summed over a window; the others are averaged.
SUMMED = ("precipitation", "snowfall")


class ClimateIndexConfig(BaseModel):
    """Project choices in the indices (see docs/climate.md)."""

    model_config = ConfigDict(frozen=True)

    snow_threshold_mm: float = Field(
        default=5.0,
        gt=0,
        description="A snow-cover day has a daily mean snow water equivalent at or above this "
        "(mm w.e.; about 2 cm of settled snow).",
    )
    shoulder_days: int = Field(
        default=30, gt=0, description="Length of the spring and autumn shoulder windows (days)."
    )


def degree_days(tmean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum thawing and freezing degree days over the days (axis 0).

    Missing days (NaN) are skipped; where all days are missing the result is NaN.

    Parameters
    ----------
    tmean : numpy.ndarray
        ``(time, ...)`` daily mean temperatures (degC).

    Returns
    -------
    tdd, fdd : numpy.ndarray
        ``sum(max(T, 0))`` and ``sum(max(-T, 0))`` (degC day), shape ``tmean.shape[1:]``.
    """
    present = np.isfinite(tmean).any(axis=0)
    tdd = np.nansum(np.clip(tmean, 0.0, None), axis=0, dtype=np.float64)
    fdd = np.nansum(np.clip(-tmean, 0.0, None), axis=0, dtype=np.float64)
    return np.where(present, tdd, np.nan), np.where(present, fdd, np.nan)


def thaw_timing(tmean: np.ndarray, days: np.ndarray, year: int) -> dict[str, np.ndarray]:
    """Find thaw onset, freeze-up and the thaw period of summer ``year`` per pixel.

    Parameters
    ----------
    tmean : numpy.ndarray
        ``(time, ...)`` daily mean temperatures (degC); NaN counts as not thawed.
    days : numpy.ndarray
        Consecutive ``datetime64[D]`` days of ``tmean``, covering at least 1 Jan .. 30 Sep
        ``year`` (and up to 31 Dec ``year`` for an uncensored late freeze-up).
    year : int
        Year of the summer.

    Returns
    -------
    dict of str to numpy.ndarray
        ``thaw_onset`` and ``freeze_up`` (day of year, 1 = 1 January; NaN without thaw, and
        freeze-up NaN if censored), ``thaw_period_days`` (0 without thaw), and ``_first`` /
        ``_last``: indices into ``days`` of the onset and of the last thaw day (-1 where
        undefined), for the shoulder windows.
    """
    jan1, oct1 = np.datetime64(f"{year}-01-01"), np.datetime64(f"{year}-10-01")
    next_jan1 = np.datetime64(f"{year + 1}-01-01")
    extra = (1,) * (tmean.ndim - 1)
    thaw = np.nan_to_num(tmean, nan=-1.0) > 0
    onset_window = ((days >= jan1) & (days < oct1)).reshape(-1, *extra)
    season = (days >= jan1) & (days < next_jan1)
    candidates = thaw & onset_window
    has_thaw = candidates.any(axis=0)
    first = np.argmax(candidates, axis=0)
    in_season = thaw & season.reshape(-1, *extra)
    last = len(days) - 1 - np.argmax(in_season[::-1], axis=0)
    censored = has_thaw & (last == np.flatnonzero(season)[-1])
    doy = ((days - jan1) / np.timedelta64(1, "D")).astype(np.float64) + 1.0
    onset = np.where(has_thaw, doy[first], np.nan)
    freeze_up = np.where(has_thaw & ~censored, doy[last] + 1.0, np.nan)
    period = np.where(has_thaw, freeze_up - onset, 0.0)
    return {
        "thaw_onset": onset,
        "freeze_up": freeze_up,
        "thaw_period_days": period,
        "_first": np.where(has_thaw, first, -1),
        "_last": np.where(has_thaw & ~censored, last, -1),
    }


def _cumulative(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return running sums of the values present and of their count, with a leading zero."""
    zero = np.zeros((1, *values.shape[1:]))
    total = np.cumsum(np.nan_to_num(values, nan=0.0), axis=0, dtype=np.float64)
    count = np.cumsum(np.isfinite(values), axis=0, dtype=np.float64)
    return np.concatenate([zero, total]), np.concatenate([zero, count])


def _window_stats(
    cumulative: tuple[np.ndarray, np.ndarray], start: np.ndarray, stop: np.ndarray, summed: bool
) -> np.ndarray:
    """Sum (or average) the values ``[start:stop]`` along axis 0 per pixel from running sums.

    NaN where the window is empty, invalid (start < 0) or runs past the series.
    """
    total, count = cumulative
    n = total.shape[0] - 1
    ok = (start >= 0) & (stop <= n) & (stop > start)
    s, e = np.clip(start, 0, n)[None], np.clip(stop, 0, n)[None]
    window_sum = (np.take_along_axis(total, e, 0) - np.take_along_axis(total, s, 0))[0]
    window_count = (np.take_along_axis(count, e, 0) - np.take_along_axis(count, s, 0))[0]
    ok &= window_count > 0
    result = window_sum if summed else window_sum / np.maximum(window_count, 1)
    return np.where(ok, result, np.nan)


def _aggregate(values: np.ndarray, summed: bool) -> np.ndarray:
    """Sum or mean over axis 0 of the days present; NaN where no day is present."""
    present = np.isfinite(values).any(axis=0)
    with np.errstate(invalid="ignore"):
        out = np.nansum(values, 0, dtype=np.float64) if summed else np.nanmean(values, 0)
    return np.where(present, out, np.nan)


def yearly_indices(
    daily: xr.Dataset,
    year: int,
    config: ClimateIndexConfig = ClimateIndexConfig(),
) -> xr.Dataset:
    """Compute the climate indices of one Arctic year from daily aggregates.

    Parameters
    ----------
    daily : xarray.Dataset
        Daily variables (``t2m_mean``, ``t2m_min``, ``t2m_max``, ``precipitation``,
        ``snowfall``, ``snow_water_equivalent``) with ``time`` as first dim, covering every day
        of the Arctic year in order; days after 30 September (up to 31 December) complete the
        thaw season, SON and the autumn shoulder.
    year : int
        Arctic year (1 October ``year - 1`` .. 30 September ``year``).
    config : ClimateIndexConfig, optional
        Snow threshold and shoulder length.

    Returns
    -------
    xarray.Dataset
        One float32 variable per index with a leading ``year`` dim and the non-time dims of
        ``daily``.

    Raises
    ------
    ValueError
        If ``daily`` does not hold every day of the Arctic year, consecutively.
    """
    days = daily["time"].to_numpy().astype("datetime64[D]")
    expected = arctic_year_days(year)
    if not np.isin(expected, days).all() or np.any(np.diff(days) != np.timedelta64(1, "D")):
        raise ValueError(
            f"daily data for Arctic year {year} must hold every day from {expected[0]} to "
            f"{expected[-1]} in order (days missing from the files are NaN, not absent)"
        )
    daily = daily.sel(time=daily["time"] < np.datetime64(f"{year + 1}-01-01", "ns"))
    days = days[: daily.sizes["time"]]
    arrays = {name: daily[name].to_numpy() for name in daily.data_vars}
    in_year = (days >= expected[0]) & (days <= expected[-1])
    year_arrays = {name: values[in_year] for name, values in arrays.items()}
    tmean = arrays["t2m_mean"]

    out: dict[str, np.ndarray] = {}
    out["thawing_degree_days"], out["freezing_degree_days"] = degree_days(year_arrays["t2m_mean"])
    out["thaw_days"] = (np.nan_to_num(year_arrays["t2m_mean"], nan=-1.0) > 0).sum(0).astype(float)
    timing = thaw_timing(tmean, days, year)
    out |= {k: v for k, v in timing.items() if not k.startswith("_")}
    swe = year_arrays["snow_water_equivalent"]
    out["snow_cover_days"] = (np.nan_to_num(swe) >= config.snow_threshold_mm).sum(0).astype(float)
    missing = sum(np.isnan(v) for v in year_arrays.values()).astype(bool).sum(0).astype(float)
    out["missing_days"] = missing

    out["t2m_mean"] = _aggregate(year_arrays["t2m_mean"], summed=False)
    out["t2m_min"] = np.where(
        np.isfinite(year_arrays["t2m_min"]).any(0), np.nanmin(year_arrays["t2m_min"], 0), np.nan
    )
    out["t2m_max"] = np.where(
        np.isfinite(year_arrays["t2m_max"]).any(0), np.nanmax(year_arrays["t2m_max"], 0), np.nan
    )
    for name in SUMMED:
        out[name] = _aggregate(year_arrays[name], summed=True)
    out["swe_max"] = np.where(np.isfinite(swe).any(0), np.nanmax(swe, 0), np.nan)

    for season, (first_day, end_day) in SEASONS.items():
        lo = np.datetime64(first_day.format(prev=year - 1, year=year))
        hi = np.datetime64(end_day.format(prev=year - 1, year=year))
        covered = days[0] <= lo and days[-1] >= hi - np.timedelta64(1, "D")
        select = (days >= lo) & (days < hi)
        for name, summed in (("t2m_mean", False), ("precipitation", True), ("snowfall", True)):
            value = _aggregate(arrays[name][select], summed) if covered else None
            out[f"{name}_{season}"] = (
                value if value is not None else np.full(tmean.shape[1:], np.nan)
            )

    n = config.shoulder_days
    first, last = timing["_first"], timing["_last"]
    windows = {
        "spring_shoulder": (np.where(first >= 0, first - n, -1), np.where(first >= 0, first, -1)),
        "autumn_shoulder": (
            np.where(last >= 0, last + 1, -1),
            np.where(last >= 0, last + 1 + n, -1),
        ),
    }
    for name, summed in (("t2m_mean", False), ("precipitation", True), ("snowfall", True)):
        cumulative = _cumulative(arrays[name])
        for window, (start, stop) in windows.items():
            out[f"{name}_{window}"] = _window_stats(cumulative, start, stop, summed)

    dims = daily["t2m_mean"].dims[1:]
    coords = {d: daily[d] for d in dims if d in daily.coords}
    result = xr.Dataset(
        {name: (dims, np.asarray(v, np.float32)) for name, v in out.items()}, coords=coords
    )
    for name, (units, description) in INDEX_ATTRS.items():
        if name in result:
            result[name].attrs.update(units=units, description=description)
    return result.expand_dims(year=[year])


INDEX_ATTRS = {
    "thawing_degree_days": ("degC day", "sum of max(daily mean T2m, 0) over the Arctic year"),
    "freezing_degree_days": ("degC day", "sum of max(-daily mean T2m, 0) over the Arctic year"),
    "thaw_days": ("days", "days with daily mean T2m > 0 degC in the Arctic year"),
    "thaw_onset": ("day of year", "first day from 1 Jan with daily mean T2m > 0 degC"),
    "freeze_up": ("day of year", "day after the last thaw day of the season (up to 31 Dec)"),
    "thaw_period_days": ("days", "freeze_up - thaw_onset; 0 without thaw, NaN if censored"),
    "snow_cover_days": ("days", "days with snow water equivalent >= the threshold"),
    "missing_days": ("days", "days of the Arctic year with a variable missing (not filled)"),
    "swe_max": ("mm", "highest daily mean snow water equivalent of the Arctic year"),
}
