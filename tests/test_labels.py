"""DARTS reading and RTS labels, checked against geopandas overlay and hand computations."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xdggs

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.ingest.darts import (
    dissolve_per_year,
    find_darts_files,
    footprint_area_in_cells_km2,
    read_footprints,
    rts_labels,
)
from entropice_core.io.zarr import dataset_table, read_dataset, write_dataset
from entropice_core.spatial.grids import grid_cells
from entropice_core.spatial.watermask import water_polygons

LAEA = "EPSG:6931"
ALL_LAND = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)


def random_footprints(n: int, bbox, seed: int = 0) -> gpd.GeoDataFrame:
    """Lobate-ish polygons of 20 m to 2 km radius at random places and years."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(bbox[0], bbox[2], n)
    lat = rng.uniform(bbox[1], bbox[3], n)
    centres = gpd.GeoSeries(gpd.points_from_xy(lon, lat), crs=4326).to_crs(LAEA)
    shapes = centres.buffer(rng.uniform(20, 2000, n), quad_segs=4)
    footprints = gpd.GeoDataFrame(
        {"year": rng.integers(2018, 2024, n).astype(np.int16), "source": "test"},
        geometry=shapes.to_crs(4326),
        crs="EPSG:4326",
    )
    # As read_footprints stores it: the area in EPSG:6931 of the EPSG:4326 polygon.
    footprints["area_m2"] = footprints.to_crs(LAEA).area
    return footprints


def overlay_reference(footprints: gpd.GeoDataFrame, cells: gpd.GeoDataFrame) -> pd.Series:
    """Independent computation: geopandas overlay in an equal-area CRS, grouped by cell/year."""
    projected_cells = cells[["cell_id", "geometry"]].copy()
    projected_cells["geometry"] = projected_cells.geometry.segmentize(0.01)
    pieces = gpd.overlay(footprints.to_crs(LAEA), projected_cells.to_crs(LAEA), how="intersection")
    pieces["area_km2"] = pieces.area / 1e6
    return pieces.groupby(["cell_id", "year"]).area_km2.sum()


@pytest.fixture(scope="module")
def sample_cells() -> dict[str, gpd.GeoDataFrame]:
    aoi = AreaOfInterest.sample_region()
    water = water_polygons(aoi)
    return {key: grid_cells(GridSpec.from_key(key), aoi, water) for key in ("h3_5", "healpix_8")}


@pytest.mark.parametrize("key", ["h3_5", "healpix_8"])
def test_areas_equal_geopandas_overlay_on_random_polygons(sample_cells, key):
    cells = sample_cells[key]
    footprints = random_footprints(1500, (-138, 66.7, -132, 69.0))
    labels = rts_labels(footprints, cells, GridSpec.from_key(key))
    ours = dataset_table(labels).set_index(["cell_id", "year"])
    ours = ours.rts_area_km2[ours.rts_area_km2 > 0]
    reference = overlay_reference(footprints, cells)
    joined = pd.concat([ours.rename("ours"), reference.rename("ref")], axis=1).fillna(0)
    np.testing.assert_allclose(joined.ours, joined.ref, rtol=1e-9, atol=1e-12)
    assert len(joined) > 100


def test_a_footprint_straddling_two_cells_splits_its_area():
    cells = gpd.GeoDataFrame(
        {"cell_id": np.array([1, 2], np.uint64), "land_area_km2": [100.0, 100.0]},
        geometry=[shapely.box(-135, 67, -134, 68), shapely.box(-134, 67, -133, 68)],
        crs="EPSG:4326",
    )
    # A rectangle 3/4 in the west cell and 1/4 in the east cell (equal widths in lon at one lat).
    rect = shapely.box(-134.003, 67.5, -133.999, 67.501)
    footprints = gpd.GeoDataFrame(
        {"year": np.array([2020], np.int16), "source": "t"}, geometry=[rect], crs="EPSG:4326"
    )
    labels = rts_labels(footprints, cells, GridSpec.from_key("h3_5"))
    area = labels.rts_area_km2.sel(year=2020).to_numpy()
    assert area[0] / area.sum() == pytest.approx(0.75, rel=1e-3)
    total = footprints.to_crs(LAEA).area.iloc[0] / 1e6
    assert area.sum() == pytest.approx(total, rel=1e-9)
    # The count goes to one cell only: the one holding the representative point.
    assert labels.rts_count.sel(year=2020).to_numpy().tolist() == [1, 0]
    assert labels.rts_density.sel(year=2020).to_numpy()[0] == pytest.approx(10.0)


def test_footprint_across_the_antimeridian_is_split_and_labelled(tmp_path):
    # A 2 x 1 km rectangle around (180 E, 67 N), given in EPSG:3413 as ARTS-like files are.
    centre = gpd.GeoSeries(gpd.points_from_xy([180.0], [67.0]), crs=4326).to_crs(3413)[0]
    rect = shapely.box(centre.x - 1000, centre.y - 500, centre.x + 1000, centre.y + 500)
    path = tmp_path / "darts.parquet"
    gpd.GeoDataFrame({"year": [2021]}, geometry=[rect], crs=3413).to_parquet(path)
    footprints = read_footprints(path)
    geom = footprints.geometry.iloc[0]
    assert geom.geom_type == "MultiPolygon"
    assert footprints.total_bounds[0] >= -180 and footprints.total_bounds[2] <= 180
    true_area = gpd.GeoSeries([rect], crs=3413).to_crs(LAEA).area.iloc[0]
    assert footprints.area_m2.iloc[0] == pytest.approx(true_area, rel=1e-4)

    spec = GridSpec.from_key("h3_4")
    cells = grid_cells(spec, AreaOfInterest.from_bbox("178,66,-178,68"), ALL_LAND)
    labels = rts_labels(footprints, cells, spec)
    assert labels.rts_area_km2.sum() == pytest.approx(true_area / 1e6, rel=1e-4)
    assert int(labels.rts_count.sum()) == 1


def test_years_without_footprints_in_the_area_are_zero(sample_cells):
    cells = sample_cells["h3_5"]
    footprints = random_footprints(50, (-138, 66.7, -132, 69.0))
    footprints["year"] = np.where(np.arange(50) < 25, 2018, 2022).astype(np.int16)
    # A 2020 footprint far outside the sample region: the year exists, this area has none.
    far = random_footprints(1, (10, 70, 11, 71)).assign(year=np.int16(2020))
    labels = rts_labels(
        pd.concat([footprints, far], ignore_index=True), cells, GridSpec.from_key("h3_5")
    )
    assert labels.year.to_numpy().tolist() == [2018, 2020, 2022]
    assert float(labels.rts_area_km2.sel(year=2020).sum()) == 0.0
    assert int(labels.rts_count.sel(year=2020).sum()) == 0
    assert int(labels.rts_count.sum()) == 50


def test_no_footprints_at_all_gives_zero_labels_for_every_cell(sample_cells):
    cells = sample_cells["healpix_8"]
    empty = gpd.GeoDataFrame({"year": np.array([], np.int16), "source": []}, geometry=[], crs=4326)
    labels = rts_labels(empty, cells, GridSpec.from_key("healpix_8"))
    assert labels.sizes["cell_ids"] == len(cells)
    assert float(labels.rts_area_km2_all_years.sum()) == 0.0


def test_a_growing_slump_is_counted_once_over_all_years():
    cells = gpd.GeoDataFrame(
        {"cell_id": np.array([7], np.uint64), "land_area_km2": [50.0]},
        geometry=[shapely.box(-135, 67, -134, 68)],
        crs="EPSG:4326",
    )
    small = shapely.box(-134.5, 67.5, -134.499, 67.5005)
    grown = shapely.box(-134.5005, 67.4998, -134.4985, 67.5008)
    elsewhere = shapely.box(-134.2, 67.2, -134.199, 67.2005)
    footprints = gpd.GeoDataFrame(
        {"year": np.array([2019, 2021, 2021], np.int16), "source": "t"},
        geometry=[small, grown, elsewhere],
        crs="EPSG:4326",
    )
    labels = rts_labels(footprints, cells, GridSpec.from_key("h3_5"))
    assert int(labels.rts_count_all_years[0]) == 2
    union = shapely.union_all([small, grown, elsewhere])
    expected = gpd.GeoSeries([union], crs=4326).to_crs(LAEA).area.iloc[0] / 1e6
    assert float(labels.rts_area_km2_all_years[0]) == pytest.approx(expected, rel=1e-9)
    assert labels.rts_count.sel(year=2021).item() == 2


def test_invalid_and_self_intersecting_polygons_are_repaired_and_reported(tmp_path):
    bowtie = shapely.Polygon([(-134, 67), (-133.99, 67.005), (-133.99, 67), (-134, 67.005)])
    ok = shapely.box(-134.5, 67.5, -134.49, 67.505)
    path = tmp_path / "darts.gpkg"
    gpd.GeoDataFrame({"year": [2020, 2021], "id": [1, 2]}, geometry=[bowtie, ok], crs=4326).to_file(
        path
    )
    footprints = read_footprints(path)
    assert footprints.attrs["repaired"] == 1
    assert shapely.is_valid(footprints.geometry.to_numpy()).all()
    # The bow tie becomes its two triangles; its area is their sum, computed independently.
    triangles = shapely.make_valid(bowtie)
    expected = gpd.GeoSeries([triangles], crs=4326).to_crs(LAEA).area.iloc[0]
    assert footprints.area_m2.iloc[0] == pytest.approx(expected, rel=1e-9)


def test_level1_footprints_are_dissolved_per_year(tmp_path):
    a = shapely.box(-134.5, 67.5, -134.49, 67.505)
    b = shapely.box(-134.495, 67.5, -134.485, 67.505)  # overlaps a: same slump, another image
    path = tmp_path / "level1.parquet"
    gpd.GeoDataFrame(
        {"image_date": ["2021-07-01", "2021-08-03"]}, geometry=[a, b], crs=4326
    ).to_parquet(path)
    footprints = read_footprints(path)
    assert len(footprints) == 1 and footprints.year.iloc[0] == 2021
    assert len(dissolve_per_year(footprints)) == 1


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            gpd.GeoDataFrame({"year": [2020]}, geometry=[shapely.box(0, 70, 0.01, 70.01)]),
            "has no CRS",
        ),
        (
            gpd.GeoDataFrame(
                {"year": [1900]}, geometry=[shapely.box(0, 70, 0.01, 70.01)], crs=4326
            ),
            "impossible year",
        ),
        (
            gpd.GeoDataFrame({"kind": ["x"]}, geometry=[shapely.box(0, 70, 0.01, 70.01)], crs=4326),
            "no 'year' column",
        ),
    ],
)
def test_bad_darts_files_name_the_file_and_the_fix(tmp_path, frame, message):
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path)
    with pytest.raises(ValueError, match=message) as err:
        read_footprints(path)
    assert "bad.parquet" in str(err.value)


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.gpkg"
    path.write_bytes(b"not a geopackage")
    with pytest.raises(ValueError, match=r"broken\.gpkg"):
        read_footprints(path)


def test_labels_zarr_decodes_with_xdggs(tmp_path, sample_cells):
    spec = GridSpec.from_key("healpix_8")
    labels = rts_labels(
        random_footprints(100, (-138, 66.7, -132, 69.0)), sample_cells[spec.key], spec
    )
    write_dataset(labels, tmp_path / "labels.zarr")
    decoded = xdggs.decode(read_dataset(tmp_path / "labels.zarr"))
    assert decoded.dggs.grid_info.level == 8
    np.testing.assert_array_equal(decoded.rts_count.to_numpy(), labels.rts_count.to_numpy())


@pytest.mark.parametrize("key", ["h3_5", "healpix_8"])
def test_total_area_check_agrees_with_the_labels(sample_cells, key):
    cells = sample_cells[key]
    footprints = random_footprints(800, (-138.6, 66.4, -131.4, 69.3), seed=3)
    labels = rts_labels(footprints, cells, GridSpec.from_key(key))
    total = footprint_area_in_cells_km2(footprints, cells)
    assert float(labels.rts_area_km2.sum()) == pytest.approx(total, rel=1e-3)
    # Footprints outside every cell (ocean, beyond the AOI) are not in the total.
    assert total < footprints.to_crs(LAEA).area.sum() / 1e6


def test_find_darts_files_prefers_geoparquet_and_names_missing_folders(tmp_path):
    for name in ("A_level2.parquet", "A_level2.gpkg", "B_level2.gpkg", "C_level1.gpkg"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_darts_files(tmp_path)] == ["A_level2.parquet", "B_level2.gpkg"]
    with pytest.raises(FileNotFoundError, match=r"doi:10\.18739/A22B8VD7C"):
        find_darts_files(tmp_path / "nope")
