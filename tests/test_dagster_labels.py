"""The label stage of the end-to-end run on the sample region (``sample_graph``): DARTS
footprints to RTS labels per cell."""

import dagster as dg
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
import xdggs
from conftest import GRAPH_LEVELS

from entropice_core.io.geoparquet import read_geoparquet
from entropice_core.io.zarr import read_dataset, write_dataset
from entropice_dagster.assets import all_assets
from entropice_dagster.assets.labels import RtsLabelsConfig, rts_labels
from entropice_dagster.io_managers import ZarrIOManager
from entropice_dagster.resources import DartsSourceResource

KEYS = GRAPH_LEVELS


@pytest.mark.slow
def test_label_assets_materialise_with_passing_checks(sample_graph):
    for asset, key in (("darts_polygons", None), ("darts_coverage", None)):
        assert sample_graph.run(asset, key).success
    for key in KEYS:
        assert sample_graph.run("rts_labels", key).success
    assert sample_graph.checks("darts_polygons")["footprints_plausible"].passed
    for key in KEYS:
        checks = sample_graph.checks("rts_labels", key)
        assert set(checks) == {"rts_area_matches_footprints"}
        assert checks["rts_area_matches_footprints"].passed


@pytest.mark.slow
def test_darts_polygons_are_the_sample_footprints(sample_graph):
    data_dir = sample_graph.data_dir
    footprints = read_geoparquet(data_dir / "darts" / "footprints.parquet")
    source = read_geoparquet(
        data_dir / "sources" / "darts" / "DARTS_NitzeEtAl_v1-2_features_2018-2023_level2.parquet"
    )
    assert len(footprints) == len(source)
    np.testing.assert_allclose(footprints["area_m2"], source["area_m2"], rtol=1e-6)
    assert sample_graph.metadata("darts_polygons")["years"] == [2018, 2019, 2020, 2021, 2022, 2023]


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_labels_store_and_table_follow_the_layout(sample_graph, key):
    data_dir = sample_graph.data_dir
    labels = xdggs.decode(read_dataset(data_dir / "darts" / f"labels_{key}.zarr"))
    cells = read_geoparquet(data_dir / "grids" / f"{key}.parquet")
    assert labels.dggs.grid_info.level == int(key.split("_")[1])
    assert set(labels["cell_ids"].to_numpy()) == set(cells["cell_id"])
    table = pd.read_parquet(data_dir / "darts" / f"labels_{key}.parquet")
    assert len(table) == labels.sizes["cell_ids"] * labels.sizes["year"]
    # The sample's slumps concentrate where terrain says so: some cells have RTS, not all.
    share = float((labels["rts_count_all_years"] > 0).mean())
    assert 0 < share < 1


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_sample_labels_are_missing_where_the_coverage_has_gaps(sample_graph, key):
    data_dir = sample_graph.data_dir
    coverage = sample_graph.metadata("darts_coverage")
    assert coverage["years"] == [2018, 2019, 2020, 2021, 2022, 2023]
    assert (
        read_geoparquet(data_dir / "darts" / "coverage.parquet")["year"].tolist()
        == (coverage["years"])
    )
    labels = read_dataset(data_dir / "darts" / f"labels_{key}.zarr")
    unobserved = (labels["observed_fraction"] < 0.5).to_numpy()
    assert unobserved.any() and not unobserved.all()
    np.testing.assert_array_equal(np.isnan(labels["rts_count"].to_numpy()), unobserved)
    meta = sample_graph.metadata("rts_labels", key)
    assert meta["cell_years_unobserved"] == int(unobserved.sum())
    assert set(meta["observed_area_km2"]) == {str(y) for y in coverage["years"]}
    table = pd.read_parquet(data_dir / "darts" / f"labels_{key}.parquet")
    assert int(table["rts_count"].isna().sum()) == int(unobserved.sum())


def test_without_a_coverage_layer_every_cell_is_observed(tmp_path, make_resources):
    folder = tmp_path / "release"
    folder.mkdir()
    footprint = shapely.box(-134.5, 67.2, -134.49, 67.205)
    footprints = gpd.GeoDataFrame({"year": [2021]}, geometry=[footprint], crs=4326)
    footprints.to_parquet(folder / "DARTS_test_level2.parquet")
    resources = make_resources(tmp_path / "data")
    resources["darts_source"] = DartsSourceResource(folder=str(folder))
    result = dg.materialize(
        all_assets, selection=["darts_polygons", "darts_coverage"], resources=resources
    )
    (event,) = result.asset_materializations_for_node("darts_coverage")
    assert event.metadata["coverage"].value == "no coverage layer: every cell counts as observed"
    assert event.metadata["files"].value == []
    coverage = read_geoparquet(tmp_path / "data" / "darts" / "coverage.parquet")
    assert coverage.empty and list(coverage.columns) == ["year", "geometry"]

    cells = gpd.GeoDataFrame(
        {"cell_id": np.array([5], np.uint64), "land_area_km2": [100.0]},
        geometry=[shapely.box(-135, 67, -134, 67.5)],
        crs=4326,
    )
    context = dg.build_asset_context(partition_key="h3_5")
    polygons = read_geoparquet(tmp_path / "data" / "darts" / "footprints.parquet")
    outputs = list(rts_labels(context, RtsLabelsConfig(), polygons, coverage, cells))
    labels = outputs[-1].value
    assert labels["observed_fraction"].item() == 1.0 and labels["rts_count"].item() == 1
    assert outputs[-1].metadata["cell_years_unobserved"].value == 0


def test_a_failed_zarr_write_keeps_the_previous_store(tmp_path, monkeypatch):
    ids = np.array([1, 2], np.uint64)
    attrs = {"grid_name": "healpix", "level": 1, "indexing_scheme": "nested"}
    first = xr.Dataset(
        {"a": ("cell_ids", [1.0, 2.0])}, coords={"cell_ids": ("cell_ids", ids, attrs)}
    )
    manager = ZarrIOManager(data_dir=str(tmp_path))
    context = dg.build_output_context(asset_key="training_dataset", partition_key="h3_3")
    manager.handle_output(context, first)

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    with pytest.raises(OSError, match="disk full"):
        manager.handle_output(context, first * 10)
    monkeypatch.undo()
    store = tmp_path / "datasets" / "h3_3.zarr"
    kept = read_dataset(store)
    np.testing.assert_array_equal(kept["a"].to_numpy(), [1.0, 2.0])
    # the store and its hidden versions; nothing of the failed write
    assert [p.name for p in store.parent.iterdir() if not p.name.startswith(".")] == ["h3_3.zarr"]
    assert not [p.name for p in store.parent.iterdir() if ".tmp" in p.name]
    write_dataset(first * 3, store)
    np.testing.assert_array_equal(read_dataset(store)["a"].to_numpy(), [3, 6])
