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
    OfflineDartsClient,
    dissolve_per_year,
    find_darts_files,
    footprint_area_in_cells_km2,
    observed_area_km2,
    read_coverage,
    read_darts,
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
    names = ("A_level2.parquet", "A_level2.gpkg", "B_level2.gpkg", "C_level1.gpkg")
    for name in (*names, "A_coverage_level2.parquet", "A_coverage.gpkg"):
        (tmp_path / name).write_bytes(b"")
    # the footprint pattern never picks up a coverage layer, whatever its name ends with
    assert [p.name for p in find_darts_files(tmp_path)] == ["A_level2.parquet", "B_level2.gpkg"]
    assert [p.name for p in OfflineDartsClient().coverage_files(tmp_path)] == [
        "A_coverage.gpkg",
        "A_coverage_level2.parquet",
    ]
    with pytest.raises(FileNotFoundError, match=r"doi:10\.18739/A22B8VD7C"):
        find_darts_files(tmp_path / "nope")


# --- observation coverage ------------------------------------------------------------------


def _frame(geoms, years, crs=4326) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"year": np.asarray(years, np.int16), "source": "t"}, geometry=list(geoms), crs=crs
    )


def _squares(n: int = 3) -> gpd.GeoDataFrame:
    """``n`` cells of 1 x 0.5 degrees side by side at 67 N (about 2,400 km^2 each)."""
    return gpd.GeoDataFrame(
        {"cell_id": np.arange(1, n + 1, dtype=np.uint64), "land_area_km2": np.full(n, 1000.0)},
        geometry=[shapely.box(-135 + i, 67, -134 + i, 67.5) for i in range(n)],
        crs="EPSG:4326",
    )


def _laea_area(geoms) -> np.ndarray:
    return gpd.GeoSeries(geoms, crs=4326).segmentize(0.01).to_crs(LAEA).area.to_numpy() / 1e6


def test_observed_fraction_equals_the_geopandas_overlay_share():
    cells = _squares(3)
    # 2020: a tilted quadrilateral over parts of all three cells; 2021: a hole in a big box.
    tilted = shapely.Polygon([(-134.8, 67.05), (-132.3, 67.2), (-132.5, 67.45), (-134.6, 67.4)])
    holed = shapely.box(-136, 66, -131, 68).difference(shapely.box(-133.9, 67.1, -133.2, 67.6))
    coverage = _frame([tilted, holed], [2020, 2021])
    labels = rts_labels(_frame([], []), cells, GridSpec.from_key("h3_5"), coverage=coverage)
    cell_area = _laea_area(cells.geometry)
    for year, cover in ((2020, tilted), (2021, holed)):
        # independent: geopandas overlay of the densified outlines, in the equal-area CRS
        projected = gpd.GeoDataFrame(
            geometry=gpd.GeoSeries([cover], crs=4326).segmentize(0.01).to_crs(LAEA)
        )
        cells_laea = cells.assign(geometry=cells.geometry.segmentize(0.01)).to_crs(LAEA)
        pieces = gpd.overlay(cells_laea, projected, how="intersection")
        share = (pieces.set_index("cell_id").area / 1e6).reindex(cells.cell_id, fill_value=0)
        np.testing.assert_allclose(
            labels.observed_fraction.sel(year=year), share.to_numpy() / cell_area, atol=1e-7
        )
    assert labels.observed_fraction.sel(year=2021).to_numpy()[[0, 2]].tolist() == [1.0, 1.0]
    # the metadata's observed area: the cells' covered area per year
    assert labels.attrs["observed_area_km2"]["2021"] == pytest.approx(
        float((labels.observed_fraction.sel(year=2021) * cell_area).sum()), rel=1e-9
    )


def _small(lon: float, lat: float) -> shapely.Polygon:
    return shapely.box(lon, lat, lon + 0.01, lat + 0.005)


def test_unobserved_cell_years_are_nan_and_out_of_the_all_years_aggregates():
    cells = _squares(3)  # A, B, C
    in_a, in_a_later = _small(-134.7, 67.1), _small(-134.3, 67.3)
    in_b, in_b_gap_year = _small(-133.8, 67.1), _small(-133.85, 67.4)
    in_c = _small(-132.5, 67.2)
    footprints = _frame(
        [in_a, in_a_later, in_b, in_b_gap_year, in_c], [2019, 2020, 2019, 2020, 2019]
    )
    footprints["area_m2"] = footprints.to_crs(LAEA).area
    # 2019 images A and B whole; 2020 images A and a 30 % strip of B (holding in_b_gap_year:
    # DARTS maps what it images, but 30 % is too little to call B observed). C: never.
    coverage = _frame(
        [shapely.box(-135, 67, -133, 67.5), shapely.box(-135, 67, -133.7, 67.5)], [2019, 2020]
    )
    labels = rts_labels(footprints, cells, GridSpec.from_key("h3_5"), coverage=coverage)

    np.testing.assert_allclose(labels.observed_fraction.sel(year=2019), [1, 1, 0], atol=1e-9)
    np.testing.assert_allclose(labels.observed_fraction.sel(year=2020), [1, 0.3, 0], atol=1e-3)
    assert labels.observed_years.to_numpy().tolist() == [2, 1, 0]
    assert labels.observed_years.dtype.kind == "i"
    for name in ("rts_count", "rts_area_km2", "rts_density", "rts_coverage"):
        assert labels[name].dtype.kind == "f"
        values = labels[name].to_numpy()
        assert np.isnan(values[1, 1]) and np.isnan(values[2]).all(), name
        assert np.isfinite(values[0]).all() and np.isfinite(values[1, 0]), name
    assert labels.rts_count.to_numpy()[0].tolist() == [1, 1]
    assert labels.rts_count.to_numpy()[1, 0] == 1
    area = footprints.area_m2.to_numpy() / 1e6
    # all years: A both footprints, B only the 2019 one, C (never observed) NaN
    np.testing.assert_array_equal(labels.rts_count_all_years.to_numpy()[:2], [2, 1])
    np.testing.assert_allclose(
        labels.rts_area_km2_all_years.to_numpy()[:2], [area[0] + area[1], area[2]], rtol=1e-9
    )
    for name in ("rts_count_all_years", "rts_area_km2_all_years", "rts_density_all_years"):
        assert np.isnan(labels[name].to_numpy()[2]), name
    # the asset check's independent total counts the observed cell-years only
    observed = labels.observed_fraction >= labels.attrs["min_observed_fraction"]
    assert float(labels.rts_area_km2.sum()) == pytest.approx(
        footprint_area_in_cells_km2(footprints, cells, observed), rel=1e-6
    )
    assert float(labels.rts_area_km2.sum()) == pytest.approx(area[:3].sum(), rel=1e-9)


def test_the_threshold_decides_which_cell_years_count():
    cells = _squares(1)
    coverage = _frame([shapely.box(-135, 67, -134.6, 67.5)], [2020])  # 40 % of the cell
    footprints = _frame([_small(-134.9, 67.2)], [2020])
    spec = GridSpec.from_key("h3_5")
    assert np.isnan(rts_labels(footprints, cells, spec, coverage).rts_count.item())
    assert rts_labels(footprints, cells, spec, coverage, 0.3).rts_count.item() == 1
    with pytest.raises(ValueError, match="min_observed_fraction"):
        rts_labels(footprints, cells, spec, coverage, 0.0)


def test_full_or_no_coverage_gives_the_labels_without_coverage(sample_cells):
    cells = sample_cells["h3_5"]
    spec = GridSpec.from_key("h3_5")
    footprints = random_footprints(400, (-138, 66.7, -132, 69.0), seed=5)
    plain = rts_labels(footprints, cells, spec)
    assert float(plain.observed_fraction.min()) == 1.0
    assert (plain.observed_years == plain.sizes["year"]).all()
    assert plain.attrs["observation"].startswith("no coverage layer")
    # counts as an independent point-in-cell join gives them (one per footprint)
    points = footprints.assign(geometry=footprints.geometry.representative_point())
    joined = gpd.sjoin(points, cells[["cell_id", "geometry"]], predicate="within")
    expected = joined.groupby(["cell_id", "year"]).size()
    ours = dataset_table(plain).set_index(["cell_id", "year"]).rts_count
    np.testing.assert_array_equal(ours[ours > 0].sort_index(), expected.sort_index())
    everywhere = _frame([shapely.box(-180, 50, 180, 90)] * 6, range(2018, 2024))
    full = rts_labels(footprints, cells, spec, coverage=everywhere)
    for name in plain.data_vars:
        np.testing.assert_allclose(full[name], plain[name], rtol=1e-12, err_msg=str(name))
    empty = rts_labels(footprints, cells, spec, coverage=everywhere.iloc[:0])
    for name in plain.data_vars:
        np.testing.assert_array_equal(empty[name], plain[name], err_msg=str(name))


def test_coverage_must_cover_every_year_with_footprints():
    cells = _squares(1)
    footprints = _frame([_small(-134.9, 67.2), _small(-134.5, 67.2)], [2020, 2021])
    coverage = _frame([cells.geometry.iloc[0]], [2020])
    with pytest.raises(ValueError, match=r"no imaged area in \[2021\]"):
        rts_labels(footprints, cells, GridSpec.from_key("h3_5"), coverage=coverage)


def test_read_coverage_dissolves_each_year_and_repairs(tmp_path):
    bowtie = shapely.Polygon([(-134, 67), (-133, 67.5), (-133, 67), (-134, 67.5)])
    images = [shapely.box(-135, 67, -134, 68), shapely.box(-134.5, 67, -133.5, 68), bowtie]
    path = tmp_path / "DARTS_coverage.gpkg"
    gpd.GeoDataFrame(
        {"date": ["2019-07-02", "2019-08-20", "2020-07-15"]}, geometry=images, crs=4326
    ).to_file(path)
    coverage = read_coverage([path])
    assert coverage["year"].tolist() == [2019, 2020] and list(coverage.columns) == [
        "year",
        "geometry",
    ]
    assert coverage.attrs["repaired"] == 1 and coverage.crs.to_epsg() == 4326
    assert coverage.geometry.iloc[0].equals(shapely.box(-135, 67, -133.5, 68))
    areas = observed_area_km2(coverage)
    assert areas[2019] == pytest.approx(_laea_area([shapely.box(-135, 67, -133.5, 68)])[0])
    empty = read_coverage([])
    assert empty.empty and list(empty.columns) == ["year", "geometry"]
    assert observed_area_km2(empty) == {}


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (gpd.GeoDataFrame({"year": [2020]}, geometry=[shapely.box(0, 70, 1, 71)]), "has no CRS"),
        (
            gpd.GeoDataFrame({"kind": ["x"]}, geometry=[shapely.box(0, 70, 1, 71)], crs=4326),
            "no 'year' column",
        ),
        (
            gpd.GeoDataFrame({"year": [3000]}, geometry=[shapely.box(0, 70, 1, 71)], crs=4326),
            "impossible year",
        ),
    ],
)
def test_bad_coverage_files_name_the_file_and_the_fix(tmp_path, frame, message):
    path = tmp_path / "DARTS_coverage.parquet"
    frame.to_parquet(path)
    with pytest.raises(ValueError, match=message) as err:
        read_coverage([path])
    assert "DARTS_coverage.parquet" in str(err.value)


SLUMP = shapely.box(-134.5, 67.5, -134.49, 67.505)


def _write(tmp_path, name: str, geometry: list, crs, years=None):
    path = tmp_path / name
    years = years if years is not None else [2021] * len(geometry)
    gpd.GeoDataFrame({"year": years}, geometry=geometry, crs=crs).to_parquet(path)
    return path


def test_points_and_lines_are_refused_with_a_count_per_type(tmp_path):
    points = [shapely.Point(-134.5 + i / 100, 67.5) for i in range(3)]
    line = shapely.LineString([(-134, 67), (-133.9, 67.1)])
    path = _write(tmp_path, "DARTS_points_level2.parquet", [*points, line, SLUMP], 4326)
    with pytest.raises(ValueError) as err:
        read_footprints(path)
    text = str(err.value)
    assert str(path) in text
    assert "must be Polygon or MultiPolygon" in text
    assert "3 Point" in text and "1 LineString" in text and "1 Polygon" in text
    assert "4 are not areas" in text and "shapely.buffer" in text
    with pytest.raises(ValueError, match="coverage polygons must be Polygon or MultiPolygon"):
        read_coverage([path])


def test_projected_metres_labelled_lonlat_are_refused(tmp_path):
    # EPSG:3413 coordinates (Banks Island, as ARTS files hold them) declared as EPSG:4326.
    box = shapely.box(-1915451, -489398, -1915000, -489000)
    path = _write(tmp_path, "mislabelled.parquet", [box], 4326)
    with pytest.raises(ValueError) as err:
        read_footprints(path)
    text = str(err.value)
    assert "mislabelled.parquet" in text and "lon -1.91545e+06..-1.915e+06" in text
    assert "do not fit its declared CRS EPSG:4326" in text and "set_crs" in text


def test_longitudes_shifted_by_360_are_refused(tmp_path):
    shifted = shapely.affinity.translate(SLUMP, 360)
    path = _write(tmp_path, "shifted.parquet", [SLUMP, shifted], 4326)
    with pytest.raises(ValueError) as err:
        read_footprints(path)
    text = str(err.value)
    assert "shifted.parquet" in text and "lon -134.5..225.51" in text
    assert "shifted by 360" in text and "subtract 360" in text


def test_lonlat_labelled_as_a_polar_projection_is_refused(tmp_path):
    # lon/lat degrees declared EPSG:3413: reprojected they sit within metres of the pole.
    path = _write(tmp_path, "polar.parquet", [SLUMP], 3413)
    with pytest.raises(ValueError) as err:
        read_footprints(path)
    text = str(err.value)
    assert "polar.parquet" in text and "north of 84 N where there is no land" in text
    assert "EPSG:3413" in text


def test_a_release_outside_the_area_of_interest_is_refused(tmp_path):
    banks = shapely.box(-121.5, 72.5, -121.49, 72.505)  # Banks Island, not the Peel Plateau
    path = _write(tmp_path, "DARTS_banks_level2.parquet", [banks], 4326)
    area = AreaOfInterest.sample_region()
    with pytest.raises(ValueError) as err:
        read_darts([path], area)
    text = str(err.value)
    assert "no DARTS footprint lies in the area of interest 'sample region (Peel Plateau)'" in text
    assert "(lon -138.5..-131.5, lat 66.5..69.2)" in text
    assert f"{path}: lon -121.5..-121.49, lat 72.5..72.505" in text
    # A release larger than the area is fine: one footprint inside is enough.
    inside = _write(tmp_path, "DARTS_peel_level2.parquet", [SLUMP], 4326)
    assert len(read_darts([path, inside], area)) == 2
