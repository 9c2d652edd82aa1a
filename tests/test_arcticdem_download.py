"""ArcticDEM tile downloads from a loopback HTTP server: resume, integrity, missing tiles."""

import hashlib
import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
from loopback import serve

from entropice_core.config import SAMPLE_REGION_BBOX
from entropice_core.ingest.arcticdem import (
    OfflineArcticDEMClient,
    check_tile,
    check_tile_quickly,
    fetch_tiles,
    find_tiles,
    read_tile_index,
    tile_path,
    tile_rowcol,
    tile_url,
    tiles_for,
)
from entropice_core.io.download import DownloadConfig, NotOnServer, download

FAST = DownloadConfig(retries=3, backoff_s=0.0, timeout_s=10)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bucket(region):
    """The sample tiles in the bucket's layout: (root folder, tile files)."""
    _, files, _ = region
    return files.arcticdem[0].parents[1], list(files.arcticdem)


def test_download_resumes_after_a_dropped_connection(bucket, tmp_path):
    root, tiles = bucket
    source = tiles[0]
    row, col = tile_rowcol(source)
    with serve(root) as (server, url):
        server.drop_after = 100_000
        target = tile_path(tmp_path, row, col)
        download(tile_url(url, row, col), target, FAST, check_tile)
    assert server.drops == 1
    assert server.ranges == [None, "bytes=100000-"]  # the second request asked for the rest
    assert sha256(target) == sha256(source)
    assert not list(target.parent.glob(".*part"))


def test_a_server_ignoring_range_restarts_the_file(bucket, tmp_path):
    root, tiles = bucket
    row, col = tile_rowcol(tiles[1])
    with serve(root) as (server, url):
        server.drop_after, server.honour_range = 50_000, False
        target = download(tile_url(url, row, col), tmp_path / "t.tif", FAST, check_tile)
    assert sha256(target) == sha256(tiles[1])


def test_a_corrupt_file_is_refused_and_deleted(bucket, tmp_path):
    _root, tiles = bucket
    row, col = tile_rowcol(tiles[0])
    broken = tmp_path / "bucket"
    path = tile_path(broken, row, col)
    path.parent.mkdir(parents=True)
    data = bytearray(tiles[0].read_bytes())
    data[len(data) // 2 : len(data) // 2 + 20_000] = b"\0" * 20_000  # damage compressed blocks
    path.write_bytes(bytes(data))
    target = tile_path(tmp_path / "out", row, col)
    with serve(broken) as (_, url), pytest.raises(ValueError, match=r"unusable.*download it again"):
        download(tile_url(url, row, col), target, FAST, check_tile)
    assert not target.exists() and not list(target.parent.glob(".*"))


def test_missing_tiles_are_reported_and_retries_give_up_with_the_part_kept(bucket, tmp_path):
    root, _tiles = bucket
    with serve(root) as (_, url), pytest.raises(NotOnServer):
        download(f"{url}/1_1/nothing.tif", tmp_path / "x.tif", FAST)
    dead = "http://127.0.0.1:9"  # discard port: connection refused
    with pytest.raises(ConnectionError, match="failed after 2 attempts"):
        download(dead + "/x.tif", tmp_path / "x.tif", FAST.model_copy(update={"retries": 1}))


def test_fetch_tiles_downloads_the_area_keeps_what_is_there_and_uses_the_index(bucket, tmp_path):
    root, tiles = bucket
    wanted = tiles_for(SAMPLE_REGION_BBOX)
    keep = {tile_rowcol(p) for p in tiles[:3]}
    index_path = tmp_path / "index.parquet"
    gpd.GeoDataFrame(
        {"dem_id": [f"{r}_{c}_32m_v4.1" for r, c in keep] + ["99_99_32m_v4.1"]},
        geometry=[shapely.Point(0, 0)] * (len(keep) + 1),
        crs="EPSG:3413",
    ).to_parquet(index_path)
    index = read_tile_index(index_path)
    assert keep <= index and (99, 99) in index
    out = tmp_path / "tiles"
    with serve(root) as (server, url):
        first = fetch_tiles(SAMPLE_REGION_BBOX, out, url, index, FAST, show_progress=False)
        again = fetch_tiles(SAMPLE_REGION_BBOX, out, url, index, FAST, show_progress=False)
    assert (
        {tile_rowcol(p) for p in first.present}
        == keep
        == {tile_rowcol(p) for p in first.downloaded}
    )
    assert again.downloaded == [] and len(again.present) == 3
    assert len(server.ranges) == 3  # nothing fetched twice
    # Without an index every tile of the area is asked for; absent ones are missing.
    (root_subset := tmp_path / "subset").mkdir()
    for path in tiles[:2]:
        (root_subset / path.parent.name).mkdir()
        (root_subset / path.parent.name / path.name).write_bytes(path.read_bytes())
    with serve(root_subset) as (_, url):
        result = fetch_tiles(SAMPLE_REGION_BBOX, tmp_path / "t2", url, None, FAST, False)
    assert len(result.present) == 2 and len(result.missing) == len(wanted) - 2


def test_stac_items_name_the_files_and_a_tile_without_item_is_missing(bucket, tmp_path):
    _, tiles = bucket
    served = tmp_path / "stac"
    (row, col), (other_row, other_col) = tile_rowcol(tiles[0]), tile_rowcol(tiles[1])
    # The item points at a file elsewhere (relative href), so the template alone would fail.
    moved = served / "files" / "dem.tif"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(tiles[0].read_bytes())
    item = served / f"{row}_{col}" / f"{row}_{col}_32m_v4.1.json"
    item.parent.mkdir()
    item.write_text(
        json.dumps({"type": "Feature", "assets": {"dem": {"href": "../files/dem.tif"}}})
    )
    index = {(row, col), (other_row, other_col)}
    with serve(served) as (_, url):
        result = fetch_tiles(SAMPLE_REGION_BBOX, tmp_path / "out", url, index, FAST, False, True)
    assert [tile_rowcol(p) for p in result.present] == [(row, col)]
    assert result.missing == [(other_row, other_col)]
    assert sha256(result.present[0]) == sha256(tiles[0])
    assert (result.present[0].parent / item.name).exists()  # kept for offline reruns


def test_the_pgc_client_of_the_resource_downloads_and_the_offline_one_reuses(bucket, tmp_path):
    from entropice_core.config import AreaOfInterest
    from entropice_dagster.resources import ArcticDEMSourceResource

    root, tiles = bucket
    area, folder = AreaOfInterest.sample_region(), tmp_path / "tiles"
    with serve(root) as (server, url):
        pgc = ArcticDEMSourceResource(client="pgc", base_url=url, folder=str(folder), retries=1)
        fetched = pgc.fetch(tmp_path, area)
    assert sorted(map(sha256, fetched.downloaded)) == sorted(map(sha256, tiles))
    assert len(server.ranges) == len(tiles_for(SAMPLE_REGION_BBOX))  # every tile asked once
    # offline, the same folder serves as a mirror: nothing downloaded, the same tiles found
    offline = ArcticDEMSourceResource(folder=str(folder)).fetch(tmp_path, area)
    assert sorted(offline.present) == sorted(fetched.present) and not offline.downloaded
    assert sorted(offline.missing) == sorted(fetched.missing)


def test_a_truncated_tile_on_disk_is_named_with_the_fix(bucket, tmp_path):
    """A tile cut short (an interrupted copy, a full disk) fails when tiles are found or
    fetched, naming the file and what to do, not later as `RasterioIOError: Read failed`."""
    root, tiles = bucket
    folder = tmp_path / "tiles"
    good, cut = tiles[0], tiles[1]
    for source in (good, cut):
        target = tile_path(folder, *tile_rowcol(source))
        target.parent.mkdir(parents=True)
        target.write_bytes(source.read_bytes())
    damaged = tile_path(folder, *tile_rowcol(cut))
    damaged.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.9)])
    check_tile_quickly(tile_path(folder, *tile_rowcol(good)))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        check_tile_quickly(damaged)

    with pytest.raises(ValueError) as offline:
        OfflineArcticDEMClient().fetch(SAMPLE_REGION_BBOX, folder)
    text = str(offline.value)
    assert f"1 ArcticDEM tile(s) on disk are damaged or truncated: {damaged}:" in text
    assert "Delete them and run again" in text and "entropice sample --force" in text
    with pytest.raises(ValueError, match="damaged or truncated"):
        find_tiles(folder, SAMPLE_REGION_BBOX)
    index = {tile_rowcol(good), tile_rowcol(cut)}
    with serve(root) as (_, url), pytest.raises(ValueError) as pgc:
        fetch_tiles(SAMPLE_REGION_BBOX, folder, url, index, FAST, show_progress=False)
    assert str(damaged) in str(pgc.value)
    assert "Delete them and run again: the 'pgc' client downloads them anew" in str(pgc.value)
    damaged.unlink()  # the fix the message names
    with serve(root) as (_, url):
        fetched = fetch_tiles(SAMPLE_REGION_BBOX, folder, url, index, FAST, show_progress=False)
    assert fetched.downloaded == [damaged] and sha256(damaged) == sha256(cut)


def test_an_outage_stops_at_the_retry_bound_and_logs_each_attempt(tmp_path, monkeypatch, caplog):
    import types

    from entropice_core.io import download as download_module

    now = [0.0]
    fake = types.SimpleNamespace(
        monotonic=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    monkeypatch.setattr(download_module, "time", fake)
    config = DownloadConfig(retries=20, backoff_s=10.0, timeout_s=5, retry_timeout_s=100)
    dead = "http://127.0.0.1:9/1_1/x.tif"  # discard port: connection refused
    secret = {"Authorization": "Bearer s3cret"}
    with (
        caplog.at_level("INFO", logger=download_module.__name__),
        pytest.raises(ConnectionError) as err,
    ):
        download(dead, tmp_path / "x.tif", config, headers=secret)
    # waits 10, 20, 40 s; the next (80 s) would end past the 100 s bound
    assert now[0] == 70.0
    assert "failed after 4 attempts in 70 s and the 100 s retry bound" in str(err.value)
    attempts = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    retries = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert attempts == [f"GET {dead} -> {tmp_path / 'x.tif'}: attempt {n}/21" for n in (1, 2, 3, 4)]
    assert len(retries) == 3 and "retrying in 40 s" in retries[-1]
    assert "s3cret" not in caplog.text and "s3cret" not in str(err.value)
