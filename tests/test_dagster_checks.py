"""Asset checks pass on sound frames and catch each defect they are named after."""

import dagster as dg
import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr

from entropice_dagster.checks import (
    GRID_CELLS_CHECKS,
    WATERMASK_CHECKS,
    cell_ids_unique,
    check_results,
    checked_output,
    degree_days_plausible,
    elevation_plausible,
    footprints_plausible,
    geometries_valid,
    land_fraction_in_0_1,
    polygons_valid,
    rts_area_matches_footprints,
)


def _cells(**columns) -> gpd.GeoDataFrame:
    base = {
        "cell_id": np.array([1, 2, 3], dtype="uint64"),
        "land_area_km2": [10.0, 5.0, 0.5],
        "land_fraction": [1.0, 0.5, 0.05],
    }
    geometry = columns.pop("geometry", [shapely.box(i, 60, i + 1, 61) for i in range(3)])
    return gpd.GeoDataFrame(base | columns, geometry=geometry, crs=4326)


def test_sound_cells_pass_every_check() -> None:
    results = check_results(_cells(), GRID_CELLS_CHECKS)
    assert [r.check_name for r in results] == [c.__name__ for c in GRID_CELLS_CHECKS]
    assert all(r.passed for r in results)


def test_duplicate_ids_fail() -> None:
    result = cell_ids_unique(_cells(cell_id=np.array([7, 7, 3], dtype="uint64")))
    assert not result.passed
    assert result.metadata["duplicated_rows"].value == 2
    assert result.metadata["examples"].value == [7]


@pytest.mark.parametrize(
    "geometry",
    [
        # a bow tie (self-intersecting ring) is invalid
        [shapely.Polygon([(0, 60), (1, 61), (1, 60), (0, 61)]), shapely.box(1, 60, 2, 61), None],
        [shapely.box(0, 60, 1, 61), shapely.Polygon(), shapely.box(2, 60, 3, 61)],
    ],
)
def test_invalid_or_empty_geometries_fail(geometry) -> None:
    result = geometries_valid(_cells(geometry=geometry))
    assert not result.passed
    assert result.metadata["invalid_geometries"].value >= 1


def test_wrong_crs_fails() -> None:
    assert not geometries_valid(_cells().to_crs(3413)).passed


@pytest.mark.parametrize(
    ("fraction", "area"),
    [
        ([1.0, 0.0, 0.5], [1.0, 1.0, 1.0]),  # an ocean-only cell kept
        ([1.2, 0.5, 0.5], [1.0, 1.0, 1.0]),
        ([1.0, np.nan, 0.5], [1.0, 1.0, 1.0]),
        ([1.0, 0.5, 0.5], [1.0, -1.0, 1.0]),
    ],
)
def test_impossible_land_fractions_or_areas_fail(fraction, area) -> None:
    result = land_fraction_in_0_1(_cells(land_fraction=fraction, land_area_km2=area))
    assert not result.passed
    assert result.metadata["out_of_range"].value == 1


def test_water_tiles_may_be_empty_but_cells_may_not() -> None:
    frame = _cells(
        geometry=[shapely.box(0, 60, 1, 61), shapely.Polygon(), shapely.box(2, 60, 3, 61)]
    )
    assert polygons_valid(frame).passed
    assert not geometries_valid(frame).passed
    assert [r.check_name for r in check_results(frame, WATERMASK_CHECKS)] == ["polygons_valid"]
    bow_tie = shapely.Polygon([(0, 60), (1, 61), (1, 60), (0, 61)])
    assert not polygons_valid(_cells(geometry=[bow_tie, *frame.geometry[1:]])).passed


def _l2(**variables) -> xr.Dataset:
    n = len(next(iter(variables.values())))
    return xr.Dataset(
        {name: ("cell_ids", np.asarray(v, float)) for name, v in variables.items()},
        coords={"cell_ids": np.arange(n, dtype="uint64")},
    )


@pytest.mark.parametrize(
    ("tdd", "n_cells", "passed"),
    [
        ([10.0, 900.0, np.nan], 3, True),  # a cell without ERA5 pixels is NaN, not a failure
        ([10.0, 4100.0, 5.0], 3, False),  # above the plausible range
        ([-1.0, 10.0, 5.0], 3, False),  # negative degree days
        ([np.nan, np.nan, np.nan], 3, False),  # no finite value at all
        ([10.0, 20.0, 30.0], 4, False),  # a grid cell is missing
    ],
)
def test_degree_days_plausible(tdd, n_cells, passed) -> None:
    cells = list(range(n_cells))  # only the count of the grid's cells matters
    result = degree_days_plausible(_l2(thawing_degree_days=tdd), cells)
    assert result.passed is passed
    assert result.check_name == "degree_days_plausible"


@pytest.mark.parametrize(
    ("elevation", "passed"),
    [([0.0, 300.0, 6400.0], True), ([0.0, -250.0, 10.0], False), ([0.0, 7000.0, 1.0], False)],
)
def test_elevation_plausible(elevation, passed) -> None:
    result = elevation_plausible(_l2(elevation_mean=elevation), _cells())
    assert result.passed is passed
    assert result.metadata["min"].value == min(elevation)


@pytest.mark.parametrize(
    ("labelled", "expected", "passed"),
    [([1.0, 2.0], 3.0, True), ([1.0, 2.0], 3.0 * (1 + 2e-3), False), ([0.0, 0.0], 0.0, True)],
)
def test_rts_area_matches_footprints(labelled, expected, passed) -> None:
    result = rts_area_matches_footprints(_l2(rts_area_km2=labelled), expected)
    assert result.passed is passed


def test_a_failed_check_stops_the_output() -> None:
    failing = dg.AssetCheckResult(check_name="x", passed=False)
    events = checked_output("value", {}, [failing])
    assert next(events) is failing
    with pytest.raises(dg.Failure, match="blocking checks failed: x"):
        next(events)
    passing = dg.AssetCheckResult(check_name="x", passed=True)
    (*_, output) = checked_output("value", {"n": 1}, [passing])
    assert isinstance(output, dg.Output) and output.value == "value"


def _footprints(areas_m2: list[float]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"year": np.full(len(areas_m2), 2021, np.int16), "area_m2": areas_m2},
        geometry=[shapely.box(-134, 67, -133.99, 67.01)] * len(areas_m2),
        crs=4326,
    )


@pytest.mark.parametrize(
    ("areas", "passed"),
    [
        ([288.0, 2_200.0, 2_500.0, 636_962.0], True),  # the DARTS v1 range and median
        ([240_000.0], True),  # one large slump
        ([], False),  # nothing read: no footprint at all
        ([0.0, 0.0], False),  # lines or points made polygons of no area
        ([3.0, 5.0, 8.0], False),  # points buffered to dots
        ([2_000.0, 400e6], False),  # a PlanetScope scene (image footprint) among them
        ([5e6, 6e6, 7e6], False),  # areas scaled up by a wrong CRS
    ],
)
def test_footprints_plausible(areas, passed) -> None:
    result = footprints_plausible(_footprints(areas))
    assert result.passed is passed
    assert result.metadata["footprints"].value == len(areas)
    assert result.metadata["total_area_km2"].value == pytest.approx(sum(areas) / 1e6)
