"""Source clients at their boundary: the offline clients (sample region, mirrors), the real
clients against loopback fakes, credentials through ``dg.EnvVar`` resource fields, the
one-line missing-credential message, and no secret in logs, reprs or metadata."""

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlparse

import dagster as dg
import geopandas as gpd
import pytest
import shapely

from entropice_core.config import SAMPLE_REGION_BBOX, AreaOfInterest
from entropice_core.ingest import arcticdem, darts, era5
from entropice_core.io.download import DownloadConfig, MissingSourceFiles
from entropice_dagster.assets.climate import era5_hourly
from entropice_dagster.io_managers import MANIFEST_IO_MANAGER_KEY
from entropice_dagster.resources import (
    ArcticDEMSourceResource,
    AreaOfInterestResource,
    CdsResource,
    DartsSourceResource,
    DataDirResource,
    project_resources,
)

YEAR = 2019
SECRET = "0123abcd-feed-beef-cafe-secret-token"
FAST = DownloadConfig(retries=1, backoff_s=0.0, timeout_s=10)


@pytest.fixture(scope="module")
def sources(region) -> Path:
    data_dir, _, _ = region
    return data_dir / "sources"


@pytest.fixture
def no_cds_env(monkeypatch, tmp_path: Path) -> None:
    """No CDS credentials anywhere: no variables, and an rc file that does not exist."""
    monkeypatch.delenv("CDSAPI_URL", raising=False)
    monkeypatch.delenv("CDSAPI_KEY", raising=False)
    monkeypatch.setenv("CDSAPI_RC", str(tmp_path / "absent-cdsapirc"))


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# --- ERA5 ---------------------------------------------------------------------------------------


def test_offline_era5_uses_the_files_present(sources: Path) -> None:
    report = era5.OfflineEra5Client().fetch_year(sources / "era5", YEAR)
    assert not report.downloaded
    assert set(era5.arctic_year_files(sources / "era5", YEAR)) <= set(report.skipped)
    # only the closing hour (1 Oct YEAR 00 UTC, next year's October file) may be absent
    assert set(report.missing) <= {era5.era5_path(sources / "era5", YEAR, 10, "accum")}


def test_offline_era5_names_the_absent_file_and_the_fix(sources: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "era5"
    shutil.copytree(sources / "era5", mirror)
    gone = era5.era5_path(mirror, 2019, 3, "instant")
    gone.unlink()
    with pytest.raises(MissingSourceFiles) as info:
        CdsResource(folder=str(mirror)).download(tmp_path, YEAR, AreaOfInterest.sample_region())
    text = _one_line(info.value)
    assert str(gone) in text and "client='cds'" in text and "make demo" in text
    assert info.value.missing == [gone]


class FakeCdsapi:
    """Stands in for ``cdsapi.Client``: records the credentials it was built with and serves
    the sample region's month files (whole months; the downloader checks what arrives)."""

    made: ClassVar[list[dict[str, Any]]] = []
    source: ClassVar[Path]

    def __init__(self, url=None, key=None, **kwargs) -> None:
        FakeCdsapi.made.append({"url": url, "key": key})

    def retrieve(self, name: str, request: dict[str, Any], target: str) -> None:
        step = "accum" if "total_precipitation" in request["variable"] else "instant"
        year, month = int(request["year"][0]), int(request["month"][0])
        source = era5.era5_path(self.source, year, month, step)
        if not source.exists():  # the closing hour of the last sample year
            source = era5.era5_path(self.source, year - 1, month, step)
        shutil.copy(source, target)


@pytest.fixture
def fake_cdsapi(monkeypatch, sources: Path) -> type[FakeCdsapi]:
    import cdsapi

    FakeCdsapi.made, FakeCdsapi.source = [], sources / "era5"
    monkeypatch.setattr(cdsapi, "Client", FakeCdsapi)
    return FakeCdsapi


def test_env_var_key_reaches_cdsapi_and_no_secret_reaches_logs_or_metadata(
    monkeypatch, tmp_path: Path, fake_cdsapi: type[FakeCdsapi], no_cds_env, dagster_instance
) -> None:
    monkeypatch.setenv("CDSAPI_KEY", SECRET)
    resources = project_resources(tmp_path / "data", "arctic")
    cds = resources["cds"]
    assert cds.client == "cds"
    assert isinstance(cds.key, dg.EnvVar) and cds.key == "CDSAPI_KEY"  # the name, not the value
    assert SECRET not in repr(cds) and SECRET not in repr(cds.era5_client())
    dagster_instance.add_dynamic_partitions("arctic_year", [str(YEAR)])
    result = dg.materialize(
        [era5_hourly],
        partition_key=str(YEAR),
        instance=dagster_instance,
        resources={
            "cds": cds,
            "data_dir": DataDirResource(path=str(tmp_path / "data")),
            MANIFEST_IO_MANAGER_KEY: resources[MANIFEST_IO_MANAGER_KEY],
            # the sample box keeps the fake's files a valid answer to the requests
            "area_of_interest": AreaOfInterestResource(aoi="sample"),
        },
    )
    assert result.success
    assert fake_cdsapi.made == [{"url": era5.CDS_URL, "key": SECRET}]
    files = era5.arctic_year_files(tmp_path / "data" / "sources" / "era5", YEAR)
    assert all(f.exists() for f in files)
    (materialization,) = result.asset_materializations_for_node("era5_hourly")
    assert materialization.metadata["downloaded"].value == 25
    records = dagster_instance.all_logs(result.run_id)
    assert records
    assert all(SECRET not in str(record) for record in records)
    assert SECRET not in json.dumps({k: str(v) for k, v in materialization.metadata.items()})
    run = dagster_instance.get_run_by_id(result.run_id)
    assert SECRET not in json.dumps(run.run_config, default=str)


def test_missing_credentials_are_one_line_naming_the_variables(
    tmp_path: Path, fake_cdsapi: type[FakeCdsapi], no_cds_env
) -> None:
    cds = project_resources(tmp_path / "data", "arctic")["cds"]
    assert cds.key == ""  # CDSAPI_KEY unset: cdsapi's ~/.cdsapirc lookup is the fallback
    with pytest.raises(era5.CdsCredentialsError) as info:
        cds.download(tmp_path, YEAR, AreaOfInterest.sample_region())
    text = _one_line(info.value)
    assert "CDSAPI_KEY" in text and "CDSAPI_URL" in text and "~/.cdsapirc" in text
    assert not fake_cdsapi.made  # refused before any client was built


def test_rc_file_is_the_fallback_without_a_key_field(
    monkeypatch, tmp_path: Path, fake_cdsapi: type[FakeCdsapi], no_cds_env
) -> None:
    rc = tmp_path / "cdsapirc"
    rc.write_text(f"url: https://mirror.example/api\nkey: {SECRET}\n")
    monkeypatch.setenv("CDSAPI_RC", str(rc))
    cds = CdsResource(client="cds", folder=str(tmp_path / "era5"))
    cds.download(tmp_path, YEAR, AreaOfInterest.sample_region(), log=lambda _: None)
    assert fake_cdsapi.made == [{"url": "https://mirror.example/api", "key": SECRET}]


def test_an_old_style_key_in_the_resource_is_refused_without_showing_it(
    tmp_path: Path, fake_cdsapi: type[FakeCdsapi], no_cds_env
) -> None:
    cds = CdsResource(client="cds", key=f"12345:{SECRET}")
    assert SECRET not in repr(cds)
    with pytest.raises(era5.CdsCredentialsError) as info:
        cds.download(tmp_path, YEAR, AreaOfInterest.sample_region())
    assert "old 'UID:key' form" in _one_line(info.value) and SECRET not in str(info.value)


def test_credentials_model_hides_the_key() -> None:
    credentials = era5.CdsCredentials(key=SECRET)
    shown = (
        f"{credentials!r} {credentials} {credentials.model_dump()} {credentials.model_dump_json()}"
    )
    assert SECRET not in shown
    assert era5.cds_credentials(credentials) == (era5.CDS_URL, SECRET)


def test_sample_region_uses_the_offline_clients(tmp_path: Path, no_cds_env) -> None:
    resources = project_resources(tmp_path, "sample")
    assert resources["cds"].era5_client().offline
    assert resources["arcticdem_source"].arcticdem_client().offline
    assert resources["darts_source"].darts_client().offline
    real = project_resources(tmp_path, "north-of:60")
    assert isinstance(real["cds"].era5_client(), era5.CdsEra5Client)
    assert isinstance(real["arcticdem_source"].arcticdem_client(), arcticdem.PgcArcticDEMClient)
    assert isinstance(real["darts_source"].darts_client(), darts.ArcticDataCenterDartsClient)


# --- ArcticDEM -----------------------------------------------------------------------------------


def test_offline_arcticdem_uses_the_tiles_on_disk(region) -> None:
    data_dir, files, _ = region
    fetched = ArcticDEMSourceResource().fetch(data_dir, AreaOfInterest.sample_region())
    assert sorted(fetched.present) == sorted(files.arcticdem) and not fetched.downloaded
    expected = {arcticdem.tile_rowcol(p) for p in files.arcticdem}
    assert set(arcticdem.tiles_for(SAMPLE_REGION_BBOX)) == expected | set(fetched.missing)


def test_offline_arcticdem_without_tiles_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(MissingSourceFiles) as info:
        ArcticDEMSourceResource().fetch(tmp_path, AreaOfInterest.sample_region())
    text = _one_line(info.value)
    assert "client='pgc'" in text and "_32m_v4.1_dem.tif" in text
    assert len(info.value.missing) == len(arcticdem.tiles_for(SAMPLE_REGION_BBOX))


def test_pgc_client_needs_a_url() -> None:
    with pytest.raises(ValueError, match="OfflineArcticDEMClient"):
        arcticdem.PgcArcticDEMClient(base_url="")


# --- DARTS ---------------------------------------------------------------------------------------


def test_offline_darts_reads_the_folder(sources: Path, tmp_path: Path) -> None:
    resource = DartsSourceResource(folder=str(sources / "darts"))
    found = resource.files(tmp_path)
    assert found and all(p.parent == sources / "darts" for p in found)
    coverage = resource.coverage_files(tmp_path)
    assert [p.name for p in coverage] == ["DARTS_NitzeEtAl_v1-2_coverage_2018-2023.parquet"]
    assert not set(coverage) & set(found)
    with pytest.raises(MissingSourceFiles) as info:
        DartsSourceResource().files(tmp_path)  # DATA_DIR/sources/darts does not exist
    text = _one_line(info.value)
    assert "doi:10.18739/A22B8VD7C" in text and "client='arcticdata'" in text
    assert str(tmp_path / "sources" / "darts") in text


class DataOne:
    """A loopback stand-in for the Arctic Data Center's DataONE API: ``/query/solr/`` lists
    the package's files, ``/object/<pid>`` serves them."""

    def __init__(self, files: dict[str, bytes], package: str) -> None:
        self.files = {
            f"urn:uuid:{i:04d}": (name, data) for i, (name, data) in enumerate(files.items())
        }
        self.package = package
        self.fetched: list[str] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/query/solr/":
                    query = parse_qs(url.query)["q"][0]
                    docs = [
                        {"identifier": pid, "fileName": name}
                        for pid, (name, _) in api.files.items()
                        if query == f'resourceMap:"resource_map_{api.package}"'
                    ]
                    self._send(json.dumps({"response": {"docs": docs}}).encode())
                elif url.path.startswith("/object/"):
                    pid = unquote(url.path.removeprefix("/object/"))
                    if pid not in api.files:
                        self.send_error(404)
                        return
                    api.fetched.append(api.files[pid][0])
                    self._send(api.files[pid][1])
                else:
                    self.send_error(404)

        return Handler


@contextmanager
def serve(api: DataOne) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), api.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _gpkg(tmp_path: Path, name: str) -> bytes:
    frame = gpd.GeoDataFrame(
        {"year": [2020]}, geometry=[shapely.box(-135, 68, -134.9, 68.1)], crs=4326
    )
    path = tmp_path / name
    frame.to_file(path)
    return path.read_bytes()


def test_arctic_data_center_client_downloads_the_matching_files(tmp_path: Path) -> None:
    level2 = _gpkg(tmp_path, "src_level2.gpkg")
    files = {
        "DARTS_v1_features_level2.gpkg": level2,
        "DARTS_v1_features_level1.gpkg": _gpkg(tmp_path, "src_level1.gpkg"),
        "DARTS_v1_coverage_level2.gpkg": _gpkg(tmp_path, "src_coverage.gpkg"),
        "README_level2.txt": b"not data",
    }
    api = DataOne(files, darts.DARTS_PACKAGE)
    folder = tmp_path / "darts"
    with serve(api) as url:
        client = darts.ArcticDataCenterDartsClient(url, config=FAST)
        found = client.files(folder)  # the coverage layer matches *level2.* but is left out
        assert [p.name for p in found] == ["DARTS_v1_features_level2.gpkg"]
        assert found[0].read_bytes() == level2
        assert len(darts.read_darts(found)) == 1
        client.files(folder)  # present files are kept, not fetched again
        coverage = client.coverage_files(folder)
        assert [p.name for p in coverage] == ["DARTS_v1_coverage_level2.gpkg"]
        assert darts.read_coverage(coverage)["year"].tolist() == [2020]
    assert api.fetched == ["DARTS_v1_features_level2.gpkg", "DARTS_v1_coverage_level2.gpkg"]
    without = DataOne({"DARTS_v1_features_level2.gpkg": level2}, darts.DARTS_PACKAGE)
    with serve(without) as url:
        assert darts.ArcticDataCenterDartsClient(url, config=FAST).coverage_files(folder) == []


def test_a_download_that_is_not_a_geopackage_is_refused(tmp_path: Path) -> None:
    api = DataOne({"x_level2.gpkg": b"<html>maintenance</html>"}, darts.DARTS_PACKAGE)
    with serve(api) as url, pytest.raises(ValueError, match=r"does not start like a \.gpkg"):
        darts.ArcticDataCenterDartsClient(url, config=FAST).files(tmp_path)
    assert not list(tmp_path.iterdir())


def test_an_unreachable_archive_names_the_offline_way(tmp_path: Path) -> None:
    client = darts.ArcticDataCenterDartsClient("http://127.0.0.1:9", config=FAST)
    with pytest.raises(ConnectionError, match="could not list the DARTS package") as info:
        client.files(tmp_path)
    assert "make demo" in _one_line(info.value)
