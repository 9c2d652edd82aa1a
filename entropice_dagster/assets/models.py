"""Model stage: the training dataset per grid level, trained models and predictions per
(grid level, experiment). Experiments are the TOML files in configs/ (see docs/training.md)."""

import json
import warnings
from typing import Any

import dagster as dg
import geopandas as gpd
import pandas as pd
import xarray as xr
from pydantic import Field

from entropice_core.ml.dataset import DatasetEnsemble, TrainingData
from entropice_core.ml.inference import DEFAULT_BATCH_SIZE, predict_cells
from entropice_core.ml.training import ExperimentConfig, TrainedExperiment, train_experiment
from entropice_dagster.checks import checked_output
from entropice_dagster.io_managers import (
    EXPERIMENT_IO_MANAGER_KEY,
    GEOPARQUET_IO_MANAGER_KEY,
    ZARR_IO_MANAGER_KEY,
)
from entropice_dagster.metadata import frame_summary
from entropice_dagster.partitions import CONFIG_DIR, grid_partitions, model_partitions

#: The DatasetEnsemble of every grid level: its sources are the inputs of training_dataset,
#: so a new [[sources]] table in configs/dataset.toml is a new upstream asset.
ENSEMBLE = DatasetEnsemble.from_toml(CONFIG_DIR / "dataset.toml")
#: Models and predictions read the one grid level of their (grid level, experiment) key.
with warnings.catch_warnings():  # beta since 1.x, the documented way for 2-D -> 1-D (stack.md)
    warnings.simplefilter("ignore", dg.BetaWarning)
    BY_GRID_LEVEL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="grid_level")


def _markdown(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.round(4).to_markdown())


@dg.asset(
    group_name="models",
    kinds={"zarr"},
    code_version="1",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    ins={
        ENSEMBLE.labels.asset: dg.AssetIn(ENSEMBLE.labels.asset),
        **{source.asset: dg.AssetIn(source.asset) for source in ENSEMBLE.sources},
    },
    metadata={"entropice/path": "datasets/{partition_key}.zarr"},
)
def training_dataset(context: dg.AssetExecutionContext, **inputs: xr.Dataset):
    """Features of every cell joined from the L2 datasets in configs/dataset.toml, the RTS
    targets, and the spatially blocked split: test blocks, a buffer, CV folds."""
    labels = inputs.pop(ENSEMBLE.labels.asset)
    data = ENSEMBLE.build(labels, inputs)
    summary = data.summary()
    context.log.info(f"{context.partition_key}: {summary}")
    return dg.MaterializeResult(
        value=data.dataset,
        metadata={
            **summary,
            "feature_names": data.feature_names,
            "sources": dg.MetadataValue.json(json.loads(data.dataset.attrs["sources"])),
            "data_versions": dg.MetadataValue.json(data.data_versions),
            "preview": dg.MetadataValue.md(data.X().head(10).round(2).to_markdown()),
        },
    )


#: Scores shown as numbers (plots and tables in the UI, the demo's summary).
HEADLINE = ("accuracy", "f1_macro", "roc_auc")
COLUMNS = {"cv": "model_cv_mean", "test": "model_test", "majority_cv": "baseline_cv_mean"}


def _headline(scores: pd.DataFrame) -> dict[str, float]:
    return {
        f"{prefix}_{metric}": float(scores.loc[metric, column])
        for metric in HEADLINE
        if metric in scores.index
        for prefix, column in COLUMNS.items()
    }


def _scores_check(result: TrainedExperiment) -> dg.AssetCheckResult:
    metric = result.refit_metric
    row = result.scores.loc[metric]
    return dg.AssetCheckResult(
        check_name="beats_majority_baseline",
        passed=result.beats_baseline(),
        metadata={
            "metric": metric,
            **{key: float(value) for key, value in row.items()},
        },
    )


@dg.asset(
    group_name="models",
    kinds={"skops", "parquet"},
    code_version="1",
    partitions_def=model_partitions,
    io_manager_key=EXPERIMENT_IO_MANAGER_KEY,
    ins={"training_dataset": dg.AssetIn(partition_mapping=BY_GRID_LEVEL)},
    metadata={"entropice/path": "training-results/{grid_level}/{experiment}"},
    check_specs=[
        dg.AssetCheckSpec(
            "beats_majority_baseline",
            asset="trained_model",
            description="The model scores higher than the majority class on the experiment's "
            "refit metric (F1 macro by default), both in spatial CV and on the test blocks.",
            blocking=True,
        )
    ],
)
def trained_model(context: dg.AssetExecutionContext, training_dataset: xr.Dataset):
    """The experiment's model tuned by randomised search over spatial CV folds and refitted on
    the training cells, with CV results, test scores, feature importance and provenance."""
    keys = context.partition_key.keys_by_dimension
    config = ExperimentConfig.from_toml(CONFIG_DIR / f"{keys['experiment']}.toml")
    result = train_experiment(TrainingData(training_dataset), config, context.log.info)
    yield from checked_output(
        result,
        {
            "scores": _markdown(result.scores),
            "top_features": _markdown(result.importance.head(10).set_index("feature")),
            "best_params": dg.MetadataValue.json(result.stamp["best_params"]),
            "classes": result.classes,
            "train_cells": result.stamp["train_cells"],
            "test_cells": result.stamp["test_cells"],
            "data_versions": dg.MetadataValue.json(result.stamp["data_versions"]),
            **_headline(result.scores),
        },
        [_scores_check(result)],
    )


class PredictionConfig(dg.Config):
    """How predictions run (launchpad / run config)."""

    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE, ge=1, description="Cells per prediction batch (memory bound)."
    )


@dg.asset(
    group_name="models",
    kinds={"geoparquet"},
    code_version="1",
    partitions_def=model_partitions,
    io_manager_key=GEOPARQUET_IO_MANAGER_KEY,
    ins={
        "trained_model": dg.AssetIn(),
        "training_dataset": dg.AssetIn(partition_mapping=BY_GRID_LEVEL),
        "grid_cells": dg.AssetIn(partition_mapping=BY_GRID_LEVEL),
    },
    metadata={"entropice/path": "training-results/{grid_level}/{experiment}/predictions.parquet"},
)
def predictions(
    context: dg.AssetExecutionContext,
    config: PredictionConfig,
    trained_model: tuple[Any, dict[str, Any]],
    training_dataset: xr.Dataset,
    grid_cells: gpd.GeoDataFrame,
):
    """Predicted RTS class and one probability per class for every cell of the grid level;
    cells without features get none."""
    model, stamp = trained_model
    frame = predict_cells(
        model,
        training_dataset,
        grid_cells,
        stamp["classes"],
        stamp["feature_names"],
        batch_size=config.batch_size,
        device=stamp.get("predict_device", "cpu"),
    )
    counts = frame["predicted_label"].value_counts(dropna=False)
    return dg.MaterializeResult(
        value=frame,
        metadata={
            "cells": len(frame),
            "cells_without_prediction": int(frame["predicted_class"].isna().sum()),
            "predicted_classes": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
            **frame_summary(frame),
        },
    )
