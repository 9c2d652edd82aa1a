"""GeoParquetIOManager: paths from the storage layout, faithful round trips, atomic replacement."""

from pathlib import Path

import dagster as dg
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from entropice_core.layout import Layout
from entropice_dagster.io_managers import GeoParquetIOManager, ManifestIOManager
from entropice_dagster.partitions import grid_partitions


def _cells(n: int, crs: str = "EPSG:4326") -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "cell_id": np.arange(10, 10 + n, dtype="uint64"),
            "land_area_km2": np.linspace(1.0, 2.0, n),
            "land_fraction": np.linspace(0.1, 1.0, n).astype("float32"),
            "name": pd.array([f"c{i}" for i in range(n)], dtype="string"),
        },
        geometry=[shapely.box(i, 60, i + 1, 61) for i in range(n)],
        crs=crs,
    )


def _write(manager: GeoParquetIOManager, frame: gpd.GeoDataFrame, key: str) -> dg.OutputContext:
    context = dg.build_output_context(
        asset_key="grid_cells",
        partition_key=key,
        asset_partitions_def=grid_partitions,
    )
    manager.handle_output(context, frame)
    return context


def _load(manager: GeoParquetIOManager, **partitions) -> object:
    upstream = dg.build_output_context(asset_key="grid_cells")
    context = dg.build_input_context(
        asset_key="grid_cells",
        upstream_output=upstream,
        asset_partitions_def=grid_partitions,
        **partitions,
    )
    return manager.load_input(context)


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:3413"])
def test_round_trip_keeps_crs_dtypes_and_records_metadata(tmp_path: Path, crs: str) -> None:
    manager = GeoParquetIOManager(data_dir=str(tmp_path))
    frame = _cells(5, crs)
    context = _write(manager, frame, "h3_3")

    path = tmp_path / "grids" / "h3_3.parquet"
    assert path.exists() and path == Layout(tmp_path).grid_cells("h3_3")
    metadata = context.get_logged_metadata()
    assert metadata["path"].value == str(path)
    assert metadata["bytes"].value == path.stat().st_size
    assert metadata["dagster/partition_row_count"].value == 5
    schema = metadata["dagster/column_schema"].value
    assert [c.name for c in schema.columns] == list(frame.columns)

    loaded = _load(manager, partition_key="h3_3")
    assert loaded.crs == frame.crs
    assert loaded.dtypes.to_dict() == frame.dtypes.to_dict()
    pd.testing.assert_frame_equal(pd.DataFrame(loaded), pd.DataFrame(frame))


def test_unpartitioned_asset_uses_plain_path(tmp_path: Path) -> None:
    manager = GeoParquetIOManager(data_dir=str(tmp_path))
    out = dg.build_output_context(asset_key="watermask")
    manager.handle_output(out, _cells(3))
    assert out.get_logged_metadata()["dagster/row_count"].value == 3
    loaded = manager.load_input(dg.build_input_context(asset_key="watermask", upstream_output=out))
    assert len(loaded) == 3
    assert (tmp_path / "watermask" / "watermask.parquet").exists()


def test_several_upstream_partitions_load_as_dict(tmp_path: Path) -> None:
    manager = GeoParquetIOManager(data_dir=str(tmp_path))
    _write(manager, _cells(2), "h3_3")
    _write(manager, _cells(4), "h3_4")
    loaded = _load(manager, asset_partition_key_range=dg.PartitionKeyRange("h3_3", "h3_4"))
    assert isinstance(loaded, dict)
    assert {key: len(frame) for key, frame in loaded.items()} == {"h3_3": 2, "h3_4": 4}


def test_failed_write_leaves_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = GeoParquetIOManager(data_dir=str(tmp_path))
    _write(manager, _cells(3), "h3_3")

    def half_write(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 truncated")
        raise OSError("disk full")

    monkeypatch.setattr(gpd.GeoDataFrame, "to_parquet", half_write)
    with pytest.raises(OSError, match="disk full"):
        _write(manager, _cells(7), "h3_3")
    monkeypatch.undo()

    assert len(_load(manager, partition_key="h3_3")) == 3
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == ["h3_3.parquet"]


def test_an_asset_outside_the_layout_is_a_clear_error(tmp_path: Path) -> None:
    manager = GeoParquetIOManager(data_dir=str(tmp_path))
    context = dg.build_output_context(asset_key="cells_v2")
    with pytest.raises(KeyError, match=r"cells_v2.*no place in the storage layout"):
        manager.handle_output(context, _cells(1))
    assert not any(tmp_path.iterdir())


def test_manifest_round_trip_per_arctic_year(tmp_path: Path) -> None:
    manager = ManifestIOManager(data_dir=str(tmp_path))
    years = dg.StaticPartitionsDefinition(["2019", "2020"])
    manifest = {"arctic_year": 2020, "files": ["a.nc", "b.nc"]}
    out = dg.build_output_context(
        asset_key="era5_hourly", partition_key="2020", asset_partitions_def=years
    )
    manager.handle_output(out, manifest)
    assert (tmp_path / "era5" / "hourly" / "2020.json").exists()
    loaded = manager.load_input(
        dg.build_input_context(
            asset_key="era5_hourly",
            upstream_output=out,
            partition_key="2020",
            asset_partitions_def=years,
        )
    )
    assert loaded == manifest


def test_a_data_dir_that_cannot_be_written_fails_the_run_before_any_step(tmp_path) -> None:
    from entropice_dagster.assets import all_assets
    from entropice_dagster.resources import project_resources

    blocker = tmp_path / "data"
    blocker.write_text("a file where the data directory goes")
    result = dg.materialize(
        all_assets,
        selection=["watermask"],
        resources=project_resources(blocker, "sample"),
        raise_on_error=False,
    )
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_START"]
    (failure,) = [e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert "ENTROPICE_DATA_DIR" in text and "is a file" in text
