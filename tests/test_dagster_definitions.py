"""The code location loads, and its assets follow the project's invariants (style.md)."""

import shutil
from pathlib import Path

import dagster as dg

from entropice_core.config import DEFAULT_GRID_LEVELS
from entropice_dagster.definitions import defs
from entropice_dagster.io_managers import PATH_METADATA_KEY
from entropice_dagster.partitions import grid_partitions

REPO = Path(__file__).resolve().parents[1]
NINE = [
    *("h3_3", "h3_4", "h3_5", "h3_6"),
    *("healpix_6", "healpix_7", "healpix_8", "healpix_9", "healpix_10"),
]
#: Assets that are not indexed by grid cells (sources, rasters); everything else is per-cell.
NOT_PER_CELL = {"watermask", "darts_polygons", "arcticdem_tiles", "terrain_derivatives"}
NOT_PER_CELL |= {"era5_hourly", "era5_daily", "era5_yearly"}


def _assets() -> list[dg.AssetsDefinition]:
    return [a for a in defs.resolve_asset_graph().assets_defs if a.is_materializable]


def _uses_grid_partitions(partitions_def: dg.PartitionsDefinition | None) -> bool:
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return any(d.partitions_def == grid_partitions for d in partitions_def.partitions_defs)
    return partitions_def == grid_partitions


def test_definitions_load() -> None:
    dg.Definitions.validate_loadable(defs)
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {"watermask", "grid_cells"} <= keys


def test_partition_keys_are_the_nine_grid_levels() -> None:
    assert grid_partitions.get_partition_keys() == NINE
    assert list(DEFAULT_GRID_LEVELS) == NINE


def test_every_per_cell_asset_uses_grid_partitions() -> None:
    per_cell = [a for a in _assets() if a.key.to_user_string() not in NOT_PER_CELL]
    assert per_cell, "expected at least grid_cells"
    for asset in per_cell:
        assert _uses_grid_partitions(asset.partitions_def), asset.key


def test_every_asset_has_group_description_and_storage_path() -> None:
    for asset in _assets():
        spec = next(iter(asset.specs))
        assert spec.group_name not in (None, "default"), asset.key
        assert spec.description and spec.description.strip(), asset.key
        template = spec.metadata[PATH_METADATA_KEY]
        keys = ["partition_key"]
        if isinstance(asset.partitions_def, dg.MultiPartitionsDefinition):
            keys = [d.name for d in asset.partitions_def.partitions_defs]
        named = all(f"{{{key}}}" in template for key in keys)
        assert named == (asset.partitions_def is not None), asset.key


def test_grid_cells_checks_are_blocking() -> None:
    specs = {s.name: s for s in defs.resolve_assets_def("grid_cells").check_specs}
    assert set(specs) == {"cell_ids_unique", "geometries_valid", "land_fraction_in_0_1"}
    assert all(s.blocking for s in specs.values())


def test_instance_config_loads_with_pool_limits(tmp_path: Path) -> None:
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.run_queue_config.max_concurrent_runs == 2
        assert not instance.telemetry_enabled
    finally:
        instance.dispose()
