"""AlphaEarth COGs from GCS, offline: a loopback server plays the GCS JSON API (listing pages,
requester pays, bearer token, ``alt=media`` with Range) over the sample region's COGs."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from loopback import Server, serve
from rasterio.transform import from_origin

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.ingest import alphaearth as ae
from entropice_core.ingest.gcs import GcsBucket, service_account_token
from entropice_core.io.download import DownloadConfig
from entropice_core.spatial.grids import grid_cells

FAST = DownloadConfig(retries=3, backoff_s=0.0, timeout_s=10)
TOKEN = "ya29.not-a-real-token-0123456789"
PROJECT = "my-billing-project"
#: A box of the sample region across UTM zones 8 and 9 (the region also has zone 7).
BBOX = (-133.2, 67.7, -131.0, 68.3)
YEARS = [2019, 2022]
ALL_LAND = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)
ENV = (ae.ENV_PROJECT, ae.ENV_KEY_FILE, ae.ENV_KEY_DATA, ae.ENV_TOKEN)


class FakeGcs(Server):
    """The GCS JSON API of one requester-pays bucket holding the files under ``root``.

    Listings come ``page_size`` objects a page; every request needs ``userProject`` and the
    bearer token (400 / 401 otherwise, as GCS answers). ``extra`` objects are listed but not
    COGs (a README, a file in a subfolder): the client must skip them.
    """

    def __init__(self, root: Path, bucket: str = ae.GCS_BUCKET, page_size: int = 2) -> None:
        super().__init__(root)
        self.bucket, self.page_size = bucket, page_size
        self.objects = {p.relative_to(root).as_posix(): p.read_bytes() for p in _files(root)}
        self.listings: list[dict[str, list[str]]] = []
        self.media: list[str] = []  # download requests (whole file or the rest of it)
        self.header_reads: list[str] = []  # bounded range requests

    def resolve(self, handler: BaseHTTPRequestHandler) -> bytes | int:
        url = urlsplit(handler.path)
        query = parse_qs(url.query)
        if query.get("userProject") != [PROJECT]:
            return 400
        if handler.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401
        base = f"/storage/v1/b/{self.bucket}/o"
        if url.path == base:
            self.listings.append(query)
            prefix = query.get("prefix", [""])[0]
            names = sorted(n for n in self.objects if n.startswith(prefix))
            start = int(query.get("pageToken", ["0"])[0])
            page = names[start : start + self.page_size]
            answer: dict = {"kind": "storage#objects"}
            if page:
                answer["items"] = [{"name": n, "size": str(len(self.objects[n]))} for n in page]
            if start + self.page_size < len(names):
                answer["nextPageToken"] = str(start + self.page_size)
            return json.dumps(answer).encode()
        if url.path.startswith(base + "/") and query.get("alt") == ["media"]:
            name = unquote(url.path[len(base) + 1 :])
            bounded = not handler.headers.get("Range", "-").endswith("-")
            (self.header_reads if bounded else self.media).append(name)
            return self.objects.get(name, 404)
        return 404

    def droppable(self, handler: BaseHTTPRequestHandler) -> bool:
        """The first request of a download (not a header read, not a resumed request)."""
        return "alt=media" in handler.path and handler.headers.get("Range") is None


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bucket_root(region, tmp_path_factory) -> Path:
    """The sample region's COGs plus two objects that are not COGs, in the bucket's layout."""
    _, files, _ = region
    cogs = files.alphaearth[0].parents[2]
    root = tmp_path_factory.mktemp("bucket")
    for path in files.alphaearth:
        target = root / path.relative_to(cogs)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    (root / "2019" / "8N" / "README.txt").write_text("not a COG")
    far = root / "2019" / "8N" / "far_north.tiff"  # in zone 8, near 79 N: away from the cells
    with rasterio.open(
        far, "w", driver="COG", width=64, height=64, count=64, dtype="int8", nodata=-128,
        crs="EPSG:32608", transform=from_origin(500_000, 8_800_000, 800, 800),
    ) as out:  # fmt: skip
        out.write(np.full((64, 64, 64), 5, dtype=np.int8))
    (root / "2019" / "8N" / "old").mkdir()
    (root / "2019" / "8N" / "old" / "x.tiff").write_bytes(b"not here")
    return root


@pytest.fixture(scope="module")
def cells() -> gpd.GeoDataFrame:
    box = AreaOfInterest.from_bbox(",".join(str(v) for v in BBOX))
    return grid_cells(GridSpec.from_key("h3_5"), box, ALL_LAND)


@pytest.fixture
def no_env(monkeypatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_gcs_mirror_resumes_skips_what_is_there_and_equals_the_source(
    bucket_root: Path, cells, tmp_path: Path, caplog
) -> None:
    mirror = tmp_path / "sources" / "alphaearth"
    spec = GridSpec.from_key("h3_5")
    caplog.set_level(logging.INFO, logger="entropice_core")
    with serve(FakeGcs(bucket_root)) as (server, url):
        server.drop_after = 100_000  # the first download is cut after 100 kB
        client = ae.GcsCogClient(mirror, PROJECT, token=TOKEN, endpoint=url, download=FAST)
        result = client.embeddings(cells, spec, YEARS)
        first = client.last_fetch
        assert first is not None and server.drops == 1
        # the cut file was resumed: its second request asked for the rest only
        assert server.ranges.count("bytes=100000-") == 1
        media_first = list(server.media)
        again = ae.GcsCogClient(mirror, PROJECT, token=TOKEN, endpoint=url, download=FAST)
        again.embeddings(cells, spec, YEARS)
        assert again.last_fetch is not None and again.last_fetch.downloaded == []
        assert server.media == media_first  # the second call downloaded nothing
    wanted = {
        p.relative_to(bucket_root).as_posix()
        for y in YEARS
        for z in (8, 9)
        for p in (bucket_root / str(y) / f"{z}N").glob("sample_*.tiff")
    }
    assert len(wanted) == 4
    mirrored = {p.relative_to(mirror).as_posix() for p in _files(mirror)}
    assert mirrored == wanted  # zones 8 and 9 only; no README, no subfolder, no part file
    assert {p.relative_to(mirror).as_posix() for p in first.downloaded} == wanted
    assert first.skipped == ["2019/8N/far_north.tiff"]  # its header says it is far away
    assert "2019/8N/far_north.tiff" not in server.media
    assert "2019/8N/far_north.tiff" in server.header_reads
    for name in wanted:
        assert sha256(mirror / name) == sha256(bucket_root / name)
    # a zone with two objects more than the page size came in two pages
    paged = [q for q in server.listings if q["prefix"] == ["2019/8N/"]]
    assert [q.get("pageToken") for q in paged[:2]] == [None, ["2"]]
    # the means from the mirror are those from the original folder
    whole = ae.CogClient(bucket_root).embeddings(cells, spec, YEARS).dataset
    for band in ("A00", "A33", "A63", "valid_fraction"):
        np.testing.assert_array_equal(result.dataset[band], whole[band])
    texts = [r.getMessage() for r in caplog.records] + [repr(client), repr(client.bucket)]
    assert any("downloaded" in t for t in texts)
    assert not any(TOKEN in t for t in texts)


def test_requests_without_billing_project_or_token_are_refused(bucket_root, tmp_path) -> None:
    with serve(FakeGcs(bucket_root)) as (_, url):
        no_project = GcsBucket(ae.GCS_BUCKET, token=TOKEN, endpoint=url, config=FAST)
        with pytest.raises(ConnectionError, match=r"HTTP 400.*billing project") as info:
            no_project.list("2019/8N/")
        wrong = GcsBucket(
            ae.GCS_BUCKET, user_project=PROJECT, token="other", endpoint=url, config=FAST
        )
        with pytest.raises(ConnectionError, match="HTTP 401"):
            wrong.list("2019/8N/")
        with pytest.raises(ConnectionError, match="HTTP 401") as download_error:
            obj = GcsBucket(ae.GCS_BUCKET, user_project=PROJECT, token=TOKEN, endpoint=url)
            (found,) = [o for o in obj.list("2019/9N/") if o.name.endswith(".tiff")]
            wrong.download(found, tmp_path / "x.tiff")
    assert TOKEN not in str(info.value) and "other" not in str(download_error.value)


def test_missing_project_or_credentials_are_one_line_naming_the_variables(tmp_path, no_env) -> None:
    for project, token in ((None, None), (PROJECT, None), (None, TOKEN)):
        with pytest.raises(ae.CredentialsMissing) as info:
            ae.GcsCogClient(tmp_path, project, token=token)
        text = str(info.value)
        assert "\n" not in text and "requester pays" in text
        assert (ae.ENV_PROJECT in text) == (project is None)
        assert all(name in text for name in ENV[1:]) == (token is None)


def test_a_service_account_key_needs_google_auth_named_by_its_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "google.oauth2", None)
    with pytest.raises(ImportError, match="earthengine"):
        service_account_token(key_data="{}")
    with pytest.raises(ImportError, match="earthengine"):
        ae.GcsCogClient(Path("."), PROJECT, key_data="{}")


def test_zones_of_cells() -> None:
    assert ae.zones_of_cells(np.array([BBOX])) == [(8, True), (9, True)]
    assert ae.zones_of_cells(np.array([[-1.0, -1.0, 1.0, 1.0]])) == [
        (30, False),
        (30, True),
        (31, False),
        (31, True),
    ]
    assert len(ae.zones_of_cells(np.array([[179.0, 70.0, -179.0, 71.0]]))) == 60


def test_dagster_gcs_client_mirrors_then_aggregates_and_hides_the_token(
    monkeypatch, bucket_root: Path, cells, tmp_path: Path, no_env, dagster_instance
) -> None:
    """``EarthEngineResource(client="gcs")`` with the token and project from the environment
    (as ``project_resources`` sets them), materialised against the fake GCS: the files of the
    cells' zones are mirrored once, then read in one pass."""
    import dagster as dg

    from entropice_core.io.geoparquet import write_geoparquet
    from entropice_core.layout import Layout
    from entropice_dagster.assets.alphaearth import alphaearth_statistics
    from entropice_dagster.io_managers import ZARR_IO_MANAGER_KEY, ZarrIOManager
    from entropice_dagster.resources import (
        DataDirResource,
        EarthEngineResource,
        project_resources,
    )

    monkeypatch.setenv(ae.ENV_TOKEN, TOKEN)
    monkeypatch.setenv(ae.ENV_PROJECT, PROJECT)
    arctic = project_resources(tmp_path, "arctic")["earth_engine"]
    assert isinstance(arctic.access_token, dg.EnvVar) and TOKEN not in repr(arctic)

    write_geoparquet(cells, Layout(tmp_path).grid_cells("h3_5"))
    with serve(FakeGcs(bucket_root)) as (server, url):
        resource = EarthEngineResource(
            client="gcs",
            project=dg.EnvVar(ae.ENV_PROJECT),
            access_token=dg.EnvVar(ae.ENV_TOKEN),
            gcs_endpoint=url,
            max_cells=40,
            max_extent_km=150,
        )
        result = dg.materialize(
            [alphaearth_statistics],
            instance=dagster_instance,
            resources={
                "earth_engine": resource,
                "data_dir": DataDirResource(path=str(tmp_path)),
                ZARR_IO_MANAGER_KEY: ZarrIOManager(data_dir=str(tmp_path)),
            },
            run_config={"ops": {"alphaearth_statistics": {"config": {"years": [2021]}}}},
        )
    assert result.success
    assert len(server.media) == 2  # 2021 in zones 8 and 9
    mirror = tmp_path / "sources" / "alphaearth" / "2021"
    assert sorted(p.parent.name for p in mirror.glob("*/*.tiff")) == ["8N", "9N"]
    (materialization,) = result.asset_materializations_for_node("alphaearth_statistics")
    assert materialization.metadata["requests"].value == 1  # one pass: h3_5, 2021
    texts = [str(record) for record in dagster_instance.all_logs(result.run_id)]
    texts.append(json.dumps({k: str(v) for k, v in materialization.metadata.items()}))
    texts.append(json.dumps(dagster_instance.get_run_by_id(result.run_id).run_config, default=str))
    assert not any(TOKEN in text for text in texts)


def test_dagster_gcs_client_without_credentials_is_one_line(tmp_path, no_env) -> None:
    from entropice_dagster.resources import project_resources

    resource = project_resources(tmp_path, "arctic")["earth_engine"]
    with pytest.raises(ae.CredentialsMissing) as info:
        resource.model_copy(update={"client": "gcs"}).embedding_client(tmp_path)
    text = str(info.value)
    assert "\n" not in text and all(name in text for name in ENV)


@pytest.mark.parametrize(
    "options",
    [{"driver": "COG"}, {"driver": "GTiff"}, {"driver": "GTiff", "BIGTIFF": "YES"}],
    ids=["cog", "gtiff-ifd-at-end", "bigtiff"],
)
def test_geotiff_footprint_from_header_reads_only(options, tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    with rasterio.open(
        path, "w", width=50, height=70, count=64, dtype="int8", nodata=-128,
        crs="EPSG:32609", transform=from_origin(400_000, 7_600_000, 10, 10), **options,
    ) as out:  # fmt: skip
        out.write(np.zeros((64, 70, 50), dtype=np.int8))
    blob = path.read_bytes()
    reads: list[int] = []

    def read(offset: int, length: int) -> bytes:
        reads.append(length)
        return blob[offset : offset + length]

    with rasterio.open(path) as src:
        assert ae.geotiff_footprint(read) == ("EPSG:32609", tuple(src.bounds))
    assert sum(reads) < 4096  # the header, not the pixels
    assert ae.geotiff_footprint(lambda o, n: b"not a tiff at all"[o : o + n]) is None


def test_a_file_whose_header_cannot_be_read_is_downloaded(
    bucket_root: Path, cells, tmp_path
) -> None:
    """A server ignoring Range gives no footprint: every COG of the zones comes down."""
    with serve(FakeGcs(bucket_root)) as (server, url):
        server.honour_range = False
        bucket = GcsBucket(ae.GCS_BUCKET, user_project=PROJECT, token=TOKEN, endpoint=url)
        fetched = ae.fetch_cogs(bucket, cells.geometry.bounds.to_numpy(), [2019], tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in fetched.downloaded}
    assert "2019/8N/far_north.tiff" in names and len(names) == 3 and fetched.skipped == []
    far = tmp_path / "2019" / "8N" / "far_north.tiff"
    assert sha256(far) == sha256(bucket_root / "2019" / "8N" / "far_north.tiff")
