"""Climate indices against hand-computed values on small synthetic daily series.

Three pixels over Arctic years 2020 (a leap year: 29 Feb 2020 lies in it) and 2021, all at
-10 degC unless said otherwise, 1 mm of precipitation a day (2 mm in JJA):

- A: thawed at +4 degC from 15 May to 14 Sep 2020, an October warm spell at +2 degC on
  5-9 Oct 2019 (start of Arctic year 2020), 29 Feb 2020 at -20 degC;
- B: never thaws;
- C: thawed at +3 degC from 1 Jun to 10 Oct 2020 (across the Arctic-year boundary) and from
  10 Jun to 31 Aug 2021.
"""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from entropice_core.climate.indices import degree_days
from entropice_core.features.climate import yearly_from_daily
from entropice_core.ingest.era5 import (
    arctic_year,
    arctic_year_days,
    arctic_year_months,
    latest_published_arctic_year,
)

DAYS = pd.date_range("2019-10-01", "2021-12-31", freq="D")


def _set(t: np.ndarray, start: str, stop: str, value: float) -> None:
    t[(start <= DAYS) & (stop >= DAYS)] = value


def _series() -> xr.Dataset:
    t = np.full((len(DAYS), 3), -10.0)
    _set(t[:, 0], "2020-05-15", "2020-09-14", 4.0)
    _set(t[:, 0], "2019-10-05", "2019-10-09", 2.0)
    _set(t[:, 0], "2020-02-29", "2020-02-29", -20.0)
    _set(t[:, 2], "2020-06-01", "2020-10-10", 3.0)
    _set(t[:, 2], "2021-06-10", "2021-08-31", 3.0)
    precipitation = np.where(DAYS.month.isin([6, 7, 8]), 2.0, 1.0)[:, None].repeat(3, axis=1)
    precipitation[DAYS == "2020-01-10", 0] = np.nan  # a gap, not filled
    swe = np.where(t < 0, 20.0, 0.0)
    data = {
        "t2m_mean": t,
        "t2m_min": t - 1.0,
        "t2m_max": t + 1.0,
        "precipitation": precipitation,
        "snowfall": np.where(t < 0, precipitation, 0.0),
        "snow_water_equivalent": swe,
    }
    dims = ("time", "latitude", "longitude")
    return xr.Dataset(
        {k: (dims, v.astype(np.float32)[:, None, :]) for k, v in data.items()},
        coords={"time": DAYS.values, "latitude": [70.0], "longitude": [0.0, 0.25, 0.5]},
    )


def _year(daily: xr.Dataset, year: int) -> xr.Dataset:
    days = arctic_year_days(year).astype("datetime64[ns]")
    return daily.sel(time=slice(days[0], days[-1]))


def _indices(year: int, with_next: bool = True) -> dict[str, np.ndarray]:
    daily = _series()
    nxt = _year(daily, year + 1) if with_next else None
    out = yearly_from_daily(_year(daily, year), nxt, year, band_rows=1)
    return {k: v.to_numpy()[0, 0] for k, v in out.data_vars.items()}


def test_arctic_year_key_of_30_september_and_1_october() -> None:
    assert arctic_year(dt.date(2018, 9, 30)) == 2018
    assert arctic_year(dt.date(2018, 10, 1)) == 2019
    days = np.array(["2018-09-30T23", "2018-10-01T00", "2018-12-31", "2019-01-01"], "M8[h]")
    assert arctic_year(days).tolist() == [2018, 2019, 2019, 2019]
    assert arctic_year_months(2019)[0] == (2018, 10) and arctic_year_months(2019)[-1] == (2019, 9)


def test_arctic_year_lengths_include_the_leap_day() -> None:
    assert len(arctic_year_days(2020)) == 366  # Oct 2019 - Sep 2020 holds 29 Feb 2020
    assert len(arctic_year_days(2021)) == 365
    assert len(arctic_year_days(2024)) == 366
    assert str(arctic_year_days(2020)[0]) == "2019-10-01"
    assert str(arctic_year_days(2020)[-1]) == "2020-09-30"


def test_latest_published_year_waits_for_the_latency() -> None:
    utc = dt.UTC
    assert latest_published_arctic_year(dt.datetime(2025, 3, 1, tzinfo=utc)) == 2024
    assert latest_published_arctic_year(dt.datetime(2025, 9, 30, 23, tzinfo=utc)) == 2024
    assert latest_published_arctic_year(dt.datetime(2025, 10, 5, 23, tzinfo=utc)) == 2024
    assert latest_published_arctic_year(dt.datetime(2025, 10, 6, 0, tzinfo=utc)) == 2025


def test_degree_days_skip_missing_days() -> None:
    tdd, fdd = degree_days(np.array([[2.0, np.nan], [-3.0, np.nan], [np.nan, np.nan], [0.5, 1]]))
    assert tdd.tolist()[0] == 2.5 and fdd.tolist()[0] == 3.0
    assert tdd[1] == 1.0 and fdd[1] == 0.0


def test_leap_year_with_october_warm_spell() -> None:
    idx = _indices(2020)
    assert idx["thawing_degree_days"][0] == pytest.approx(123 * 4 + 5 * 2)
    # 366 days: 128 thaw days, 29 Feb at -20, the other 237 at -10
    assert idx["freezing_degree_days"][0] == pytest.approx(237 * 10 + 20)
    assert idx["thaw_days"][0] == 128
    assert idx["thaw_onset"][0] == 136  # 15 May in a leap year, not the October spell
    assert idx["freeze_up"][0] == 259  # the day after 14 Sep (day 258)
    assert idx["thaw_period_days"][0] == 123
    assert idx["snow_cover_days"][0] == 366 - 128
    assert idx["missing_days"][0] == 1


def test_year_without_thaw() -> None:
    idx = _indices(2020)
    assert idx["thawing_degree_days"][1] == 0
    assert idx["freezing_degree_days"][1] == pytest.approx(3660)
    assert np.isnan(idx["thaw_onset"][1]) and np.isnan(idx["freeze_up"][1])
    assert idx["thaw_period_days"][1] == 0 and idx["thaw_days"][1] == 0
    assert np.isnan(idx["t2m_mean_spring_shoulder"][1])


def test_thaw_crossing_the_arctic_year_boundary() -> None:
    idx = _indices(2020)
    # TDD per Arctic year: 1 Jun - 30 Sep 2020 (122 days) at +3
    assert idx["thawing_degree_days"][2] == pytest.approx(122 * 3)
    assert idx["thaw_onset"][2] == 153  # 1 June 2020
    assert idx["freeze_up"][2] == 285  # the day after 10 Oct 2020 (day 284)
    assert idx["thaw_period_days"][2] == 132
    # without the next Arctic year the season is censored, not cut at 30 Sep
    censored = _indices(2020, with_next=False)
    assert np.isnan(censored["freeze_up"][2]) and np.isnan(censored["thaw_period_days"][2])
    assert censored["thaw_onset"][2] == 153
    # the 1-10 Oct 2020 thaw opens Arctic year 2021 but is not its onset (10 June 2021 is)
    nxt = _indices(2021)
    assert nxt["thaw_onset"][2] == 161
    assert nxt["freeze_up"][2] == 244  # the day after 31 Aug 2021
    assert nxt["thawing_degree_days"][2] == pytest.approx(10 * 3 + 83 * 3)


def test_seasonal_and_yearly_sums() -> None:
    idx = _indices(2020)
    # pixel B: DJF 31 + 31 + 29 days, MAM 92, JJA 92 days at 2 mm, SON 91 (needs Oct-Nov 2020)
    assert idx["precipitation_djf"][1] == pytest.approx(91)
    assert idx["precipitation_mam"][1] == pytest.approx(92)
    assert idx["precipitation_jja"][1] == pytest.approx(184)
    assert idx["precipitation_son"][1] == pytest.approx(91)
    assert idx["precipitation"][1] == pytest.approx(366 + 92)
    assert idx["snowfall_jja"][1] == pytest.approx(184)  # B stays frozen
    # pixel A: the gap on 10 Jan is skipped, not filled
    assert idx["precipitation"][0] == pytest.approx(366 + 92 - 1)
    assert idx["precipitation_djf"][0] == pytest.approx(90)
    assert idx["t2m_mean_djf"][0] == pytest.approx((-10 * 90 - 20) / 91)
    assert idx["t2m_mean_jja"][0] == pytest.approx(4.0)
    assert np.isnan(_indices(2020, with_next=False)["precipitation_son"][1])


def test_shoulder_seasons() -> None:
    idx = _indices(2020)
    # A: spring = 15 Apr - 14 May (30 days before onset), autumn = 15 Sep - 14 Oct 2020
    assert idx["t2m_mean_spring_shoulder"][0] == pytest.approx(-10.0)
    assert idx["precipitation_spring_shoulder"][0] == pytest.approx(30.0)
    assert idx["precipitation_autumn_shoulder"][0] == pytest.approx(30.0)
    assert idx["snowfall_autumn_shoulder"][0] == pytest.approx(30.0)
    # C: spring = 2 - 31 May at -10; autumn from 11 Oct 2020
    assert idx["t2m_mean_spring_shoulder"][2] == pytest.approx(-10.0)
    assert idx["t2m_mean_autumn_shoulder"][2] == pytest.approx(-10.0)
    assert np.isnan(_indices(2020, with_next=False)["t2m_mean_autumn_shoulder"][2])


def test_missing_days_of_the_year_are_refused() -> None:
    daily = _year(_series(), 2020).isel(time=slice(1, None))
    with pytest.raises(ValueError, match="every day from 2019-10-01"):
        yearly_from_daily(daily, None, 2020)
