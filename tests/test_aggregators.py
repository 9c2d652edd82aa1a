"""The aggregation engine checked against exactextract, numpy and an equal-area overlay."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import shapely
import xarray as xr
import xdggs
from distributed import Client, LocalCluster
from exactextract import exact_extract
from pyproj import Transformer

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.spatial.aggregators import AggregationConfig, aggregate_raster
from entropice_core.spatial.grids import grid_cells
from entropice_core.spatial.overlay import overlay_cells
from entropice_core.spatial.pixelmap import RasterGrid, build_cell_pixel_map, project_cells

ALL_LAND = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)
NODATA = -9999.0
SIZE, RES = 300, 100.0
MOMENTS = ("mean", "sum", "count", "min", "max", "std", "valid_fraction", "median", "quantile")
QUANTILES = (0.1, 0.25, 0.9)


def polar_raster(seed: int, bands: int = 0) -> xr.DataArray:
    """A SIZE x SIZE EPSG:3413 raster at RES m over the Peel Plateau, 15 % nodata."""
    rng = np.random.default_rng(seed)
    cx, cy = Transformer.from_crs(4326, 3413, always_xy=True).transform(-134.0, 68.0)
    left, top = cx - SIZE * RES / 2 + rng.random() * RES, cy + SIZE * RES / 2
    shape = (bands, SIZE, SIZE) if bands else (SIZE, SIZE)
    values = rng.normal(10, 3, size=shape).astype(np.float32)
    values[rng.random(shape) < 0.15] = NODATA
    coords = {"y": top - RES * (np.arange(SIZE) + 0.5), "x": left + RES * (np.arange(SIZE) + 0.5)}
    dims = ("y", "x")
    if bands:
        coords["time"] = np.arange(bands)
        dims = ("time", *dims)
    data = xr.DataArray(values, dims=dims, coords=coords)
    return data.rio.write_crs(3413).rio.write_nodata(NODATA)


def random_cells(key: str, seed: int) -> gpd.GeoDataFrame:
    """About 70 % of the cells around the raster (some cut by its border), in random order."""
    cells = grid_cells(
        GridSpec.from_key(key), AreaOfInterest.from_bbox("-134.8,67.7,-133.2,68.3"), ALL_LAND
    )
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(cells))[: int(0.7 * len(cells))]
    return cells.iloc[keep].reset_index(drop=True)


@pytest.fixture(scope="module", params=[("h3_6", 1), ("healpix_10", 2)], ids=["h3_6", "healpix_10"])
def case(request):
    key, seed = request.param
    raster, cells = polar_raster(seed), random_cells(key, seed)
    grid = RasterGrid.from_xarray(raster)
    cell_map = build_cell_pixel_map(cells, grid, block_pixels=SIZE * 37)
    config = AggregationConfig(statistics=MOMENTS, quantiles=QUANTILES)
    result = aggregate_raster(raster, cells, GridSpec.from_key(key), config, cell_map=cell_map)
    polygons = gpd.GeoDataFrame(
        {"i": np.arange(len(cells))}, geometry=project_cells(cells, grid), crs=3413
    )
    return raster, cells, polygons, result, cell_map


def test_moments_equal_exactextract(case):
    raster, _, polygons, result, _ = case
    ops = ["mean", "sum", "count", "min", "max"]
    expected = exact_extract(raster, polygons, ops, output="pandas", include_cols=["i"])
    seen = expected["count"].to_numpy() > 0
    assert seen.sum() > 20 and (~seen).sum() > 0
    for op in ops:
        ours, theirs = result[op].to_numpy()[seen], expected[op].to_numpy()[seen]
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, err_msg=op)
    assert np.isnan(result["mean"].to_numpy()[~seen]).all()
    np.testing.assert_array_equal(result["count"].to_numpy()[~seen], 0.0)
    # valid fraction: coverage of valid pixels over the cell's whole area in pixel units
    whole = polygons.area.to_numpy() / RES**2
    valid_fraction = expected["count"].to_numpy() / whole
    np.testing.assert_allclose(result["valid_fraction"], valid_fraction, rtol=1e-6, atol=1e-12)
    assert (result["valid_fraction"] < 0.99).any()  # cells cut by the raster's border


def test_std_median_and_quantiles_follow_their_definitions(case):
    raster, _, polygons, result, _ = case
    per_pixel = exact_extract(
        raster, polygons, ["coverage", "values", "center_x", "center_y"], output="pandas"
    )
    cells_with_centre = 0
    for i, row in per_pixel.iterrows():
        values, weights = np.asarray(row["values"], float), np.asarray(row["coverage"], float)
        valid = values != NODATA
        if weights[valid].sum() > 0:
            mean = np.average(values[valid], weights=weights[valid])
            std = np.sqrt(np.average((values[valid] - mean) ** 2, weights=weights[valid]))
            np.testing.assert_allclose(result["std"][i], std, rtol=1e-6)
        inside = shapely.contains_xy(polygons.geometry[i], row["center_x"], row["center_y"])
        members = values[valid & inside]
        if members.size == 0:
            assert np.isnan(result["median"][i])
            continue
        cells_with_centre += 1
        np.testing.assert_allclose(result["median"][i], np.median(members), rtol=1e-12)
        np.testing.assert_allclose(
            result["quantile"][i], np.quantile(members, QUANTILES), rtol=1e-12
        )
    assert cells_with_centre > 20


def test_tiled_and_parallel_equal_untiled_exactly():
    raster = polar_raster(3, bands=3)
    cells = random_cells("h3_6", 3)
    spec = GridSpec.from_key("h3_6")
    cell_map = build_cell_pixel_map(cells, RasterGrid.from_xarray(raster), block_pixels=SIZE * 20)
    config = AggregationConfig(statistics=MOMENTS, quantiles=QUANTILES, max_pixels=10**9)
    whole = aggregate_raster(raster, cells, spec, config, cell_map=cell_map)
    strips = AggregationConfig(statistics=MOMENTS, quantiles=QUANTILES, max_pixels=SIZE * 50 * 3)
    variants = [
        aggregate_raster(raster, cells, spec, strips, cell_map=cell_map),
        aggregate_raster(raster.chunk(y=70), cells, spec, strips, cell_map=cell_map),
        aggregate_raster(raster, cells, spec, config, cell_map=cell_map, parallel=True),
        aggregate_raster(raster.chunk(y=70), cells, spec, config, cell_map=cell_map, parallel=True),
    ]
    # on a distributed cluster, as under the DaskResource: workers read their own rows
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster),
    ):
        variants.append(
            aggregate_raster(
                raster.chunk(y=45), cells, spec, config, cell_map=cell_map, parallel=True
            )
        )
    assert cell_map.n_blocks == 15 and whole["mean"].dims == ("cell_ids", "time")
    for tiled in variants:
        xr.testing.assert_identical(tiled, whole)
    # each time step equals the same step aggregated alone
    alone = aggregate_raster(raster.isel(time=1), cells, spec, config, cell_map=cell_map)
    xr.testing.assert_identical(whole.isel(time=1, drop=True), alone)


def test_latlon_means_are_area_weighted_across_180_and_the_pole():
    spec = GridSpec.from_key("h3_2")
    cells = grid_cells(spec, AreaOfInterest.north_of(60.0), ALL_LAND)
    lat = 89.5 - np.arange(30.0)  # 1 degree pixels, 90 N to 60 N, longitudes 0..360
    lon = 0.5 + np.arange(360.0)
    rng = np.random.default_rng(4)
    values = np.cos(np.radians(lon))[None, :] * 5 + lat[:, None] + rng.normal(size=(30, 360))
    raster = xr.DataArray(values, dims=("y", "x"), coords={"y": lat, "x": lon}).rio.write_crs(4326)
    result = aggregate_raster(
        raster, cells, spec, AggregationConfig(statistics=("mean", "valid_fraction"))
    )

    # Independent: pixel boxes (longitudes moved to -180..180) overlaid with the cells in EPSG:6931.
    west = (lon - 0.5 + 180) % 360 - 180
    boxes = shapely.box(
        *np.broadcast_arrays(
            west[None, :], lat[:, None] - 0.5, west[None, :] + 1, lat[:, None] + 0.5
        )
    )
    pixels = gpd.GeoSeries(boxes.ravel(), crs=4326).segmentize(0.05)
    overlay = overlay_cells(pixels, cells.geometry, workers=1)
    weight = np.bincount(overlay.cell, overlay.area_km2, minlength=len(cells))
    expected = (
        np.bincount(
            overlay.cell, overlay.area_km2 * values.ravel()[overlay.polygon], minlength=len(cells)
        )
        / weight
    )

    crosses = np.array([g.geom_type == "MultiPolygon" for g in cells.geometry])
    pole = cells.geometry.intersects(shapely.Point(0, 90)).to_numpy()
    assert crosses.sum() >= 2 and pole.sum() == 1
    np.testing.assert_allclose(result["mean"], expected, rtol=1e-6)
    # unweighted pixel means would be far off near the pole (cos(lat) spans 0.0..0.5)
    assert np.all(result["valid_fraction"] <= 1 + 1e-9)
    whole = cells.geometry.segmentize(0.01).to_crs(6931).area.to_numpy() / 1e6
    # the outside parts are densified separately: agreement to the densification (~1e-6)
    np.testing.assert_allclose(result["valid_fraction"], weight / whole, rtol=1e-5)
    assert (result["valid_fraction"] < 0.9).sum() > 10  # cells reaching south of 60 N


def test_outputs_decode_with_xdggs(case):
    decoded = xdggs.decode(case[3])
    assert decoded["mean"].dims[0] == "cell_ids"
