"""The terrain stage of the end-to-end run on the sample region (``sample_graph``): tiles,
derivatives in Icechunk, per-cell statistics of every derivative."""

import dagster as dg
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
import xarray as xr
import xdggs
import xrspatial
from conftest import GRAPH_LEVELS

from entropice_core.ingest.arcticdem import NODATA, tile_path
from entropice_core.io.icechunk import read_dataset_version
from entropice_core.io.zarr import read_dataset
from entropice_core.spatial.pixelmap import CELL_SEGMENT_DEG
from entropice_core.terrain.overviews import GROUP, stored_sample
from entropice_dagster.assets import all_assets
from entropice_dagster.io_managers import ZARR_IO_MANAGER_KEY

#: The tile whose cells are recomputed independently, and a level with many cells inside it.
TILE = (41, 16)
KEY = "h3_5"
REPO = ("arcticdem", "derivatives.icechunk")


@pytest.mark.slow
@pytest.mark.parametrize("key", GRAPH_LEVELS)
def test_terrain_assets_materialise_with_passing_check(sample_graph, key):
    data_dir = sample_graph.data_dir
    checks = sample_graph.checks("terrain_features", key)
    assert {name: e.passed for name, e in checks.items()} == {"elevation_plausible": True}
    tiles = sample_graph.metadata("arcticdem_tiles")
    assert tiles["tiles"] == 16 and tiles["missing_tiles"] == [] and tiles["downloaded"] == 0
    derivatives = sample_graph.metadata("terrain_derivatives")
    features_meta = sample_graph.metadata("terrain_features", key)
    assert features_meta["derivatives_snapshot_id"] == derivatives["icechunk_snapshot_id"]
    rasters = read_dataset_version(
        data_dir.joinpath(*REPO), None, derivatives["icechunk_snapshot_id"]
    )
    assert set(derivatives["variables"]) <= set(rasters.data_vars)
    features = xdggs.decode(read_dataset(data_dir / "arcticdem" / f"features_{key}.zarr"))
    cells = gpd.read_parquet(data_dir / "grids" / f"{key}.parquet")
    assert set(features["cell_ids"].to_numpy()) == set(cells["cell_id"])
    for name in set(derivatives["variables"]) - {"aspect"}:
        for stat in ("mean", "std", "min", "max", "median", "quantile"):
            assert f"{name}_{stat}" in features, f"{name}_{stat}"
    assert "aspect_mean" not in features
    assert list(features["quantile"].to_numpy()) == [0.25, 0.75]


#: A box inside tile 41_16 of the sample region: the snapshot test computes one tile.
ONE_TILE_AOI = "-136.4,67.5,-135.9,67.75"


@pytest.fixture(scope="module")
def one_tile(region, tmp_path_factory):
    """The sources of one tile materialised into a data directory of their own (two
    neighbourhoods instead of four: the same code path, less arithmetic): the data dir, its
    resources and the run."""
    from conftest import dagster_resources

    data_dir, _, _ = region
    root = tmp_path_factory.mktemp("one-tile")
    (root / "sources").symlink_to(data_dir / "sources")
    resources = dagster_resources(root, aoi=ONE_TILE_AOI)
    cheaper = {
        "ops": {"terrain_derivatives": {"config": {"tpi_radii_m": [160.0], "vrm_windows": [3]}}}
    }
    first = dg.materialize(
        all_assets,
        selection=["watermask", "arcticdem_tiles", "terrain_derivatives"],
        resources=resources,
        run_config=cheaper,
    )
    assert first.success
    return root, resources, first


def _data_version(result: dg.ExecuteInProcessResult) -> str:
    (materialization,) = result.asset_materializations_for_node("terrain_derivatives")
    return materialization.tags["dagster/data_version"]


@pytest.mark.slow
def test_every_materialisation_is_a_new_snapshot_and_old_ones_stay_readable(one_tile):
    """Materialised twice (one tile; the second with another VRM window): two commits, the
    first stays readable, and the input downstream assets get is the head's rasters with
    their own overviews. (The same rasters again commit nothing: tests/test_integrity.py.)"""
    tmp_path, resources, first = one_tile
    other = {
        "ops": {"terrain_derivatives": {"config": {"tpi_radii_m": [160.0], "vrm_windows": [5]}}}
    }
    again = dg.materialize(
        all_assets, selection=["terrain_derivatives"], resources=resources, run_config=other
    )
    snapshots = [
        result.asset_materializations_for_node("terrain_derivatives")[0]
        .metadata["icechunk_snapshot_id"]
        .value
        for result in (first, again)
    ]
    assert snapshots[0] != snapshots[1]
    # the snapshot id is the data version; the same rasters again commit nothing and keep both
    same = dg.materialize(
        all_assets, selection=["terrain_derivatives"], resources=resources, run_config=other
    )
    versions = [_data_version(result) for result in (first, again, same)]
    assert versions == [*snapshots, snapshots[1]]
    repo = tmp_path.joinpath(*REPO)
    old, new = (read_dataset_version(repo, None, snapshot) for snapshot in snapshots)
    window = {"y": slice(1500, 1600), "x": slice(1500, 1600)}
    xr.testing.assert_equal(old["slope"][window].load(), new["slope"][window].load())
    loaded = resources[ZARR_IO_MANAGER_KEY]._load("terrain_derivatives", None, {})
    assert loaded.attrs["icechunk_snapshot_id"] == snapshots[1]
    stored = stored_sample(loaded[GROUP].to_dataset(inherit=False), 4)
    expected = new["slope"].to_numpy()[2::4, 2::4]
    np.testing.assert_array_equal(stored["slope"].to_numpy(), expected)


@pytest.mark.slow
def test_cell_medians_equal_the_sampled_pixels_inside_the_cell(sample_graph):
    """Independent: the tile read with rasterio, slope from xarray-spatial, the documented
    pixel sample (every stride-th pixel from stride // 2), pixel centres inside the cell;
    for the cells that lie inside one tile, away from its edge."""
    data_dir = sample_graph.data_dir
    stride = sample_graph.metadata("terrain_features", KEY)["pixel_stride"]
    features = read_dataset(data_dir / "arcticdem" / f"features_{KEY}.zarr")
    cells = gpd.read_parquet(data_dir / "grids" / f"{KEY}.parquet").set_index("cell_id")
    with rasterio.open(tile_path(data_dir / "sources" / "arcticdem", *TILE)) as src:
        z = src.read(1).astype(np.float32)
        transform = src.transform
        margin = 2000  # m: pixels near the tile's edge have neighbours in the next tile
        tile_box = shapely.box(*src.bounds).buffer(-margin)
    z[z == NODATA] = np.nan
    size = z.shape[0]
    dem = xr.DataArray(z, dims=("y", "x"))
    dem = dem.assign_coords(y=transform.f - 32 * (np.arange(size) + 0.5))
    dem = dem.assign_coords(x=transform.c + 32 * (np.arange(size) + 0.5))
    slope = xrspatial.slope(dem).to_numpy()
    # The sample is every stride-th pixel of the whole mosaic from stride // 2: find where it
    # falls in this tile from the mosaic's pixel centres.
    mosaic = read_dataset_version(data_dir.joinpath(*REPO), None)
    first_x = float(mosaic["x"][stride // 2])
    first_y = float(mosaic["y"][stride // 2])
    c0 = round((float(dem["x"][0]) - first_x) / 32) % stride
    c0 = (stride - c0) % stride
    r0 = round((first_y - float(dem["y"][0])) / 32) % stride
    r0 = (stride - r0) % stride
    sample = (slice(r0, None, stride), slice(c0, None, stride))
    # Sampled pixels are stride times larger and centred on the pixels they sample.
    shift = rasterio.Affine.translation(c0 + 0.5 - stride / 2, r0 + 0.5 - stride / 2)
    sampled_transform = transform @ shift @ rasterio.Affine.scale(stride)
    water = gpd.read_parquet(data_dir / "watermask" / "watermask.parquet").union_all()
    checked = 0
    for cell_id in features["cell_ids"].to_numpy():
        outline = cells.loc[[cell_id]].geometry
        # Densified as the aggregation engine does, so edge pixels are decided alike.
        polygon = outline.segmentize(CELL_SEGMENT_DEG).to_crs(3413).iloc[0]
        if not polygon.within(tile_box) or outline.iloc[0].intersects(water):
            continue  # lakes are masked before the derivatives
        inside = rasterio.features.geometry_mask(
            [polygon], z[sample].shape, sampled_transform, invert=True
        )
        heights, slopes = z[sample][inside], slope[sample][inside]
        assert np.isfinite(slopes).sum() >= 50
        cell = features.sel(cell_ids=cell_id)
        assert float(cell["elevation_median"]) == pytest.approx(np.nanmedian(heights), abs=1e-3)
        assert float(cell["slope_median"]) == pytest.approx(np.nanmedian(slopes), abs=1e-2)
        checked += 1
    assert checked >= 3


@pytest.mark.slow
def test_terrain_statistics_are_exact_by_default_on_every_level_in_one_run(one_tile):
    """On one tile: grid cells of two levels, then terrain_statistics with its default config
    (every pixel, both levels in one pass) and each level's terrain_features. Means, minima
    and maxima of elevation and slope equal exactextract on the committed rasters (the head;
    cells as the engine projects them), every cell with data."""
    from exactextract import exact_extract

    from entropice_core.spatial.pixelmap import RasterGrid, project_cells

    tmp_path, resources, _ = one_tile
    levels = ("h3_6", "healpix_9")
    for key in levels:
        assert dg.materialize(
            all_assets, selection=["grid_cells"], partition_key=key, resources=resources
        ).success
    statistics = dg.materialize(all_assets, selection=["terrain_statistics"], resources=resources)
    (event,) = statistics.asset_materializations_for_node("terrain_statistics")
    assert event.metadata["exact"].value is True
    assert set(event.metadata["grid_levels"].value) == set(levels)  # every level with cells
    rasters = read_dataset_version(tmp_path.joinpath(*REPO), None).set_coords("spatial_ref")
    grid = RasterGrid.from_xarray(rasters)
    for key in levels:
        run = dg.materialize(
            all_assets, selection=["terrain_features"], partition_key=key, resources=resources
        )
        (event,) = run.asset_materializations_for_node("terrain_features")
        assert event.metadata["exact"].value is True and event.metadata["pixel_stride"].value == 1
        features = read_dataset(tmp_path / "arcticdem" / f"features_{key}.zarr").load()
        cells = gpd.read_parquet(tmp_path / "grids" / f"{key}.parquet").set_index("cell_id")
        cells = cells.loc[features["cell_ids"].to_numpy()].reset_index()
        polygons = gpd.GeoDataFrame(geometry=project_cells(cells, grid), crs=grid.crs)
        for name in ("elevation", "slope"):
            expected = exact_extract(
                rasters[name].load(), polygons, ["mean", "min", "max"], output="pandas"
            )
            ours = features[f"{name}_mean"].to_numpy()
            has_data = np.isfinite(ours)
            assert has_data.sum() >= 5, key  # healpix_9: 5 cells touch the tile
            for stat in ("mean", "min", "max"):
                np.testing.assert_allclose(
                    features[f"{name}_{stat}"].to_numpy()[has_data],
                    expected[stat].to_numpy()[has_data],
                    rtol=1e-6,
                    err_msg=f"{key} {name}_{stat}",
                )
