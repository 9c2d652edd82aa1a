"""The exact multi-level pass (``spatial.levels``) against exactextract and numpy, every level.

One synthetic EPSG:3413 raster (two bands, nodata, a sea) carries the cells of all nine grid
levels of the sample region at once; every level's moments are compared with exactextract on
that level's own polygons, std and quantiles with their written definitions computed from
exactextract's per-pixel values, coverages and centres. Both engines are checked: the compiled
CPU passes and the sort-based one that runs on the GPU (``spatial.sorted_pass``), here on numpy.
"""

from __future__ import annotations

import importlib.util

import geopandas as gpd
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
from exactextract import exact_extract
from pyproj import Transformer

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.features.terrain import TERRAIN_STATISTICS, terrain_features
from entropice_core.spatial.aggregators import AggregationConfig, aggregate_raster
from entropice_core.spatial.grids import grid_cells
from entropice_core.spatial.levels import (
    PASS_BYTES_PER_PIXEL,
    aggregate_levels,
    build_level_map,
    crop_to_cells,
    from_keys,
    plan_windows,
    to_keys,
)
from entropice_core.spatial.pixelmap import RasterGrid, project_cells

LEVELS = (
    "h3_3", "h3_4", "h3_5", "h3_6", "healpix_6", "healpix_7", "healpix_8", "healpix_9",
    "healpix_10",
)  # fmt: skip
SIZE, RES = 420, 500.0
STATS = ("mean", "sum", "count", "min", "max", "std", "valid_fraction", "median", "quantile")
QUANTILES = (0.25, 0.75)
CONFIG = AggregationConfig(statistics=STATS, quantiles=QUANTILES)
ALL_LAND = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)


def terrain_like(seed: int = 0) -> xr.Dataset:
    """Two float32 bands on SIZE x SIZE pixels of RES m: relief with noise, 5 % nodata, and a
    sea (NaN) over the western fifth whose coast cuts cells."""
    rng = np.random.default_rng(seed)
    cx, cy = Transformer.from_crs(4326, 3413, always_xy=True).transform(-134.0, 68.0)
    left, top = cx - SIZE * RES / 2 + 0.37 * RES, cy + SIZE * RES / 2 - 0.21 * RES
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    relief = 300 + 200 * np.sin(xx / 37.0) * np.cos(yy / 53.0) + rng.normal(0, 20, (SIZE, SIZE))
    slope = np.abs(rng.gamma(2.0, 3.0, (SIZE, SIZE)))
    sea = xx < SIZE // 5
    bands = {}
    for name, values in (("elevation", relief), ("slope", slope)):
        values = values.astype(np.float32)
        values[sea | (rng.random((SIZE, SIZE)) < 0.05)] = np.nan
        bands[name] = (("y", "x"), values)
    coords = {"y": top - RES * (np.arange(SIZE) + 0.5), "x": left + RES * (np.arange(SIZE) + 0.5)}
    return xr.Dataset(bands, coords=coords).rio.write_crs(3413)


def cells_of(key: str, raster: xr.Dataset) -> gpd.GeoDataFrame:
    west, south, east, north = raster.rio.transform_bounds(4326, densify_pts=50)
    aoi = AreaOfInterest.from_bbox((west - 0.2, south - 0.1, east + 0.2, north + 0.1))
    return grid_cells(GridSpec.from_key(key), aoi, ALL_LAND)


@pytest.fixture(scope="module")
def case():
    raster = terrain_like()
    levels = {key: cells_of(key, raster) for key in LEVELS}
    grid = RasterGrid.from_xarray(raster)
    level_map = build_level_map(levels, grid)
    result = aggregate_levels(raster, levels, CONFIG, level_map=level_map)
    return raster, levels, grid, level_map, result


ENGINES = ("compiled", "sorted")


@pytest.fixture(scope="module")
def engine_results(case):
    """Each engine's results on the same atoms."""
    raster, levels, _, level_map, result = case
    return {
        "compiled": result,
        "sorted": aggregate_levels(raster, levels, CONFIG, level_map=level_map, engine="sorted"),
    }


def _polygons(cells: gpd.GeoDataFrame, grid: RasterGrid, most: int = 0) -> gpd.GeoDataFrame:
    """The cells as the engine projects them; ``most`` > 0 keeps an even spread of that many."""
    polygons = gpd.GeoDataFrame(
        {"i": np.arange(len(cells))}, geometry=project_cells(cells, grid), crs=3413
    )
    if most and len(polygons) > most:
        polygons = polygons.iloc[np.linspace(0, len(polygons) - 1, most).astype(int)]
    return polygons.reset_index(drop=True)


#: Cells per level checked against exactextract (all of them at the coarse levels).
CHECKED = 150


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("key", LEVELS)
def test_every_level_equals_exactextract(case, engine_results, key, engine):
    raster, levels, grid, _, _ = case
    result = engine_results[engine]
    polygons = _polygons(levels[key], grid, CHECKED)
    ours = result[key].isel(cell_ids=polygons["i"].to_numpy())
    for band in ("elevation", "slope"):
        ops = ["mean", "sum", "count", "min", "max", "stdev"]
        expected = exact_extract(raster[band], polygons, ops, output="pandas", include_cols=["i"])
        seen = expected["count"].to_numpy() > 0
        assert seen.sum() >= 1
        for op in ops:
            name = f"{band}_{'std' if op == 'stdev' else op}"
            np.testing.assert_allclose(
                ours[name].to_numpy()[seen], expected[op].to_numpy()[seen], rtol=1e-6, err_msg=name
            )
        assert np.isnan(ours[f"{band}_mean"].to_numpy()[~seen]).all()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("key", LEVELS)
def test_std_median_and_quartiles_follow_their_definitions(case, engine_results, key, engine):
    """std: sqrt(sum(c (x - mean)^2) / sum(c)) over exactextract's values and coverages;
    median and quartiles: numpy's linear rule over the valid pixels whose centre is inside."""
    raster, levels, grid, _, _ = case
    result = engine_results[engine]
    polygons = _polygons(levels[key], grid, CHECKED)
    per_pixel = exact_extract(
        raster["slope"], polygons, ["coverage", "values", "center_x", "center_y"], output="pandas"
    )
    ours = result[key].isel(cell_ids=polygons["i"].to_numpy())
    checked = 0
    for i, row in per_pixel.iterrows():
        values, weights = np.asarray(row["values"], float), np.asarray(row["coverage"], float)
        valid = ~np.isnan(values)
        if weights[valid].sum() > 0:
            mean = np.average(values[valid], weights=weights[valid])
            std = np.sqrt(np.average((values[valid] - mean) ** 2, weights=weights[valid]))
            np.testing.assert_allclose(ours["slope_std"][i], std, rtol=1e-6)
        inside = shapely.contains_xy(polygons.geometry[i], row["center_x"], row["center_y"])
        members = values[valid & inside]
        if members.size == 0:
            assert np.isnan(ours["slope_median"][i])
            continue
        checked += 1
        assert float(ours["slope_median"][i]) == np.median(members)
        np.testing.assert_array_equal(ours["slope_quantile"][i], np.quantile(members, QUANTILES))
    assert checked >= 1


def test_one_pass_equals_each_level_alone_and_the_per_level_engine(case):
    """Atoms merged into cells equal each level computed alone (atoms = its cells) and the
    per-level engine: order statistics, extremes and counts bit for bit, means and spreads to
    rounding (their sums run in another order)."""
    raster, levels, _, _, result = case
    exact = ("min", "max", "median", "quantile")
    for key in ("h3_3", "h3_6", "healpix_8", "healpix_10"):
        alone = aggregate_levels(raster, {key: levels[key]}, CONFIG)[key]
        engine = aggregate_raster(raster, levels[key], GridSpec.from_key(key), CONFIG)
        for name in result[key].data_vars:
            ours = result[key][name].to_numpy()
            for other in (alone[name].to_numpy(), engine[name].to_numpy()):
                if str(name).rpartition("_")[2] in exact:
                    np.testing.assert_array_equal(ours, other, err_msg=f"{key} {name}")
                else:
                    np.testing.assert_allclose(ours, other, rtol=1e-10, atol=1e-9)


def test_the_sorted_engine_equals_the_compiled_one_bit_for_bit_where_it_should(engine_results):
    """Order statistics, extremes and counts identical; means and spreads to rounding."""
    compiled, by_sorting = engine_results["compiled"], engine_results["sorted"]
    for key in LEVELS:
        for name in compiled[key].data_vars:
            ours, other = by_sorting[key][name].to_numpy(), compiled[key][name].to_numpy()
            if str(name).rpartition("_")[2] in ("min", "max", "median", "quantile"):
                np.testing.assert_array_equal(ours, other, err_msg=f"{key} {name}")
            else:
                np.testing.assert_allclose(ours, other, rtol=1e-10, atol=1e-9)


def test_the_compiled_engine_does_not_run_on_a_gpu_and_cupy_is_asked_for_by_name(case):
    raster, levels, *_ = case
    with pytest.raises(ValueError, match="engine='sorted'"):
        aggregate_levels(raster, levels, CONFIG, device="cuda", engine="compiled")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        aggregate_levels(raster, levels, CONFIG, device="gpu")
    if importlib.util.find_spec("cupy") is None:  # the CPU suite: the error names the extra
        with pytest.raises(ImportError, match="uv sync --extra gpu"):
            aggregate_levels(raster, levels, CONFIG, device="cuda")


def test_cells_in_a_corner_read_only_their_window_with_the_same_results(case):
    """A few cells in one corner: the pass reads the window around them, and its statistics
    equal the per-level engine's over the whole raster (order statistics bit for bit)."""
    raster, levels, grid, _, _ = case
    key = "h3_6"
    polygons = _polygons(levels[key], grid)
    corner = shapely.box(*grid.transform @ (SIZE * 0.6, SIZE * 0.6), *grid.transform @ (SIZE, SIZE))
    some = levels[key].iloc[np.flatnonzero(polygons.geometry.within(corner).to_numpy())[:12]]
    assert len(some) >= 5
    window = crop_to_cells(raster, {key: some})
    assert window.sizes["x"] * window.sizes["y"] < 0.25 * SIZE * SIZE
    kept = shapely.box(*window.rio.bounds())
    assert all(kept.contains(p) for p in _polygons(some, grid).geometry)
    ours = aggregate_levels(raster, {key: some}, CONFIG)[key]
    engine = aggregate_raster(raster, some, GridSpec.from_key(key), CONFIG)
    for name in ours.data_vars:
        if str(name).rpartition("_")[2] in ("min", "max", "median", "quantile"):
            np.testing.assert_array_equal(ours[name], engine[name], err_msg=str(name))
        else:
            np.testing.assert_allclose(ours[name], engine[name], rtol=1e-10, atol=1e-9)


#: Fine levels, and a budget of 60,000 pixels per window: four windows on the raster.
WINDOWED = ("h3_5", "h3_6", "healpix_9", "healpix_10")
SMALL_BUDGET = 60_000 * PASS_BYTES_PER_PIXEL


def _same_as_one_pass(ours: dict[str, xr.Dataset], result: dict[str, xr.Dataset]) -> None:
    for key in WINDOWED:
        np.testing.assert_array_equal(ours[key]["cell_ids"], result[key]["cell_ids"])
        assert ours[key].attrs == result[key].attrs
        for name in result[key].data_vars:
            if str(name).rpartition("_")[2] in ("min", "max", "median", "quantile"):
                np.testing.assert_array_equal(ours[key][name], result[key][name], err_msg=name)
            else:
                np.testing.assert_allclose(
                    ours[key][name], result[key][name], rtol=1e-10, atol=1e-9, err_msg=name
                )


def test_windows_under_a_small_budget_give_the_one_pass_results(case):
    """Under a budget below the raster, the cells are shared out among windows, each cell to
    exactly one; every statistic equals the single pass (order statistics bit for bit)."""
    raster, levels, _, _, result = case
    fine = {key: levels[key] for key in WINDOWED}
    windows = plan_windows(raster, fine, SMALL_BUDGET)
    assert windows is not None and len(windows) >= 4
    for key, cells in fine.items():
        taken = np.concatenate([w[key] for w in windows if key in w])
        np.testing.assert_array_equal(np.sort(taken), np.arange(len(cells)))
    assert plan_windows(raster, fine, SIZE * SIZE * PASS_BYTES_PER_PIXEL) is None
    _same_as_one_pass(aggregate_levels(raster, fine, CONFIG, memory_budget=SMALL_BUDGET), result)


def test_windows_run_as_tasks_on_the_current_client_with_the_same_results(case):
    """Worker processes: each window is a task there (its raster and cells sent to it)."""
    import dask
    from distributed import Client, LocalCluster, get_task_stream

    raster, levels, _, _, result = case
    fine = {key: levels[key] for key in WINDOWED}
    scheduler = dask.config.get("scheduler", None)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        get_task_stream(client=client) as stream,
        client.as_current(),
    ):
        ours = aggregate_levels(raster, fine, CONFIG, memory_budget=SMALL_BUDGET)
    dask.config.set(scheduler=scheduler)
    windows = [t for t in stream.data if str(t["key"]).startswith("_aggregate_window")]
    assert len(windows) == len(plan_windows(raster, fine, SMALL_BUDGET) or [])
    _same_as_one_pass(ours, result)


def test_a_budget_below_the_largest_cell_fails_with_what_to_do(case):
    raster, levels, _, _, _ = case
    with pytest.raises(ValueError, match="too few for cells of up to"):
        aggregate_levels(raster, {"h3_3": levels["h3_3"]}, CONFIG, memory_budget=10**5)


def test_a_coastal_cell_with_one_percent_land_gets_its_exact_mean():
    raster = terrain_like(seed=3)
    cells = cells_of("h3_5", raster)
    grid = RasterGrid.from_xarray(raster)
    polygons = _polygons(cells, grid)
    inside = polygons.geometry.within(shapely.box(*raster.rio.bounds()))
    i = int(np.flatnonzero(inside.to_numpy())[0])
    cell = polygons.geometry[i]
    # Land only on a strip along the cell's western edge: about 1 % of its area.
    minx, miny, _, maxy = cell.bounds
    left = minx
    while shapely.intersection(cell, shapely.box(minx, miny, left, maxy)).area < 0.01 * cell.area:
        left += RES / 4
    land = raster["x"] < left
    elevation = xr.where(land, raster["elevation"].fillna(5.0), np.nan).astype(np.float32)
    elevation = elevation.transpose("y", "x")
    coastal = xr.Dataset({"elevation": elevation}).rio.write_crs(3413)
    ours = aggregate_levels(coastal, {"h3_5": cells}, CONFIG)["h3_5"]
    expected = exact_extract(
        coastal["elevation"], polygons.iloc[[i]], ["mean", "count", "values", "coverage"],
        output="pandas",
    )  # fmt: skip
    values = np.asarray(expected["values"][0], float)
    weights = np.asarray(expected["coverage"][0], float)
    valid = ~np.isnan(values)
    share = float(ours["elevation_valid_fraction"][i])
    assert 0.005 < share < 0.03  # about 1 % of the cell is land
    mean = np.average(values[valid], weights=weights[valid])
    np.testing.assert_allclose(float(ours["elevation_mean"][i]), mean, rtol=1e-6)
    np.testing.assert_allclose(float(ours["elevation_mean"][i]), expected["mean"][0], rtol=1e-6)


def test_terrain_features_exact_on_request_and_sampled_with_their_error():
    raster = terrain_like(seed=5)
    cells = cells_of("h3_5", raster)
    spec = GridSpec.from_key("h3_5")
    exact = terrain_features(raster, cells, spec, min_pixels_per_cell=0)
    assert exact.attrs["pixel_stride"] == 1 and exact.attrs["exact"] == 1
    direct = aggregate_levels(raster, {"h3_5": cells}, TERRAIN_STATISTICS)["h3_5"]
    for name in direct.data_vars:
        np.testing.assert_array_equal(exact[name], direct[name])
    sampled = terrain_features(raster, cells, spec, min_pixels_per_cell=30)
    assert sampled.attrs["exact"] == 0 and sampled.attrs["pixel_stride"] > 1
    pixels = sampled.attrs["sample_pixels_per_cell"]
    assert pixels >= 30
    assert sampled.attrs["expected_error_of_mean"] == pytest.approx(1 / np.sqrt(pixels))


@pytest.mark.parametrize(
    "values",
    [
        np.array([-np.inf, -3.5, -1e-40, -0.0, 0.0, 1e-45, 2.0, 7.25, np.inf], np.float32),
        np.sort(np.random.default_rng(0).normal(0, 1e3, 1000).astype(np.float32)),
    ],
)
def test_order_keys_keep_float_order_and_round_trip(values):
    keys = values.copy().view(np.int32)
    to_keys(keys)
    assert (np.diff(keys.astype(np.int64)) >= 0).all()
    back = from_keys(keys)
    np.testing.assert_array_equal(back, values)  # -0.0 comes back as 0.0, equal
