"""GeoParquetIOManager: paths from asset metadata, faithful round trips, atomic replacement."""

from pathlib import Path

import dagster as dg
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from entropice_dagster.io_managers import PATH_METADATA_KEY, GeoParquetIOManager
from entropice_dagster.partitions import grid_partitions

GRID_PATH = {PATH_METADATA_KEY: "grids/{partition_key}.parquet"}


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
        definition_metadata=GRID_PATH,
        partition_key=key,
        asset_partitions_def=grid_partitions,
    )
    manager.handle_output(context, frame)
    return context


def _load(manager: GeoParquetIOManager, **partitions) -> object:
    upstream = dg.build_output_context(asset_key="grid_cells", definition_metadata=GRID_PATH)
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
    assert path.exists()
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
    metadata = {PATH_METADATA_KEY: "watermask/watermask.parquet"}
    out = dg.build_output_context(asset_key="watermask", definition_metadata=metadata)
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


def test_missing_path_metadata_is_a_clear_error(tmp_path: Path) -> None:
    manager = GeoParquetIOManager(data_dir=str(tmp_path))
    context = dg.build_output_context(asset_key="grid_cells", definition_metadata={})
    with pytest.raises(dg.DagsterInvariantViolationError, match="entropice/path"):
        manager.handle_output(context, _cells(1))
