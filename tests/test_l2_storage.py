"""L2 dataset storage: Zarr v3 stores and Icechunk commits, through the Dagster IO manager."""

import dagster as dg
import numpy as np
import pytest
import xarray as xr
import xdggs

import entropice_core.io.icechunk as icechunk_io
from entropice_core.config import GridSpec
from entropice_core.io.icechunk import read_dataset_version
from entropice_dagster.io_managers import ZarrIOManager

#: The layout puts this asset in an Icechunk repository; partitioned, each key is a group.
ASSET = "terrain_derivatives"


def l2(key: str, values) -> xr.Dataset:
    spec = GridSpec.from_key(key)
    ids = np.arange(len(values), dtype=np.uint64) + (599686042433355775 if spec.grid == "h3" else 0)
    return xr.Dataset(
        {"elevation_mean": ("cell_ids", np.asarray(values, dtype=float))},
        coords={"cell_ids": ("cell_ids", ids, spec.xdggs_attrs)},
    )


def write(manager, key, dataset):
    context = dg.build_output_context(asset_key=ASSET, partition_key=key)
    manager.handle_output(context, dataset)
    return {k: getattr(v, "value", v) for k, v in context.get_logged_metadata().items()}


def load(manager, key):
    upstream = dg.build_output_context(asset_key=ASSET)
    context = dg.build_input_context(
        asset_key=ASSET,
        partition_key=key,
        upstream_output=upstream,
        asset_partitions_def=dg.StaticPartitionsDefinition(["h3_3", "healpix_6"]),
    )
    return manager.load_input(context)


def test_each_materialisation_is_a_commit_with_its_snapshot_id(tmp_path):
    manager = ZarrIOManager(data_dir=str(tmp_path))
    first = write(manager, "h3_3", l2("h3_3", [1, 2, 3]))
    write(manager, "healpix_6", l2("healpix_6", [7, 8]))
    second = write(manager, "h3_3", l2("h3_3", [10, 20, 30]))
    repo = tmp_path / "arcticdem" / "derivatives.icechunk"
    assert first["icechunk_snapshot_id"] != second["icechunk_snapshot_id"]
    # Head has the latest; the first snapshot id still reads the first version.
    np.testing.assert_array_equal(load(manager, "h3_3").elevation_mean, [10, 20, 30])
    old = read_dataset_version(repo, "h3_3", first["icechunk_snapshot_id"])
    np.testing.assert_array_equal(old.elevation_mean, [1, 2, 3])
    np.testing.assert_array_equal(load(manager, "healpix_6").elevation_mean, [7, 8])
    assert xdggs.decode(load(manager, "healpix_6")).dggs.grid_info.level == 6


def test_a_failed_write_commits_nothing(tmp_path, monkeypatch):
    manager = ZarrIOManager(data_dir=str(tmp_path))
    write(manager, "h3_3", l2("h3_3", [1, 2, 3]))

    def broken(dataset, session, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(icechunk_io, "to_icechunk", broken)
    with pytest.raises(OSError, match="disk full"):
        write(manager, "h3_3", l2("h3_3", [9, 9, 9]))
    monkeypatch.undo()
    np.testing.assert_array_equal(load(manager, "h3_3").elevation_mean, [1, 2, 3])


def test_datasets_without_grid_attrs_are_refused(tmp_path):
    manager = ZarrIOManager(data_dir=str(tmp_path))
    bare = xr.Dataset({"a": ("cell_ids", [1.0])}, coords={"cell_ids": [1]})
    with pytest.raises(ValueError, match="xdggs attrs"):
        write(manager, "h3_3", bare)
