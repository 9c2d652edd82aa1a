"""The leaderboard: one row per trained experiment and grid level, read from its result files.

Every ``training-results/{grid_level}/{experiment}/`` folder that holds a model stamp gives a
row: what was trained (model, task, dataset variant, time mode), its CV scores (mean and std
over the spatial folds) and test-block scores for the summary metrics, the majority-class
baseline, the search's wall time, the best parameters and the data versions of every input.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from entropice_core.layout import Layout
from entropice_core.ml.training import MODEL_STAMP, SCORES

if TYPE_CHECKING:
    import pandas as pd

#: Metrics of the leaderboard (macro averages weigh the rare RTS classes like the others).
SUMMARY_METRICS = (
    "accuracy",
    "f1_macro",
    "jaccard_macro",
    "precision_macro",
    "recall_macro",
    "roc_auc",
)
#: Leaderboard column of each scores-table column, with {metric} filled in.
SCORE_COLUMNS = {
    "model_cv_mean": "cv_{metric}",
    "model_cv_std": "cv_{metric}_std",
    "model_test": "test_{metric}",
    "baseline_cv_mean": "baseline_cv_{metric}",
    "baseline_test": "baseline_test_{metric}",
}


def experiment_summary(layout: Layout) -> pd.DataFrame:
    """Collect every trained experiment under ``layout`` into one table.

    Parameters
    ----------
    layout : Layout
        The storage layout to scan.

    Returns
    -------
    pandas.DataFrame
        One row per (grid level, experiment), sorted by grid level, task and CV F1 macro
        (best first). Scores are NaN where a task lacks a metric (ROC AUC: binary only);
        ``best_params`` and ``data_versions`` are JSON text.
    """
    import pandas as pd

    rows = []
    for grid_level, experiment, folder in layout.experiment_folders():
        stamp_path = folder / MODEL_STAMP
        if not stamp_path.exists():
            continue
        stamp = json.loads(stamp_path.read_text())
        scores = pd.read_parquet(folder / SCORES).set_index("metric")
        row = {
            "grid_level": grid_level,
            "experiment": experiment,
            "model": stamp["model"],
            "task": stamp["task"],
            "dataset": stamp["dataset"],
            "time": stamp["time"],
            "classes": len(stamp["classes"]),
            "train_rows": stamp["train_rows"],
            "test_rows": stamp["test_rows"],
            "features": len(stamp["feature_names"]),
            "search_candidates": stamp["search_candidates"],
            "search_seconds": stamp["search_seconds"],
            "refit_seconds": stamp["refit_seconds"],
        }
        for metric in SUMMARY_METRICS:
            for column, name in SCORE_COLUMNS.items():
                value = scores.loc[metric, column] if metric in scores.index else float("nan")
                row[name.format(metric=metric)] = float(value)
        row["best_params"] = json.dumps(stamp["best_params"], sort_keys=True)
        row["data_versions"] = json.dumps(_versions(stamp["data_versions"]), sort_keys=True)
        row["trained_at"] = stamp["trained_at"]
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = ["grid_level", "task", "cv_f1_macro"]
    return table.sort_values(order, ascending=[True, True, False], ignore_index=True)


def _versions(data_versions: dict[str, dict[str, str]]) -> dict[str, str]:
    """Per input: its snapshot ids (Icechunk, upstream commits) and content hash, one line."""
    return {
        asset: " ".join(f"{k}={v}" for k, v in sorted(version.items()) if k != "path")
        for asset, version in data_versions.items()
    }


def best_per_level(summary: pd.DataFrame, metric: str = "cv_f1_macro") -> pd.DataFrame:
    """Return the best experiment per grid level and task by ``metric``.

    Parameters
    ----------
    summary : pandas.DataFrame
        The table of :func:`experiment_summary`.
    metric : str, optional
        Column to rank by (higher is better).

    Returns
    -------
    pandas.DataFrame
        One row per (grid level, task).
    """
    if summary.empty:
        return summary
    best = summary.loc[summary.groupby(["grid_level", "task"])[metric].idxmax()]
    return best.reset_index(drop=True)
