"""terrain_features on the sample region: elevation statistics per cell from the DEM tiles."""

import dagster as dg
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import xdggs
from rasterio.windows import from_bounds

from entropice_core.io.zarr import read_dataset
from entropice_dagster.assets import all_assets

KEY = "h3_4"


@pytest.fixture(scope="module")
def terrain(region, make_resources):
    data_dir, files, _ = region
    result = dg.materialize(
        all_assets,
        selection=["watermask", "grid_cells", "terrain_features"],
        partition_key=KEY,
        resources=make_resources(data_dir),
    )
    return data_dir, files, result


@pytest.mark.slow
def test_terrain_features_materialise_with_passing_check(terrain):
    data_dir, _, result = terrain
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["elevation_plausible"]
    features = xdggs.decode(read_dataset(data_dir / "arcticdem" / f"features_{KEY}.zarr"))
    cells = gpd.read_parquet(data_dir / "grids" / f"{KEY}.parquet")
    assert set(features["cell_ids"].to_numpy()) == set(cells["cell_id"])
    assert {"elevation_mean", "elevation_median", "elevation_quantile"} <= set(features)
    assert list(features["quantile"].to_numpy()) == [0.25, 0.75]


@pytest.mark.slow
def test_cell_means_match_the_pixels_inside_the_cell(terrain):
    """Independent: mean of the DEM pixels whose centre lies in the projected cell."""
    data_dir, files, _ = terrain
    features = read_dataset(data_dir / "arcticdem" / f"features_{KEY}.zarr")
    cells = gpd.read_parquet(data_dir / "grids" / f"{KEY}.parquet").set_index("cell_id")
    mean = features["elevation_mean"].to_series()
    checked = 0
    for cell_id in mean.dropna().index[:6]:
        polygon = cells.loc[[cell_id]].geometry.segmentize(0.01).to_crs(3413).iloc[0]
        values = []
        for path in files.arcticdem:
            with rasterio.open(path) as src:
                left, bottom, right, top = src.bounds
                if not polygon.intersects(shapely.box(left, bottom, right, top)):
                    continue
                window = from_bounds(*polygon.bounds, src.transform).round_offsets().round_lengths()
                data = src.read(1, window=window, boundless=True, fill_value=src.nodata)
                inside = rasterio.features.geometry_mask(
                    [polygon], data.shape, src.window_transform(window), invert=True
                )
                picked = data[inside & (data != src.nodata)]
                values.append(picked)
        pixels = np.concatenate(values)
        if pixels.size < 1000:
            continue
        # Exact coverage weights edge pixels; the pixel-centre mean differs only at the edges.
        assert mean[cell_id] == pytest.approx(pixels.mean(), rel=5e-3)
        checked += 1
    assert checked >= 3
