"""The code location loads, and its assets follow the project's invariants (style.md)."""

import ast
import inspect
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from entropice_core.config import DEFAULT_GRID_LEVELS
from entropice_core.layout import ASSET_PATHS, template_fields
from entropice_dagster.assets import all_assets
from entropice_dagster.definitions import defs
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.pools import ensure_pool_limits

REPO = Path(__file__).resolve().parents[1]
NINE = [
    *("h3_3", "h3_4", "h3_5", "h3_6"),
    *("healpix_6", "healpix_7", "healpix_8", "healpix_9", "healpix_10"),
]
#: Assets that are not indexed by grid cells (sources, rasters); everything else is per-cell.
NOT_PER_CELL = {"watermask", "darts_polygons", "darts_coverage"}
NOT_PER_CELL |= {"arcticdem_tiles", "terrain_derivatives"}
NOT_PER_CELL |= {"era5_hourly", "era5_daily", "era5_yearly", "experiment_summary"}


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


#: Per-cell assets that hold every grid level in one value (one pass serves them all): they
#: depend on every partition of grid_cells instead of being partitioned by grid level.
ALL_LEVELS_AT_ONCE = {"terrain_statistics", "alphaearth_statistics"}


def test_every_per_cell_asset_uses_grid_partitions() -> None:
    per_cell = [a for a in _assets() if a.key.to_user_string() not in NOT_PER_CELL]
    assert per_cell, "expected at least grid_cells"
    graph = defs.resolve_asset_graph()
    for asset in per_cell:
        if asset.key.to_user_string() in ALL_LEVELS_AT_ONCE:
            assert asset.partitions_def is None, asset.key
            mapping = graph.get_partition_mapping(asset.key, dg.AssetKey("grid_cells"))
            assert isinstance(mapping, dg.AllPartitionMapping), asset.key
            continue
        assert _uses_grid_partitions(asset.partitions_def), asset.key


def test_every_asset_has_group_description_and_a_place_in_the_layout() -> None:
    for asset in _assets():
        name = asset.key.to_user_string()
        spec = next(iter(asset.specs))
        assert spec.group_name not in (None, "default"), asset.key
        assert spec.description and spec.description.strip(), asset.key
        # the path the UI shows is the layout's, and its fields are the partition dimensions
        assert spec.metadata["entropice/path"] == ASSET_PATHS[name]
        fields = set(template_fields(ASSET_PATHS[name]))
        if isinstance(asset.partitions_def, dg.MultiPartitionsDefinition):
            assert fields == {d.name for d in asset.partitions_def.partitions_defs}, name
        elif asset.partitions_def is None:
            assert fields == set(), name
        else:
            assert len(fields) == 1, name


#: Why the sources have no automation condition: new data reaches them through the sensors
#: (DARTS files, ERA5 years; AlphaEarth years re-run alphaearth_features), or they are fetched
#: on demand (the water mask, ArcticDEM tiles and their derivatives: rarely and expensive).
SOURCES_WITHOUT_AUTOMATION = {"watermask", "arcticdem_tiles", "terrain_derivatives"}
SOURCES_WITHOUT_AUTOMATION |= {"darts_polygons", "darts_coverage"}
SOURCES_WITHOUT_AUTOMATION |= {"era5_hourly", "era5_daily", "era5_yearly"}


def test_every_asset_has_an_owner_a_tier_and_automation_unless_a_source() -> None:
    sensed = {
        key.to_user_string()
        for sensor in defs.sensors or ()
        if sensor.name != "entropice_automation" and sensor.asset_selection is not None
        for key in sensor.asset_selection.resolve(defs.resolve_asset_graph())
    }
    assert sensed == {"darts_polygons", "darts_coverage", "alphaearth_statistics"}
    assert defs.get_sensor_def("era5_arctic_years").job_name == "era5_arctic_year"
    for asset in _assets():
        name = asset.key.to_user_string()
        spec = next(iter(asset.specs))
        assert spec.owners == ["team:entropice"], name
        assert spec.tags.get("tier") in ("source", "per-cell", "model"), name
        if name in SOURCES_WITHOUT_AUTOMATION:
            assert spec.automation_condition is None, name
            assert spec.tags["tier"] == "source", name
        else:  # every per-cell and model asset follows its inputs
            assert spec.automation_condition is not None, name
    automation = defs.get_sensor_def("entropice_automation")
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING


def test_every_asset_body_is_thin() -> None:
    """style.md: an asset is a thin call into the core, at most 25 lines of body."""
    for asset in all_assets:
        function = asset.op.compute_fn.decorated_fn
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        body = tree.body[0].body
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring is the UI's description, not logic
        lines = body[-1].end_lineno - body[0].lineno + 1
        assert lines <= 25, f"{asset.key.to_user_string()}: {lines} lines"


def test_loading_the_definitions_imports_no_heavy_library() -> None:
    """The code location loads without the data and ML stack: assets import it when they run."""
    heavy = ["geopandas", "xarray", "pandas", "matplotlib", "sklearn", "skops", "xgboost"]
    heavy += ["numba", "rasterio", "scipy", "dask", "zarr", "icechunk"]
    code = (
        "import sys, entropice_dagster.definitions; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


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


def test_assets_that_may_use_a_gpu_declare_the_gpu_pool_and_the_writers_the_dask_pool() -> None:
    pools = {
        key: defs.resolve_assets_def(key).op.pool
        for key in ("trained_model", "predictions", "terrain_derivatives", "terrain_statistics")
    }
    assert pools == {
        "trained_model": "gpu",
        "predictions": "gpu",
        "terrain_derivatives": "dask",
        "terrain_statistics": "dask",
    }


@pytest.mark.parametrize(("visible", "expected"), [("", 2), ("0", 1), ("0,1,2", 3), ("-1", 2)])
def test_the_gpu_pool_gets_one_slot_per_gpu_or_the_run_limit_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visible: str, expected: int
) -> None:
    """Without a GPU (no CUDA_VISIBLE_DEVICES entries) the limit is max_concurrent_runs (2 in
    dagster.yaml); an explicit limit (dagster instance concurrency set) is left alone."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert ensure_pool_limits(instance) == {"gpu": expected}
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == expected
        instance.event_log_storage.set_concurrency_slots("gpu", 7)
        assert ensure_pool_limits(instance) == {"gpu": 7}
        # dask keeps dagster.yaml's default of one
        assert instance.event_log_storage.get_concurrency_info("dask").limit == 1
    finally:
        instance.dispose()
