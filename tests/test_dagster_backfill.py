"""A backfill of every grid level from the command line queues one run per partition."""

from pathlib import Path

import dagster as dg
import pytest

from entropice_core.config import DEFAULT_GRID_LEVELS


@pytest.mark.slow  # a `dagster` subprocess loads the code location
def test_cli_backfill_queues_all_nine_grid_levels(tmp_path: Path, cli_backfill) -> None:
    runs, backfill = cli_backfill(tmp_path, "per_cell_assets")
    # Queued for the daemon that `make ui` (dagster dev) runs.
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(DEFAULT_GRID_LEVELS)
    assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}
    assert sorted(backfill.partition_names) == sorted(DEFAULT_GRID_LEVELS)
    assert {r.job_name for r in runs} == {"per_cell_assets"}


@pytest.mark.slow
def test_a_backfill_of_several_levels_builds_their_training_datasets_in_one_run(
    sample_graph, tmp_path: Path, make_resources, dagster_instance
) -> None:
    """training_dataset (BackfillPolicy.single_run) over the range h3_5..h3_6 is one run with
    a materialisation, metadata and store per level, each equal to the one-level run's. Both
    levels read the end-to-end run's h3_5 inputs, copied under both keys."""
    import xarray as xr

    from entropice_core.io.assets import load_dataset, store_dataset
    from entropice_core.io.zarr import read_dataset
    from entropice_core.layout import Layout
    from entropice_dagster.assets import all_assets
    from entropice_dagster.assets.models import ENSEMBLE, training_dataset

    assert training_dataset.backfill_policy == dg.BackfillPolicy.single_run()
    graph, ours = Layout(sample_graph.data_dir), Layout(tmp_path)
    for asset in ENSEMBLE.assets():
        inputs = load_dataset(graph, asset, "h3_5").load()
        for key in ("h3_5", "h3_6"):
            store_dataset(inputs, ours, asset, key)
    job = dg.define_asset_job("datasets", ["training_dataset"])
    defs = dg.Definitions(assets=all_assets, jobs=[job], resources=make_resources(tmp_path))
    levels = {"start": "h3_5", "end": "h3_6"}  # what a backfill of the range launches
    tags = {f"dagster/asset_partition_range_{end}": key for end, key in levels.items()}
    result = defs.resolve_job_def("datasets").execute_in_process(
        instance=dagster_instance, tags=tags
    )
    assert result.success
    events = result.asset_materializations_for_node("training_dataset")
    assert sorted(e.partition for e in events) == ["h3_5", "h3_6"]
    one_level = sample_graph.metadata("training_dataset", "h3_5")
    expected = read_dataset(graph.training_dataset("h3_5")).load()
    for event in events:
        assert event.metadata["cells"].value == one_level["cells"]
        assert event.metadata["feature_names"].value == one_level["feature_names"]
        stored = read_dataset(ours.training_dataset(event.partition)).load()
        xr.testing.assert_identical(stored, expected)
