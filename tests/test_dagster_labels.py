"""The label stage of the end-to-end run on the sample region (``sample_graph``): DARTS
footprints to RTS labels per cell."""

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import xdggs
from conftest import GRAPH_LEVELS

from entropice_core.io.geoparquet import read_geoparquet
from entropice_core.io.zarr import read_dataset, write_dataset
from entropice_dagster.io_managers import ZarrIOManager

KEYS = GRAPH_LEVELS


@pytest.mark.slow
def test_label_assets_materialise_with_passing_checks(sample_graph):
    for key in (None, *KEYS):
        asset = "darts_polygons" if key is None else "rts_labels"
        assert sample_graph.run(asset, key).success
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
