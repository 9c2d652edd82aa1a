"""ERA5 ingest: CDS request planning, the download against a fake cdsapi client (offline),
credentials, daily aggregates against an independent xarray resample, corrupt files."""

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from pydantic import SecretStr

from entropice_core.config import SAMPLE_REGION_BBOX
from entropice_core.ingest import era5

YEAR = 2019


def test_grid_points_of_the_arctic_box() -> None:
    assert era5.grid_points(era5.ARCTIC_AREA) == 161 * 1441
    assert era5.cds_area(SAMPLE_REGION_BBOX) == (69.25, -138.5, 66.5, -131.5)


def test_default_plan_is_one_request_per_month_and_step_type(tmp_path: Path) -> None:
    plans = era5.plan_arctic_year(tmp_path, YEAR, era5.Era5DownloadConfig())
    assert len(plans) == 25  # 12 months x 2 step types + the closing hour
    assert all(len(p.parts) == 1 for p in plans)
    request = plans[0].parts[0].request
    assert request["variable"] == ["2m_temperature", "snow_depth"]
    assert (request["year"], request["month"]) == (["2018"], ["10"])
    assert len(request["day"]) == 31 and len(request["time"]) == 24
    assert request["area"] == [90.0, -180.0, 50.0, 180.0]
    assert request["data_format"] == "netcdf"
    closing = plans[-1]
    assert closing.closing_hour and closing.parts[0].request["day"] == ["01"]
    assert closing.parts[0].request["time"] == ["00:00"]
    assert closing.path == era5.era5_path(tmp_path, YEAR, 10, "accum")


@pytest.mark.parametrize(
    ("max_fields", "max_values", "days_per_part"),
    [(120_000, 100_000_000, 8), (480, 10**12, 10), (48, 10**12, 1)],
)
def test_months_split_into_day_ranges_within_the_limits(
    tmp_path: Path, max_fields: int, max_values: int, days_per_part: int
) -> None:
    config = era5.Era5DownloadConfig(max_fields=max_fields, max_values=max_values)
    points = 161 * 1441
    for plan in era5.plan_arctic_year(tmp_path, YEAR, config)[:-1]:
        days = [int(d) for part in plan.parts for d in part.request["day"]]
        n_days = {2: 28, 4: 30, 6: 30, 9: 30, 11: 30}.get(plan.month, 31)
        assert days == list(range(1, n_days + 1))  # each day exactly once, in order
        for part in plan.parts:
            fields = len(part.request["variable"]) * len(part.request["day"]) * 24
            assert fields <= max_fields and fields * points <= max_values
            assert len(part.request["day"]) <= days_per_part
        assert len(plan.parts) == -(-n_days // days_per_part)
        assert len({p.target for p in plan.parts}) == len(plan.parts)


def test_a_day_over_the_limits_is_refused(tmp_path: Path) -> None:
    config = era5.Era5DownloadConfig(max_values=1_000_000)
    with pytest.raises(ValueError, match="exceeds the request limits"):
        era5.plan_arctic_year(tmp_path, YEAR, config)


class FakeCds:
    """Stands in for cdsapi.Client: serves the sample region's month files, subset to the
    requested days and hours; optionally fails the first ``failures`` calls."""

    def __init__(self, source: Path, failures: int = 0, error: str = "temporarily limited"):
        self.source, self.failures, self.error = source, failures, error
        self.calls: list[dict[str, Any]] = []

    def retrieve(self, name: str, request: dict[str, Any], target: str) -> None:
        self.calls.append(request)
        if len(self.calls) <= self.failures:
            raise RuntimeError(self.error)
        assert name == era5.DATASET
        step = "accum" if "total_precipitation" in request["variable"] else "instant"
        year, month = int(request["year"][0]), int(request["month"][0])
        with xr.open_dataset(era5.era5_path(self.source, year, month, step)) as ds:
            stamps = pd.DatetimeIndex(ds["valid_time"].to_numpy())
            keep = stamps.strftime("%d").isin(request["day"]) & stamps.strftime("%H:00").isin(
                request["time"]
            )
            ds.isel(valid_time=keep).load().to_netcdf(target, engine="h5netcdf")


@pytest.fixture(scope="module")
def sample_era5(region) -> Path:
    data_dir, _, _ = region
    return data_dir / "sources" / "era5"


def _config(**kw: Any) -> era5.Era5DownloadConfig:
    return era5.Era5DownloadConfig(area=era5.cds_area(SAMPLE_REGION_BBOX), backoff_s=1, **kw)


def test_download_writes_every_file_and_resumes(sample_era5: Path, tmp_path: Path) -> None:
    client, waits = FakeCds(sample_era5, failures=2), []
    report = era5.download_arctic_year(
        client, tmp_path, YEAR, _config(), sleep=waits.append, log=lambda _: None
    )
    assert waits == [1, 2]  # exponential backoff on the two transient failures
    assert len(report.downloaded) == 25 and not report.skipped
    for path in era5.arctic_year_files(tmp_path, YEAR):
        original = path.relative_to(tmp_path)
        xr.testing.assert_identical(xr.load_dataset(path), xr.load_dataset(sample_era5 / original))
    assert not list(tmp_path.rglob(".*"))  # no temporary files left behind
    # resume: a deleted month is fetched again, the complete ones are skipped
    era5.arctic_year_files(tmp_path, YEAR)[5].unlink()
    again = FakeCds(sample_era5)
    report = era5.download_arctic_year(again, tmp_path, YEAR, _config(), log=lambda _: None)
    assert len(again.calls) == 1 and len(report.skipped) == 24


def test_split_months_are_joined_into_the_month_file(sample_era5: Path, tmp_path: Path) -> None:
    client = FakeCds(sample_era5)
    era5.download_arctic_year(client, tmp_path, YEAR, _config(max_fields=768), log=lambda _: None)
    # parts of at most 16 days (2 variables x 24 hours x 16 days = 768 fields): every month in
    # 2 parts, per step type, plus the closing hour
    assert len(client.calls) == 2 * 12 * 2 + 1
    path = era5.era5_path(tmp_path, 2019, 1, "accum")
    joined, original = xr.load_dataset(path), xr.load_dataset(sample_era5 / "2019/01" / path.name)
    xr.testing.assert_allclose(joined.drop_vars("expver"), original.drop_vars("expver"))
    assert not list(tmp_path.rglob("*part*"))


def test_retries_give_up_with_the_file_and_the_fix(sample_era5: Path, tmp_path: Path) -> None:
    client = FakeCds(sample_era5, failures=100)
    with pytest.raises(RuntimeError, match=r"data_stream-oper_stepType-instant.nc failed 3 times"):
        era5.download_arctic_year(
            client, tmp_path, YEAR, _config(retries=2), sleep=lambda _: None, log=lambda _: None
        )
    assert not list(tmp_path.rglob("*.nc"))


def test_refused_credentials_fail_at_once(sample_era5: Path, tmp_path: Path) -> None:
    client = FakeCds(sample_era5, failures=1, error="401 Client Error: Unauthorized")
    with pytest.raises(era5.CdsCredentialsError, match="CDSAPI_KEY"):
        era5.download_arctic_year(client, tmp_path, YEAR, _config(), sleep=lambda _: None)
    assert len(client.calls) == 1


def test_missing_credentials_say_how_to_set_them(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CDSAPI_URL", raising=False)
    monkeypatch.delenv("CDSAPI_KEY", raising=False)
    monkeypatch.setenv("CDSAPI_RC", str(tmp_path / "absent-cdsapirc"))
    with pytest.raises(era5.CdsCredentialsError, match=r"CDSAPI_KEY=.*~/.cdsapirc"):
        era5.cds_api()


def test_old_style_key_is_refused_without_showing_it(monkeypatch) -> None:
    monkeypatch.setenv("CDSAPI_URL", "https://cds.climate.copernicus.eu/api")
    monkeypatch.setenv("CDSAPI_KEY", "12345:secret-token-value")
    with pytest.raises(era5.CdsCredentialsError) as info:
        era5.cds_credentials()
    assert "old 'UID:key' form" in str(info.value)
    assert "secret-token-value" not in str(info.value)


def test_valid_credentials_are_read_from_the_rc_file(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CDSAPI_URL", raising=False)
    monkeypatch.delenv("CDSAPI_KEY", raising=False)
    rc = tmp_path / "cdsapirc"
    rc.write_text("url: https://cds.climate.copernicus.eu/api\nkey: abcdef-0123\n")
    monkeypatch.setenv("CDSAPI_RC", str(rc))
    assert era5.cds_credentials() == ("https://cds.climate.copernicus.eu/api", "abcdef-0123")


def test_daily_aggregates_match_an_xarray_resample(sample_era5: Path, tmp_path: Path) -> None:
    era5.write_daily(sample_era5, YEAR, tmp_path / "daily.zarr", log=lambda _: None)
    daily = era5.read_daily(tmp_path / "daily.zarr").sel(time=slice("2019-01-01", "2019-01-31"))
    inst = xr.open_dataset(sample_era5 / "2019/01/data_stream-oper_stepType-instant.nc")
    accum = xr.concat(
        [
            xr.open_dataset(sample_era5 / f"2019/{m}/data_stream-oper_stepType-accum.nc")
            for m in ("01", "02")
        ],
        dim="valid_time",
    )
    t = inst["t2m"].resample(valid_time="1D")
    np.testing.assert_allclose(daily["t2m_mean"], t.mean() - 273.15, atol=1e-3)
    np.testing.assert_allclose(daily["t2m_min"], t.min() - 273.15, atol=1e-3)
    np.testing.assert_allclose(daily["t2m_max"], t.max() - 273.15, atol=1e-3)
    # accumulations over the hour ending at valid_time: shift back one hour, then sum per day
    shifted = accum.assign_coords(valid_time=accum["valid_time"] - np.timedelta64(1, "h"))
    tp = shifted["tp"].clip(min=0).resample(valid_time="1D").sum().sel(valid_time="2019-01")
    np.testing.assert_allclose(daily["precipitation"], tp * 1000, rtol=1e-4, atol=1e-4)
    sd = inst["sd"].resample(valid_time="1D").mean()
    np.testing.assert_allclose(daily["snow_water_equivalent"], sd * 1000, rtol=1e-4, atol=1e-3)


def test_last_day_without_the_closing_hour_is_a_reported_gap(
    sample_era5: Path, tmp_path: Path
) -> None:
    # the sample ends 30 Sep 2023 23 UTC: 30 Sep 2023's precipitation lacks 1 Oct 00 UTC
    report = era5.write_daily(sample_era5, 2023, tmp_path / "daily.zarr", log=lambda _: None)
    daily = era5.read_daily(tmp_path / "daily.zarr")
    assert report.gap_days(daily) == ["2023-09-30"]
    assert report.gaps["2023-09"]["missing_accum_hours"] == 1
    assert daily["precipitation"].isel(time=-1).isnull().all()
    assert daily["t2m_mean"].isel(time=-1).notnull().all()


def test_truncated_file_names_itself_and_keeps_the_previous_store(
    sample_era5: Path, tmp_path: Path
) -> None:
    root = tmp_path / "era5"
    shutil.copytree(sample_era5 / "2018", root / "2018")
    shutil.copytree(sample_era5 / "2019", root / "2019")
    store = tmp_path / "daily.zarr"
    era5.write_daily(root, YEAR, store)
    before = era5.read_daily(store).load()
    broken = era5.era5_path(root, 2019, 3, "instant")
    broken.write_bytes(broken.read_bytes()[:5000])
    with pytest.raises(ValueError, match=rf"{broken}.*delete it and materialise era5_hourly"):
        era5.write_daily(root, YEAR, store)
    xr.testing.assert_identical(era5.read_daily(store).load(), before)
    assert not era5.month_is_complete(broken, 2019, 3, "instant")  # a resume fetches it again
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []  # no temporaries


def test_crop_keeps_the_points_of_a_box_across_180_on_both_sides() -> None:
    from entropice_core.config import AreaOfInterest

    lat, lon = np.arange(70.0, 55.0, -0.25), np.arange(-180.0, 180.0, 0.25)
    grid = xr.Dataset(
        {"t2m": (("latitude", "longitude"), np.zeros((lat.size, lon.size)))},
        coords={"latitude": lat, "longitude": lon},
    )
    area = AreaOfInterest.parse("179.6,60.1,-179.4,60.4")
    cropped = era5.crop_to_area(grid, [part.bounds for part in area.parts])
    # widened outward to 0.25 degree steps: 60.0..60.5, and 179.5..180 | -180..-179.25
    assert cropped["latitude"].to_numpy().tolist() == [60.5, 60.25, 60.0]
    assert cropped["longitude"].to_numpy().tolist() == [
        -180.0,
        -179.75,
        -179.5,
        -179.25,
        179.5,
        179.75,
    ]
    with pytest.raises(ValueError, match="no ERA5 grid point"):
        era5.crop_to_area(grid, [(10.0, 80.0, 11.0, 81.0)])


class Clock:
    """Fake time: each CDS call takes ``call_s``, each wait as long as asked."""

    def __init__(self, call_s: float) -> None:
        self.now, self.call_s, self.waits = 0.0, call_s, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class DownCds(FakeCds):
    """A CDS outage: every call fails after ``clock.call_s`` seconds."""

    def __init__(self, source: Path, clock: Clock) -> None:
        super().__init__(source, failures=10**6, error="503 Server Error: Service Unavailable")
        self.clock = clock

    def retrieve(self, name: str, request: dict[str, Any], target: str) -> None:
        self.clock.now += self.clock.call_s
        super().retrieve(name, request, target)


def test_a_cds_outage_fails_within_the_retry_bound_logging_each_attempt(
    sample_era5: Path, tmp_path: Path
) -> None:
    clock = Clock(call_s=30.0)
    api, lines = DownCds(sample_era5, clock), []
    config = era5.Era5DownloadConfig(
        area=era5.cds_area(SAMPLE_REGION_BBOX), retries=50, backoff_s=60, retry_timeout_s=900
    )
    secret = "0123-secret-token"
    client = era5.CdsEra5Client(
        era5.CdsCredentials(key=SecretStr(secret)), api=api, sleep=clock.sleep, clock=clock
    )
    with pytest.raises(RuntimeError) as err:
        client.fetch_year(tmp_path, YEAR, config, log=lines.append)
    # 30 s per call, waits 60, 120, 240; the next wait (480 s) would end past 900 s
    assert clock.waits == [60, 120, 240] and len(api.calls) == 4
    assert clock.now <= config.retry_timeout_s
    text = str(err.value)
    assert "failed 4 times in 540 s" in text and "the 900 s retry bound" in text
    assert "503 Server Error" in text and "run the asset again later" in text
    attempts = [line for line in lines if ": attempt " in line and "failed" not in line]
    assert len(attempts) == 4
    assert all("reanalysis-era5-single-levels 2m_temperature" in line for line in attempts)
    assert all(f"area {list(config.area)}" in line for line in attempts)
    assert "attempt 3/51 failed after 270 s" in lines[-2] and "retrying in 240 s" in lines[-2]
    assert not any(secret in line for line in lines) and secret not in text


def test_cdsapi_does_not_retry_inside_our_retries(monkeypatch) -> None:
    import cdsapi

    made: dict[str, Any] = {}
    monkeypatch.setattr(cdsapi, "Client", lambda **kw: made.update(kw))
    era5.cds_api(era5.CdsCredentials(key=SecretStr("abc-def")))
    assert made["retry_max"] == 1
