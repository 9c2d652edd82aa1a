"""The whole asset graph on the sample region, in-process: every asset of the definitions is
materialised (one coarse grid level per grid family, two Arctic years, the experiments) and
its files, metadata and checks are those of the storage layout and the check specs.

The run itself is the session fixture ``sample_graph`` (conftest.py), shared with the tests of
each stage; `make demo` runs the same graph on all nine grid levels."""

import dagster as dg
import geopandas as gpd
import h3
import pandas as pd
import pytest
from conftest import GRAPH_LEVELS

from entropice_core.io.zarr import read_dataset
from entropice_dagster.definitions import defs

pytestmark = pytest.mark.slow


def _assets():
    return [a for a in defs.resolve_asset_graph().assets_defs if a.is_materializable]


def test_every_run_succeeds(sample_graph) -> None:
    failed = {
        (run.selection, run.partition): [
            e.step_key for e in run.result.all_events if e.is_step_failure
        ]
        for run in sample_graph.runs
        if not run.result.success
    }
    assert not failed, failed


def test_every_asset_of_the_definitions_is_materialised(sample_graph) -> None:
    """A new asset that the end-to-end run does not reach fails here."""
    materialised = {
        e.asset_key.to_user_string()
        for run in sample_graph.runs
        for e in run.result.get_asset_materialization_events()
    }
    expected = {a.key.to_user_string() for a in _assets()}
    assert materialised == expected
    for run in sample_graph.runs:
        done = {e.asset_key.to_user_string() for e in run.result.get_asset_materialization_events()}
        assert done == set(run.selection), (run.selection, run.partition)


def test_every_check_of_the_definitions_ran_and_passed(sample_graph) -> None:
    specs = {(s.asset_key.to_user_string(), s.name) for a in _assets() for s in a.check_specs}
    assert len(specs) >= 8  # grids, water, labels, climate, terrain, models
    evaluated: dict[tuple[str, str], list[bool]] = {}
    for run in sample_graph.runs:
        for e in run.result.get_asset_check_evaluations():
            evaluated.setdefault((e.asset_key.to_user_string(), e.check_name), []).append(e.passed)
    assert set(evaluated) == specs
    failed = {spec: results for spec, results in evaluated.items() if not all(results)}
    assert not failed, failed


def test_files_follow_the_storage_layout(sample_graph) -> None:
    root = sample_graph.data_dir
    assert (root / "watermask" / "watermask.parquet").is_file()
    assert (root / "darts" / "footprints.parquet").is_file()
    assert (root / "arcticdem" / "derivatives.icechunk").is_dir()
    for year in sample_graph.years:
        assert (root / "era5" / "daily" / f"{year}.zarr").is_dir()
    for key in sample_graph.levels:
        assert (root / "grids" / f"{key}.parquet").is_file()
        assert (root / "darts" / f"labels_{key}.zarr").is_dir()
        assert (root / "darts" / f"labels_{key}.parquet").is_file()
        assert (root / "arcticdem" / f"features_{key}.zarr").is_dir()
        assert (root / "era5" / f"features_{key}.zarr").is_dir()
        assert (root / "alphaearth" / f"features_{key}.zarr").is_dir()
        assert (root / "datasets" / f"{key}.zarr").is_dir()
        for experiment in sample_graph.experiments[key]:
            folder = root / "training-results" / key / experiment
            for name in ("predictions.parquet", "cv_results.parquet", "config.toml"):
                assert (folder / name).is_file(), folder / name


@pytest.mark.parametrize("key", GRAPH_LEVELS)
def test_every_cell_is_carried_from_grid_to_predictions(sample_graph, key) -> None:
    """The cells of each level reach labels, features, the dataset and the predictions, and
    the metadata counts are those of the files."""
    root = sample_graph.data_dir
    cells = gpd.read_parquet(root / "grids" / f"{key}.parquet")
    ids = set(cells["cell_id"])
    assert sample_graph.metadata("grid_cells", key)["dagster/partition_row_count"] == len(cells)
    for asset, path in [
        ("rts_labels", f"darts/labels_{key}.zarr"),
        ("terrain_features", f"arcticdem/features_{key}.zarr"),
        ("climate_features", f"era5/features_{key}.zarr"),
        ("alphaearth_features", f"alphaearth/features_{key}.zarr"),
    ]:
        assert set(read_dataset(root / path)["cell_ids"].to_numpy()) == ids, asset
    assert sample_graph.metadata("rts_labels", key)["cells"] == len(cells)
    assert sample_graph.metadata("climate_features", key)["years"] == [2021, 2022, 2023]
    terrain = sample_graph.metadata("terrain_features", key)
    derivatives = sample_graph.metadata("terrain_derivatives")
    assert terrain["derivatives_snapshot_id"] == derivatives["icechunk_snapshot_id"]

    dataset = read_dataset(root / "datasets" / f"{key}.zarr")
    assert set(dataset["cell_ids"].to_numpy()) <= ids
    assert sample_graph.metadata("training_dataset", key)["feature_names"]
    for experiment in sample_graph.experiments[key]:
        partition = f"{experiment}|{key}"
        model = sample_graph.metadata("trained_model", partition)
        assert model["cv_f1_macro"] > model["majority_cv_f1_macro"], (key, experiment)
        folder = root / "training-results" / key / experiment
        predictions = gpd.read_parquet(folder / "predictions.parquet")
        assert set(predictions["cell_id"]) == ids
        assert sample_graph.metadata("predictions", partition)["cells"] == len(cells)
        cv = pd.read_parquet(folder / "cv_results.parquet")
        assert len(cv) > 0


@pytest.mark.parametrize("key", GRAPH_LEVELS)
def test_every_per_cell_asset_shows_a_map_and_readable_cell_ids(sample_graph, key) -> None:
    maps = {
        "grid_cells": "map_preview",
        "rts_labels": "map",
        "terrain_features": "map",
        "climate_features": "map",
        "alphaearth_features": "pc1_map",
    }
    for asset, name in maps.items():
        image = sample_graph.metadata(asset, key)[name]
        assert image.startswith("![") and "data:image/png;base64," in image, asset
    experiment = sample_graph.experiments[key][0]
    partition = dg.MultiPartitionKey({"grid_level": key, "experiment": experiment})
    predictions = sample_graph.metadata("predictions", partition)
    assert "data:image/png;base64," in predictions["map"]
    preview = sample_graph.metadata("grid_cells", key)["preview"]
    assert "e+" not in preview  # 64-bit ids as the grid writes them, not as floats
    if key.startswith("h3"):
        cells = gpd.read_parquet(sample_graph.data_dir / "grids" / f"{key}.parquet")
        assert h3.int_to_str(int(cells["cell_id"].iloc[0])) in preview
