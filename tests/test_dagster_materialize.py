"""The grid stage of the end-to-end run on the sample region (``sample_graph``), direct asset
calls, and a failed blocking check."""

from pathlib import Path

import dagster as dg
import geopandas as gpd
import numpy as np
import pytest
import shapely
from conftest import GRAPH_LEVELS

import entropice_core.spatial.grids
from entropice_core import plots
from entropice_core.config import SAMPLE_REGION_BBOX, AreaOfInterest
from entropice_core.io.geoparquet import read_geoparquet, write_geoparquet
from entropice_dagster.assets.grids import grid_cells, watermask
from entropice_dagster.resources import (
    AreaOfInterestResource,
    GridSettingsResource,
)

KEYS = GRAPH_LEVELS
GRID_CHECKS = {"cell_ids_unique", "geometries_valid", "land_fraction_in_0_1"}


@pytest.fixture(scope="module")
def materialised(sample_graph) -> tuple[Path, dict]:
    """The watermask and grid_cells runs of the end-to-end run (``sample_graph``)."""
    results = {None: sample_graph.run("watermask")}
    results.update({key: sample_graph.run("grid_cells", key) for key in KEYS})
    return sample_graph.data_dir, results


@pytest.mark.slow
def test_files_follow_the_storage_layout(materialised) -> None:
    data_dir, _ = materialised
    water = read_geoparquet(data_dir / "watermask" / "watermask.parquet")
    assert water.crs.to_epsg() == 4326
    assert {"geometry", "tile", "source"} <= set(water.columns)
    for key in KEYS:
        cells = read_geoparquet(data_dir / "grids" / f"{key}.parquet")
        assert set(cells.columns) == {"cell_id", "geometry", "land_area_km2", "land_fraction"}
        assert cells.crs.to_epsg() == 4326
        assert cells["cell_id"].dtype == np.uint64
        assert len(cells) > 0
    # the land-fraction maps are metadata only: nothing but the cells is written
    assert sorted(p.name for p in (data_dir / "grids").iterdir()) == sorted(
        f"{key}.parquet" for key in KEYS
    )


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_materialisation_metadata(materialised, key: str) -> None:
    data_dir, results = materialised
    (event,) = results[key].asset_materializations_for_node("grid_cells")
    assert event.partition == key
    meta = {name: value.value for name, value in event.metadata.items()}
    cells = read_geoparquet(data_dir / "grids" / f"{key}.parquet")
    assert meta["dagster/partition_row_count"] == len(cells)
    assert meta["path"] == str(data_dir / "grids" / f"{key}.parquet")
    assert meta["bytes"] > 0
    assert f"{meta['grid']}_{meta['level']}" == key
    assert meta["land_area_km2"] == pytest.approx(cells["land_area_km2"].sum(), rel=1e-3)
    minlon, minlat, maxlon, maxlat = meta["bbox"]
    assert minlon < maxlon and minlat < maxlat
    # cells cover the sample region; their outlines may stick out by up to a cell
    assert shapely.box(*meta["bbox"]).intersects(shapely.box(*SAMPLE_REGION_BBOX))
    assert "cell_id" in meta["preview"] and "geometry" not in meta["preview"]
    assert meta["map_preview"].startswith(f"![{key}: land fraction](data:image/png;base64,")


@pytest.mark.slow
def test_checks_ran_and_passed(materialised) -> None:
    _, results = materialised
    water_checks = [
        e for e in results[None].get_asset_check_evaluations() if e.asset_key.path == ["watermask"]
    ]
    assert {(e.check_name, e.passed) for e in water_checks} == {("polygons_valid", True)}
    for key in KEYS:
        evaluations = [
            e
            for e in results[key].get_asset_check_evaluations()
            if e.asset_key.path == ["grid_cells"]
        ]
        assert {e.check_name for e in evaluations} == GRID_CHECKS
        failed = {e.check_name: dict(e.metadata) for e in evaluations if not e.passed}
        assert not failed, failed


def _water() -> gpd.GeoDataFrame:
    """A stand-in sea along the northern edge of the sample region (for a stubbed core)."""
    minlon, _, maxlon, maxlat = SAMPLE_REGION_BBOX
    sea = shapely.box(minlon, maxlat - 0.6, maxlon, maxlat)
    return gpd.GeoDataFrame({"tile": ["t"], "source": ["test"]}, geometry=[sea], crs=4326)


@pytest.mark.slow
def test_direct_asset_call(materialised, tmp_path: Path) -> None:
    data_dir, _ = materialised
    events = list(
        grid_cells(
            context=dg.build_asset_context(partition_key="h3_3"),
            watermask=read_geoparquet(data_dir / "watermask" / "watermask.parquet"),
            area_of_interest=AreaOfInterestResource(aoi="sample"),
            grid_settings=GridSettingsResource(),
        )
    )
    (output,) = [e for e in events if isinstance(e, dg.Output)]
    checks = [e for e in events if isinstance(e, dg.AssetCheckResult)]
    cells = output.value
    assert isinstance(cells, gpd.GeoDataFrame) and len(cells) > 0
    assert (output.metadata["grid"].value, output.metadata["level"].value) == ("h3", 3)
    assert {r.check_name: r.passed for r in checks} == dict.fromkeys(GRID_CHECKS, True)
    assert output.metadata["map_preview"].value.startswith("![h3_3: land fraction](data:image")


def test_failed_blocking_check_fails_the_run(
    tmp_path: Path, make_resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicate cell ids stop the run before anything is written: the previous file stays."""

    def duplicated_cells(spec, aoi: AreaOfInterest, water, config, progress) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame(
            {
                "cell_id": np.array([5, 5], dtype="uint64"),
                "land_area_km2": [1.0, 1.0],
                "land_fraction": [1.0, 1.0],
            },
            geometry=[shapely.box(-135, 67, -134, 68), shapely.box(-134, 67, -133, 68)],
            crs=4326,
        )

    monkeypatch.setattr(entropice_core.spatial.grids, "grid_cells", duplicated_cells)
    data_dir = tmp_path / "data"
    write_geoparquet(_water(), data_dir / "watermask" / "watermask.parquet")
    previous = data_dir / "grids" / "h3_3.parquet"
    write_geoparquet(_water(), previous)
    before = previous.read_bytes()
    result = dg.materialize(
        [watermask, grid_cells],
        selection=[grid_cells],
        partition_key="h3_3",
        resources=make_resources(data_dir),
        raise_on_error=False,
    )
    assert not result.success
    outcome = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert outcome == {
        "cell_ids_unique": False,
        "geometries_valid": True,
        "land_fraction_in_0_1": True,
    }
    assert previous.read_bytes() == before
    assert [p.name for p in previous.parent.iterdir()] == ["h3_3.parquet"]


@pytest.mark.slow
def test_large_grids_are_mapped_as_points(
    materialised, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, _ = materialised
    cells = read_geoparquet(data_dir / "grids" / f"{KEYS[1]}.parquet")
    drawn = []
    monkeypatch.setattr(plots, "MAP_MAX_POLYGONS", 1)
    monkeypatch.setattr(
        gpd.GeoDataFrame, "plot", lambda frame, **kw: drawn.append(frame.geom_type.unique())
    )
    assert plots.land_fraction_png(cells, "points")[:4] == b"\x89PNG"
    assert [list(types) for types in drawn] == [["Point"]]
