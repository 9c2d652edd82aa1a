"""The whole graph on the sample region, as `make demo` runs it: sources to RTS labels."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import xdggs

from entropice_core.io.geoparquet import read_geoparquet
from entropice_core.io.zarr import read_dataset, write_dataset
from entropice_dagster.assets import all_assets
from entropice_dagster.io_managers import ZarrIOManager

KEYS = ("h3_4", "healpix_7")


@pytest.fixture(scope="module")
def graph(region, make_resources) -> tuple[Path, dict]:
    data_dir, _, _ = region
    resources = make_resources(data_dir)
    instance = dg.DagsterInstance.ephemeral()
    results = {
        None: dg.materialize(
            all_assets,
            selection=["watermask", "darts_polygons"],
            resources=resources,
            instance=instance,
        )
    }
    for key in KEYS:
        results[key] = dg.materialize(
            all_assets,
            selection=["grid_cells", "rts_labels"],
            partition_key=key,
            resources=resources,
            instance=instance,
        )
    return data_dir, results


@pytest.mark.slow
def test_every_asset_materialises_with_passing_checks(graph):
    _, results = graph
    for result in results.values():
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
    for key in KEYS:
        checks = {e.check_name for e in results[key].get_asset_check_evaluations()}
        assert "rts_area_matches_footprints" in checks


@pytest.mark.slow
def test_darts_polygons_are_the_sample_footprints(graph):
    data_dir, results = graph
    footprints = read_geoparquet(data_dir / "darts" / "footprints.parquet")
    source = read_geoparquet(
        data_dir / "sources" / "darts" / "DARTS_NitzeEtAl_v1-2_features_2018-2023_level2.parquet"
    )
    assert len(footprints) == len(source)
    np.testing.assert_allclose(footprints["area_m2"], source["area_m2"], rtol=1e-6)
    (event,) = results[None].asset_materializations_for_node("darts_polygons")
    assert event.metadata["years"].value == [2018, 2019, 2020, 2021, 2022, 2023]


@pytest.mark.slow
@pytest.mark.parametrize("key", KEYS)
def test_labels_store_and_table_follow_the_layout(graph, key):
    data_dir, _ = graph
    labels = xdggs.decode(read_dataset(data_dir / "darts" / f"labels_{key}.zarr"))
    cells = read_geoparquet(data_dir / "grids" / f"{key}.parquet")
    assert labels.dggs.grid_info.level == int(key.split("_")[1])
    assert set(labels["cell_ids"].to_numpy()) == set(cells["cell_id"])
    table = pd.read_parquet(data_dir / "darts" / f"labels_{key}.parquet")
    assert len(table) == labels.sizes["cell_ids"] * labels.sizes["year"]
    # The sample's slumps concentrate where terrain says so: some cells have RTS, not all.
    share = float((labels["rts_count_all_years"] > 0).mean())
    assert 0 < share < 1


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
    assert [p.name for p in store.parent.iterdir()] == ["h3_3.zarr"]
    write_dataset(first * 3, store)
    np.testing.assert_array_equal(read_dataset(store)["a"].to_numpy(), [3, 6])
