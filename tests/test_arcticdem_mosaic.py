"""The lazy ArcticDEM mosaic equals the tiles read one by one with rasterio."""

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from entropice_core.config import SAMPLE_REGION_BBOX
from entropice_core.ingest.arcticdem import (
    NODATA,
    find_tiles,
    open_mosaic,
    tile_bounds,
    tile_of,
    tile_path,
    tiles_for,
)


def test_tile_index_round_trips():
    for row, col in [(39, 15), (42, 18), (1, 1)]:
        left, bottom, right, top = tile_bounds(row, col)
        assert tile_of(left + 1, bottom + 1) == (row, col)
        assert tile_of(right - 1, top - 1) == (row, col)
    assert tile_path("x", 36, 24).as_posix() == "x/36_24/36_24_32m_v4.1_dem.tif"


def test_mosaic_equals_each_tile(region):
    _, files, _ = region
    mosaic = open_mosaic(list(files.arcticdem))
    left, top = float(mosaic.x[0]) - 16, float(mosaic.y[0]) + 16
    for path in files.arcticdem[:3]:
        with rasterio.open(path) as src:
            window = Window(1000, 1200, 300, 200)
            expected = src.read(1, window=window).astype(float)
            x0, y0 = src.xy(1200, 1000, offset="ul")
        expected[expected == NODATA] = np.nan
        col = round((x0 - left) / 32)
        row = round((top - y0) / 32)
        got = mosaic[row : row + 200, col : col + 300].to_numpy()
        np.testing.assert_array_equal(got, expected)


def test_tiles_for_the_sample_box_are_the_written_tiles(region):
    _, files, _ = region
    written = {tuple(int(v) for v in p.parent.name.split("_")) for p in files.arcticdem}
    assert set(tiles_for(SAMPLE_REGION_BBOX)) == written


def test_missing_tiles_are_nan_and_bad_tiles_are_refused(region, tmp_path):
    _, files, _ = region
    mosaic = open_mosaic([files.arcticdem[0], files.arcticdem[-1]])
    assert mosaic.shape[0] > 3125 and mosaic.shape[1] > 3125
    assert (
        np.isnan(mosaic[:3125, 3125:6250].to_numpy()).all()
        or np.isnan(mosaic[3125:6250, :3125].to_numpy()).all()
    )
    bare = tmp_path / "1_1" / "1_1_32m_v4.1_dem.tif"
    bare.parent.mkdir()
    with rasterio.open(
        bare, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32"
    ) as dst:
        dst.write(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="has no CRS"):
        open_mosaic([bare])


def test_find_tiles_reports_missing_tiles_and_refuses_none(region, tmp_path):
    _, files, _ = region
    present, missing = find_tiles(files.arcticdem[0].parents[1], SAMPLE_REGION_BBOX)
    assert sorted(present) == sorted(files.arcticdem) and missing == []
    with pytest.raises(FileNotFoundError, match="make demo"):
        find_tiles(tmp_path, SAMPLE_REGION_BBOX)
    one = tmp_path / files.arcticdem[0].parent.name
    one.mkdir()
    (one / files.arcticdem[0].name).write_bytes(files.arcticdem[0].read_bytes())
    present, missing = find_tiles(tmp_path, SAMPLE_REGION_BBOX)
    assert len(present) == 1 and len(missing) == len(files.arcticdem) - 1
