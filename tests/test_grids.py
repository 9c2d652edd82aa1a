"""Grid cells checked against h3, healpix-geo, pyproj.Geod and geopandas, not against themselves."""

from __future__ import annotations

import geopandas as gpd
import h3
import healpix_geo.nested as healpix
import numpy as np
import pyproj
import pytest
import shapely
from global_land_mask import globe
from hypothesis import example, given, settings
from hypothesis import strategies as st

from entropice_core.config import AreaOfInterest, GridCellsConfig, GridSpec, WatermaskConfig
from entropice_core.spatial.geodesy import AUTHALIC_RADIUS_KM
from entropice_core.spatial.grids import cell_ids, grid_cells
from entropice_core.spatial.watermask import water_polygons

SPHERE = pyproj.Geod(a=AUTHALIC_RADIUS_KM * 1000, b=AUTHALIC_RADIUS_KM * 1000)
WGS84 = pyproj.Geod(ellps="WGS84")
ALL_LAND = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)


def sphere_area_km2(geom) -> float:
    return abs(SPHERE.geometry_area_perimeter(geom)[0]) / 1e6


def nominal_area_km2(spec: GridSpec, cell: int) -> float:
    if spec.grid == "h3":
        return h3.cell_area(h3.int_to_str(int(cell)), unit="km^2")
    return 4 * np.pi * AUTHALIC_RADIUS_KM**2 / (12 * 4**spec.level)


@pytest.fixture(scope="module")
def sample_water() -> gpd.GeoDataFrame:
    return water_polygons(AreaOfInterest.sample_region())


def test_h3_cells_equal_h3_polygon_fill():
    aoi = AreaOfInterest.sample_region()
    minlon, minlat, maxlon, maxlat = aoi.bbox
    poly = h3.LatLngPoly([(minlat, minlon), (minlat, maxlon), (maxlat, maxlon), (maxlat, minlon)])
    for res in (4, 5, 6):
        expected = {h3.str_to_int(c) for c in h3.polygon_to_cells(poly, res)}
        assert set(cell_ids(GridSpec(grid="h3", level=res), aoi).tolist()) == expected


def test_h3_cells_across_the_antimeridian_equal_h3_on_both_halves():
    aoi = AreaOfInterest.from_bbox("175,60,-175,65")
    halves = [
        h3.LatLngPoly([(60, 175), (60, 180), (65, 180), (65, 175)]),
        h3.LatLngPoly([(60, -180), (60, -175), (65, -175), (65, -180)]),
    ]
    expected = {h3.str_to_int(c) for half in halves for c in h3.polygon_to_cells(half, 4)}
    assert set(cell_ids(GridSpec(grid="h3", level=4), aoi).tolist()) == expected


@pytest.mark.parametrize("level", [6, 7, 8])
def test_healpix_ids_equal_brute_force_over_every_cell(level):
    aoi = AreaOfInterest.from_bbox("175,60,-170,72")
    every = np.arange(12 * 4**level, dtype=np.uint64)
    lon, lat = healpix.healpix_to_lonlat(every, level, ellipsoid="sphere")
    lon = (np.asarray(lon) + 180) % 360 - 180
    inside = ((lon >= 175) | (lon <= -170)) & (lat >= 60) & (lat <= 72)
    np.testing.assert_array_equal(
        cell_ids(GridSpec(grid="healpix", level=level), aoi), every[inside]
    )


def test_healpix_cell_centres_map_back_to_their_ids():
    spec = GridSpec(grid="healpix", level=9)
    ids = cell_ids(spec, AreaOfInterest.sample_region())
    lon, lat = healpix.healpix_to_lonlat(ids, spec.level, ellipsoid="sphere")
    np.testing.assert_array_equal(healpix.lonlat_to_healpix(lon, lat, spec.level), ids)


@pytest.mark.parametrize("key", ["h3_3", "h3_4", "h3_5", "healpix_6", "healpix_7", "healpix_8"])
def test_pole_and_antimeridian_cells_are_valid_with_their_grid_area(key):
    spec = GridSpec.from_key(key)
    cells = grid_cells(spec, AreaOfInterest.north_of(86), ALL_LAND)
    geoms = cells.geometry.to_numpy()
    assert shapely.is_valid(geoms).all()
    minx, _, maxx, maxy = cells.total_bounds
    assert minx >= -180 and maxx <= 180 and maxy <= 90
    # Both special kinds of cell are present and checked. (North of 41.8 N no HEALPix cell
    # straddles 180 degrees, a base-cell edge; its equatorial cells are tested below.)
    assert (cells.geometry.geom_type == "MultiPolygon").any() == (spec.grid == "h3")
    assert np.isclose(maxy, 90.0)
    for cell, geom in zip(cells.cell_id, geoms, strict=True):
        assert sphere_area_km2(geom) == pytest.approx(nominal_area_km2(spec, cell), rel=2e-3)


@pytest.mark.parametrize("key", ["healpix_6", "healpix_9", "h3_4"])
def test_equatorial_cells_across_the_antimeridian_are_cut_with_their_area(key):
    spec = GridSpec.from_key(key)
    cells = grid_cells(spec, AreaOfInterest.from_bbox("179,-3,-179,3"), ALL_LAND)
    cut = cells[cells.geometry.geom_type == "MultiPolygon"]
    assert len(cut) > 0 and shapely.is_valid(cells.geometry.to_numpy()).all()
    for cell, geom in zip(cut.cell_id, cut.geometry, strict=True):
        assert {round(g.bounds[0]) for g in geom.geoms} | {
            round(g.bounds[2]) for g in geom.geoms
        } >= {-180, 180}
        assert sphere_area_km2(geom) == pytest.approx(nominal_area_km2(spec, cell), rel=2e-3)


@pytest.mark.parametrize("level", [6, 8, 10])
def test_healpix_polygon_area_matches_equal_area(level):
    spec = GridSpec(grid="healpix", level=level)
    cells = grid_cells(spec, AreaOfInterest.from_bbox("-20,50,20,90"), ALL_LAND)
    areas = np.array([sphere_area_km2(g) for g in cells.geometry])
    np.testing.assert_allclose(areas, nominal_area_km2(spec, 0), rtol=2e-3)


def test_land_area_is_the_wgs84_geodesic_area_of_the_cell():
    spec = GridSpec.from_key("h3_5")
    cells = grid_cells(spec, AreaOfInterest.from_bbox("-100,70,-99,71"), ALL_LAND)
    for geom, land_area in zip(cells.geometry, cells.land_area_km2, strict=True):
        geodesic = abs(WGS84.geometry_area_perimeter(geom)[0]) / 1e6
        assert land_area == pytest.approx(geodesic, rel=1e-5)
        # WGS84 areas at 70 N are about 0.7 % larger than on the authalic sphere.
        assert 1.004 < land_area / sphere_area_km2(geom) < 1.009


def centres_in_box(spec: GridSpec, bbox: tuple[float, ...]) -> np.ndarray:
    """Ids of the cells whose centre lies in ``bbox`` (not crossing 180 degrees), straight from
    h3's polygon fill or, for HEALPix, from the centres of every cell of the level."""
    minlon, minlat, maxlon, maxlat = bbox
    if spec.grid == "h3":
        box = h3.LatLngPoly(
            [(minlat, minlon), (minlat, maxlon), (maxlat, maxlon), (maxlat, minlon)]
        )
        return np.array([h3.str_to_int(c) for c in h3.polygon_to_cells(box, spec.level)], np.uint64)
    every = np.arange(12 * 4**spec.level, dtype=np.uint64)
    lon, lat = healpix.healpix_to_lonlat(every, spec.level, ellipsoid="sphere")
    lon = (np.asarray(lon) + 180) % 360 - 180
    return every[(lon >= minlon) & (lon <= maxlon) & (lat >= minlat) & (lat <= maxlat)]


def independent_cells(spec: GridSpec, bbox: tuple[float, ...]) -> dict[int, shapely.Polygon]:
    """Id -> outline (vertices joined by straight lines) of every cell whose centre lies in
    ``bbox``, from h3 / healpix-geo directly."""
    ids = centres_in_box(spec, bbox)
    if spec.grid == "h3":
        boundaries = [h3.cell_to_boundary(h3.int_to_str(int(c))) for c in ids]
        return {
            int(c): shapely.Polygon([(lng, lat) for lat, lng in ring])
            for c, ring in zip(ids, boundaries, strict=True)
        }
    vlon, vlat = healpix.vertices(ids, spec.level, ellipsoid="sphere")
    return {
        int(c): shapely.Polygon(zip(x, y, strict=True))
        for c, x, y in zip(ids, vlon, vlat, strict=True)
    }


@pytest.mark.parametrize("key", ["h3_5", "healpix_9"])
def test_land_fraction_matches_an_exact_geopandas_overlay(tmp_path, key):
    # Water: a lake polygon with a hole; land fraction compared with the exact overlay area
    # in an equal-area projection, and the cells compared with h3 / healpix-geo directly.
    lake = shapely.Polygon(
        [(-135, 67.2), (-133.4, 67.0), (-133.0, 68.1), (-134.6, 68.3)],
        holes=[[(-134.2, 67.5), (-133.8, 67.5), (-133.8, 67.7), (-134.2, 67.7)]],
    )
    path = tmp_path / "lakes.parquet"
    gpd.GeoDataFrame(geometry=[lake], crs="EPSG:4326").to_parquet(path)
    aoi = AreaOfInterest.from_bbox("-136,66.8,-132,68.5")
    water = water_polygons(aoi, WatermaskConfig(source="file", path=path))
    spec = GridSpec.from_key(key)
    cells = grid_cells(spec, aoi, water, GridCellsConfig(min_land_fraction=0.0))

    # The cells are those of h3 / healpix-geo in the box, less the ones the lake covers: a cell
    # inside the lake is dropped, one with a few percent of land kept (the land fractions are
    # counted on a 1/120 degree raster, so cells on the shore with a sliver of land may go).
    outlines = independent_cells(spec, aoi.bbox)
    kept = set(cells.cell_id.tolist())
    assert kept <= set(outlines)
    ids = np.array(list(outlines))
    shapes = gpd.GeoSeries([outlines[c] for c in ids], crs="EPSG:4326").segmentize(0.005)
    lake_area = gpd.GeoSeries([lake], crs="EPSG:4326").segmentize(0.005).to_crs("EPSG:6931")[0]
    shapes = shapes.to_crs("EPSG:6931")
    land = 1 - shapes.intersection(lake_area).area.to_numpy() / shapes.area.to_numpy()
    inside = {int(c) for c in ids[land < 1e-9]}
    assert inside, "the lake should cover some cells entirely"
    assert not inside & kept
    assert {int(c) for c in ids[land > 0.03]} <= kept

    # Polygons have straight edges in lon/lat: densify before projecting so they keep them.
    laea = cells.geometry.segmentize(0.005).to_crs("EPSG:6931")
    lake_laea = gpd.GeoSeries([lake], crs="EPSG:4326").segmentize(0.005).to_crs("EPSG:6931")[0]
    exact = 1 - laea.intersection(lake_laea).area / laea.area
    np.testing.assert_allclose(cells.land_fraction, exact, atol=0.03)
    assert (np.abs(cells.land_fraction - exact) < 0.01).mean() > 0.9
    assert (exact < 0.5).sum() >= 3  # the comparison covers cells of the lake's shore


def test_ocean_only_cells_are_dropped_and_the_threshold_is_configurable(sample_water):
    aoi = AreaOfInterest.sample_region()
    spec = GridSpec.from_key("h3_6")
    cells = grid_cells(spec, aoi, sample_water)
    all_ids = cell_ids(spec, aoi)
    assert 0 < len(cells) < len(all_ids)  # the Beaufort Sea corner is ocean
    strict = grid_cells(spec, aoi, sample_water, GridCellsConfig(min_land_fraction=0.5))
    assert len(strict) < len(cells)
    assert (strict.land_fraction > 0.5).all()


def test_land_fraction_agrees_with_global_land_mask_points(sample_water):
    cells = grid_cells(GridSpec.from_key("healpix_8"), AreaOfInterest.sample_region(), sample_water)
    rng = np.random.default_rng(0)
    for geom, fraction in zip(cells.geometry, cells.land_fraction, strict=True):
        minx, miny, maxx, maxy = geom.bounds
        lon = rng.uniform(minx, maxx, 6000)
        lat = rng.uniform(miny, maxy, 6000)
        inside = shapely.contains_xy(geom, lon, lat)
        share = globe.is_land(lat[inside], lon[inside]).mean()
        assert fraction == pytest.approx(share, abs=0.05)


def test_output_schema(sample_water):
    cells = grid_cells(GridSpec.from_key("healpix_7"), AreaOfInterest.sample_region(), sample_water)
    assert list(cells.columns) == ["cell_id", "land_area_km2", "land_fraction", "geometry"]
    assert cells.crs.to_epsg() == 4326
    assert cells.cell_id.dtype == np.uint64
    assert cells.cell_id.is_unique
    assert ((cells.land_fraction > 0) & (cells.land_fraction <= 1)).all()


@settings(max_examples=25, deadline=None)
@given(
    lon=st.floats(-180, 180),
    lat=st.floats(50, 88),
    width=st.floats(1, 30),
    key=st.sampled_from(["h3_3", "h3_4", "healpix_6", "healpix_7"]),
)
# boxes without a cell centre, near the pole and across 180 degrees
@example(lon=0, lat=88, width=1, key="h3_3")
@example(lon=179.5, lat=60, width=1, key="healpix_6")
@example(lon=10.5, lat=70, width=1, key="h3_3")
@example(lon=0, lat=50, width=1, key="healpix_6")  # a centre on the 0 meridian
@example(lon=180, lat=50, width=1, key="h3_3")  # starts on 180 degrees: one half is a line
def test_any_arctic_box_gives_valid_cells_with_grid_areas(lon, lat, width, key):
    east = lon + width if lon + width <= 180 else lon + width - 360
    aoi = AreaOfInterest.from_bbox((lon, lat, east, min(90, lat + 2)))
    spec = GridSpec.from_key(key)
    try:
        cells = grid_cells(spec, aoi, ALL_LAND)
    except ValueError as err:  # boxes smaller than a cell hold no centre
        assert "smaller than one cell" in str(err)
        # independent: h3 / healpix-geo find no cell centre in the box (or its two halves)
        north = min(90, lat + 2)
        halves = [(lon, lat, east, north)] if east > lon else [(lon, lat, 180, north)]
        if east < lon:
            halves.append((-180, lat, east, north))
        halves = [half for half in halves if half[0] < half[2]]  # h3 cannot fill a line
        assert all(centres_in_box(spec, half).size == 0 for half in halves)
        return
    assert shapely.is_valid(cells.geometry.to_numpy()).all()
    for cell, geom in zip(cells.cell_id[:20], cells.geometry[:20], strict=True):
        assert sphere_area_km2(geom) == pytest.approx(nominal_area_km2(spec, cell), rel=2e-3)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("h3_16", "h3 levels run 0-15"),
        ("healpix_31", "healpix levels run 0-29"),
        ("hex_5", "not a grid level key"),
        ("h3-5", "not a grid level key"),
    ],
)
def test_bad_grid_keys_name_the_valid_ones(key, message):
    with pytest.raises(ValueError, match=message) as err:
        GridSpec.from_key(key)
    assert "h3_3" in str(err.value) and "healpix_10" in str(err.value)


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ("-130,69,-120,68", "minlat < maxlat"),
        ("-130,68,-130,69", "empty bbox"),
        ("-190,60,-120,70", "outside -180..180"),
        ("-130,60,-120", "four numbers"),
        ("a,b,c,d", "not a number"),
    ],
)
def test_bad_boxes_say_how_to_fix_them(bbox, message):
    with pytest.raises(ValueError, match=message):
        AreaOfInterest.from_bbox(bbox)


def test_aoi_smaller_than_a_cell_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than one cell"):
        cell_ids(GridSpec.from_key("h3_3"), AreaOfInterest.from_bbox("-135,67,-134.99,67.01"))


def test_aoi_file_without_crs_is_refused(tmp_path):
    path = tmp_path / "aoi.parquet"
    gpd.GeoDataFrame(geometry=[shapely.box(-135, 67, -134, 68)]).to_parquet(path)
    with pytest.raises(ValueError, match="has no CRS"):
        AreaOfInterest.from_file(path)


def test_aoi_file_is_reprojected(tmp_path):
    path = tmp_path / "aoi.gpkg"
    box = gpd.GeoSeries([shapely.box(-135, 67, -134, 68)], crs="EPSG:4326").to_crs("EPSG:3413")
    gpd.GeoDataFrame(geometry=box).to_file(path)
    aoi = AreaOfInterest.parse(str(path))
    np.testing.assert_allclose(aoi.geometry.bounds, (-135, 67, -134, 68), atol=0.05)
