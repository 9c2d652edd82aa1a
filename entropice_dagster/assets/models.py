"""Model stage: the training dataset per grid level, trained models and predictions per
(grid level, experiment). Experiments are the TOML files in configs/ (see docs/training.md)."""

import json
import warnings
from typing import Any

import dagster as dg
from pydantic import Field

from entropice_core.layout import Layout
from entropice_core.ml.dataset import DatasetEnsemble
from entropice_dagster.automation import ON_ANY_MODEL, ON_UPDATED_INPUTS
from entropice_dagster.checks import beats_majority_baseline, check_specs, checked_output
from entropice_dagster.io_managers import (
    EXPERIMENT_IO_MANAGER_KEY,
    GEOPARQUET_IO_MANAGER_KEY,
    TABLE_IO_MANAGER_KEY,
    ZARR_IO_MANAGER_KEY,
)
from entropice_dagster.metadata import (
    OWNERS,
    dashboard_url,
    frame_summary,
    markdown_table,
    png_markdown,
    stored_at,
)
from entropice_dagster.partitions import CONFIG_DIR, grid_partitions, model_partitions
from entropice_dagster.pools import GPU_POOL
from entropice_dagster.provenance import refuse_outdated
from entropice_dagster.resources import DaskResource, DataDirResource

#: The DatasetEnsemble of every grid level: its sources are the inputs of training_dataset,
#: so a new [[sources]] table in configs/dataset.toml is a new upstream asset.
ENSEMBLE = DatasetEnsemble.from_toml(CONFIG_DIR / "dataset.toml")
#: Models and predictions read the one grid level of their (grid level, experiment) key.
with warnings.catch_warnings():  # beta since 1.x, the documented way for 2-D -> 1-D (stack.md)
    warnings.simplefilter("ignore", dg.BetaWarning)
    BY_GRID_LEVEL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="grid_level")


with warnings.catch_warnings():  # backfill_policy is beta since 1.x
    warnings.simplefilter("ignore", dg.BetaWarning)

    @dg.asset(
        owners=OWNERS,
        tags={"tier": "per-cell"},
        group_name="models",
        kinds={"zarr"},
        code_version="1",
        partitions_def=grid_partitions,
        # a join of per-cell stores, seconds per level: a backfill of several levels is one run
        # (the per-level assets upstream have per-partition checks, which a run over several
        # partitions cannot record in Dagster 1.13, so they keep one run per partition)
        backfill_policy=dg.BackfillPolicy.single_run(),
        io_manager_key=ZARR_IO_MANAGER_KEY,
        ins={asset: dg.AssetIn(asset) for asset in ENSEMBLE.assets()},
        metadata=stored_at("training_dataset"),
        automation_condition=ON_UPDATED_INPUTS,
    )
    def training_dataset(context: dg.AssetExecutionContext, **inputs):
        """Features of every cell joined from the L2 datasets in configs/dataset.toml, the RTS
        targets, and the spatially blocked split: test blocks, a buffer, CV folds. A run over
        several grid levels (a backfill) builds each level in turn."""
        keys = context.partition_keys
        if len(keys) == 1:
            data, metadata = _training_data(context, keys[0], inputs)
            yield from checked_output(data.dataset, metadata)
            return
        datasets = {}
        for key in keys:  # inputs of several partitions load as {partition: value}
            data, metadata = _training_data(context, key, {k: v[key] for k, v in inputs.items()})
            context.add_asset_metadata(metadata, partition_key=key)
            datasets[key] = data.dataset
        yield dg.Output(datasets)


def _training_data(
    context: dg.AssetExecutionContext, key: str, inputs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """One grid level's training data (refused where an input is outdated) and its metadata."""
    refuse_outdated(context, dict.fromkeys(inputs, key))
    data = ENSEMBLE.build_from(inputs)
    summary = data.summary()
    context.log.info(f"{key}: {summary}")
    return data, {
        **summary,
        "feature_names": data.feature_names,
        "sources": dg.MetadataValue.json(json.loads(data.dataset.attrs["sources"])),
        "data_versions": dg.MetadataValue.json(data.data_versions),
        "preview": markdown_table(data.X().head(10), 2),
    }


class TrainingConfig(dg.Config):
    """A smaller (or larger) budget than the experiment file's, for one run (launchpad)."""

    n_iter: int | None = Field(
        default=None, ge=1, description="Search candidates instead of the config's search.n_iter."
    )
    importance_repeats: int | None = Field(
        default=None, ge=1, description="Permutation-importance shuffles per feature instead."
    )


@dg.asset(
    owners=OWNERS,
    tags={"tier": "model"},
    group_name="models",
    kinds={"skops", "parquet"},
    code_version="1",
    partitions_def=model_partitions,
    io_manager_key=EXPERIMENT_IO_MANAGER_KEY,
    pool=GPU_POOL,
    ins={"training_dataset": dg.AssetIn(partition_mapping=BY_GRID_LEVEL)},
    metadata=stored_at("trained_model"),
    automation_condition=ON_UPDATED_INPUTS,
    check_specs=check_specs(
        "trained_model", beats_majority_baseline, partitions_def=model_partitions
    ),
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    training_dataset,
    dask: DaskResource,
):
    """The experiment's model tuned by randomised search over spatial CV folds and refitted on
    the training cells, with CV results, test scores, feature importance and provenance.
    The candidate fits run on the Dask cluster; pool ``gpu`` (one step per GPU, see pools)."""
    from entropice_core.ml.dataset import TrainingData
    from entropice_core.ml.training import ExperimentConfig, train_experiment

    keys = context.partition_key.keys_by_dimension
    refuse_outdated(context, {"training_dataset": keys["grid_level"]})
    experiment = ExperimentConfig.from_toml(CONFIG_DIR / f"{keys['experiment']}.toml")
    experiment = experiment.with_budget(config.n_iter, config.importance_repeats)
    result = train_experiment(
        TrainingData(training_dataset), experiment, context.log.info, client=dask.models_client
    )
    metadata = {
        "scores": markdown_table(result.scores),
        "top_features": markdown_table(result.importance.head(10).set_index("feature")),
        "best_params": dg.MetadataValue.json(result.stamp["best_params"]),
        "classes": result.classes,
        "dataset": result.stamp["dataset"],
        "time": result.stamp["time"],
        "train_rows": result.stamp["train_rows"],
        "test_rows": result.stamp["test_rows"],
        "data_versions": dg.MetadataValue.json(result.stamp["data_versions"]),
        "on_dask": dask.models,
        **result.headline_scores(),
    }
    yield from checked_output(result, metadata, [beats_majority_baseline(result)])


class PredictionConfig(dg.Config):
    """How predictions run (launchpad / run config)."""

    batch_size: int | None = Field(
        default=None,
        ge=1,
        description="Cells per prediction batch (memory bound); default the core's (65,536).",
    )


@dg.asset(
    owners=OWNERS,
    tags={"tier": "model"},
    group_name="models",
    kinds={"geoparquet"},
    code_version="1",
    partitions_def=model_partitions,
    io_manager_key=GEOPARQUET_IO_MANAGER_KEY,
    pool=GPU_POOL,
    ins={
        "trained_model": dg.AssetIn(),
        "training_dataset": dg.AssetIn(partition_mapping=BY_GRID_LEVEL),
        "grid_cells": dg.AssetIn(partition_mapping=BY_GRID_LEVEL),
    },
    metadata=stored_at("predictions"),
    automation_condition=ON_UPDATED_INPUTS,
)
def predictions(
    context: dg.AssetExecutionContext,
    config: PredictionConfig,
    trained_model,
    training_dataset,
    grid_cells,
    dask: DaskResource,
):
    """Predicted RTS class and one probability per class for every cell of the grid level;
    cells without features get none. The dashboard's Inference page maps them. Batches of
    cells are predicted as tasks on the Dask cluster; pool ``gpu`` (see pools)."""
    from entropice_core.ml.inference import predict_cells

    refuse_outdated(context, {"trained_model": context.partition_key})
    model, stamp = trained_model
    frame = predict_cells(
        model,
        training_dataset,
        grid_cells,
        stamp["classes"],
        stamp["feature_names"],
        device=stamp.get("predict_device", "cpu"),
        time=stamp.get("time", "static"),
        **config.model_dump(exclude_none=True) | {"client": dask.models_client},
    )
    counts = frame["predicted_label"].value_counts(dropna=False)
    metadata = {
        "cells": frame["cell_id"].nunique(),
        "rows": len(frame),  # a yearly model: one per cell and year
        "years": sorted(int(y) for y in frame["year"].dropna().unique()) if "year" in frame else [],
        "cells_without_prediction": int(frame["predicted_class"].isna().sum()),
        "predicted_classes": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
        "dashboard": dashboard_url("inference", context.partition_key),
        **frame_summary(frame, map_of="predicted_class"),
    }
    yield from checked_output(frame, metadata)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "model"},
    group_name="models",
    kinds={"parquet"},
    code_version="1",
    deps=[dg.AssetDep(trained_model, partition_mapping=dg.AllPartitionMapping())],
    io_manager_key=TABLE_IO_MANAGER_KEY,
    metadata=stored_at("experiment_summary"),
    automation_condition=ON_ANY_MODEL,
)
def experiment_summary(data_dir: DataDirResource):
    """The leaderboard: every trained (grid level, experiment) with its CV and test scores,
    the majority baseline, search time, best parameters and the data versions it read."""
    from entropice_core.ml.summary import best_per_level, experiment_summary
    from entropice_core.plots import leaderboard_png

    table = experiment_summary(Layout(data_dir.root))
    if table.empty:
        raise ValueError("no trained experiment under training-results/: materialise trained_model")
    best = best_per_level(table)[
        ["grid_level", "task", "experiment", "cv_f1_macro", "test_f1_macro"]
    ]
    metadata = {
        "experiments": len(table),
        "best_per_grid_level": markdown_table(best.set_index("grid_level"), 3),
        "leaderboard": png_markdown(leaderboard_png(table), "CV F1 macro per experiment"),
        "dashboard": dashboard_url("overview"),
    }
    yield from checked_output(table, metadata)
