"""The terrain stage on a one-tile part of the sample region: tiles, derivatives in Icechunk,
per-cell statistics of every derivative."""

import dagster as dg
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import xarray as xr
import xdggs
import xrspatial

from entropice_core.ingest.arcticdem import NODATA, tile_path, tiles_for
from entropice_core.io.icechunk import read_dataset_version
from entropice_core.io.zarr import read_dataset
from entropice_core.spatial.pixelmap import CELL_SEGMENT_DEG
from entropice_dagster.assets import all_assets

KEY = "healpix_10"
#: A box inside tile 41_16 of the sample region, so the test computes one tile.
BBOX = (-136.4, 67.5, -135.9, 67.75)
AOI = ",".join(map(str, BBOX))
SELECTION = [
    "watermask",
    "grid_cells",
    "arcticdem_tiles",
    "terrain_derivatives",
    "terrain_features",
]


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture(scope="module")
def terrain(region, make_resources, tmp_path_factory):
    _, files, _ = region
    assert tiles_for(BBOX) == [(41, 16)]
    data_dir = tmp_path_factory.mktemp("terrain")
    source = files.arcticdem[0].parents[1]
    (data_dir / "sources").mkdir()
    (data_dir / "sources" / "arcticdem").symlink_to(source)
    resources = make_resources(data_dir, aoi=AOI)
    result = dg.materialize(all_assets, selection=SELECTION, partition_key=KEY, resources=resources)
    return data_dir, source, resources, result


@pytest.mark.slow
def test_terrain_assets_materialise_with_passing_check(terrain):
    data_dir, _, _, result = terrain
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["elevation_plausible"]
    tiles = metadata(result, "arcticdem_tiles")
    assert tiles["tiles"] == 1 and tiles["missing_tiles"] == [] and tiles["downloaded"] == 0
    derivatives = metadata(result, "terrain_derivatives")
    features_meta = metadata(result, "terrain_features")
    assert features_meta["derivatives_snapshot_id"] == derivatives["icechunk_snapshot_id"]
    rasters = read_dataset_version(data_dir / "arcticdem" / "derivatives.icechunk", None)
    assert set(derivatives["variables"]) <= set(rasters.data_vars)
    assert derivatives["slope_preview"].startswith("![slope, every 32nd pixel](data:image/png")
    features = xdggs.decode(read_dataset(data_dir / "arcticdem" / f"features_{KEY}.zarr"))
    cells = gpd.read_parquet(data_dir / "grids" / f"{KEY}.parquet")
    assert set(features["cell_ids"].to_numpy()) == set(cells["cell_id"])
    for name in set(derivatives["variables"]) - {"aspect"}:
        for stat in ("mean", "std", "min", "max", "median", "quantile"):
            assert f"{name}_{stat}" in features, f"{name}_{stat}"
    assert "aspect_mean" not in features
    assert list(features["quantile"].to_numpy()) == [0.25, 0.75]


@pytest.mark.slow
def test_every_materialisation_is_a_new_snapshot_and_old_ones_stay_readable(terrain):
    data_dir, _, resources, result = terrain
    first = metadata(result, "terrain_derivatives")["icechunk_snapshot_id"]
    again = dg.materialize(all_assets, selection=["terrain_derivatives"], resources=resources)
    second = metadata(again, "terrain_derivatives")["icechunk_snapshot_id"]
    assert second != first
    repo = data_dir / "arcticdem" / "derivatives.icechunk"
    old, new = read_dataset_version(repo, None, first), read_dataset_version(repo, None, second)
    window = {"y": slice(1500, 1600), "x": slice(1500, 1600)}
    xr.testing.assert_equal(old["slope"][window].load(), new["slope"][window].load())


@pytest.mark.slow
def test_cell_medians_equal_the_sampled_pixels_inside_the_cell(terrain):
    """Independent: the tile read with rasterio, slope from xarray-spatial, the documented
    pixel sample (every stride-th pixel from stride // 2), pixel centres inside the cell."""
    data_dir, source, _, result = terrain
    stride = metadata(result, "terrain_features")["pixel_stride"]
    features = read_dataset(data_dir / "arcticdem" / f"features_{KEY}.zarr")
    cells = gpd.read_parquet(data_dir / "grids" / f"{KEY}.parquet").set_index("cell_id")
    with rasterio.open(tile_path(source, 41, 16)) as src:
        z = src.read(1).astype(np.float32)
        transform = src.transform
    z[z == NODATA] = np.nan
    dem = xr.DataArray(z, dims=("y", "x"))
    dem = dem.assign_coords(y=transform.f - 32 * (np.arange(3125) + 0.5))
    dem = dem.assign_coords(x=transform.c + 32 * (np.arange(3125) + 0.5))
    slope = xrspatial.slope(dem).to_numpy()
    sample = (slice(stride // 2, None, stride), slice(stride // 2, None, stride))
    # Sampled pixels are stride times larger and centred on the pixels they sample.
    offset = stride // 2 + 0.5 - stride / 2
    shift = rasterio.Affine.translation(offset, offset)
    sampled_transform = transform @ shift @ rasterio.Affine.scale(stride)
    checked = 0
    for cell_id in features["cell_ids"].to_numpy():
        # Densified as the aggregation engine does, so edge pixels are decided alike.
        polygon = cells.loc[[cell_id]].geometry.segmentize(CELL_SEGMENT_DEG).to_crs(3413).iloc[0]
        inside = rasterio.features.geometry_mask(
            [polygon], z[sample].shape, sampled_transform, invert=True
        )
        heights, slopes = z[sample][inside], slope[sample][inside]
        if np.isfinite(slopes).sum() < 200:
            continue
        cell = features.sel(cell_ids=cell_id)
        assert float(cell["elevation_median"]) == pytest.approx(np.nanmedian(heights), abs=1e-3)
        assert float(cell["slope_median"]) == pytest.approx(np.nanmedian(slopes), abs=1e-2)
        checked += 1
    assert checked >= 3
