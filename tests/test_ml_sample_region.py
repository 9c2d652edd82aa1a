"""Models on the sample region, through Dagster and through the command line.

The runs are those of the end-to-end run (``sample_graph``): the experiments at h3_5 (378
cells, 66 % with RTS, 66 blocks of h3_4); `make demo` trains them on h3_6 and healpix_9,
where the blocking baseline check must pass too."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from entropice_core.io.zarr import read_dataset
from entropice_core.ml.dataset import TrainingData
from entropice_core.ml.training import load_model

KEY = "h3_5"
ENTROPICE = Path(sys.executable).with_name("entropice")


@pytest.fixture(scope="module")
def models(sample_graph) -> tuple[Path, dict[str, dg.ExecuteInProcessResult]]:
    """The model runs of the end-to-end run at KEY, one per experiment."""
    results = {
        experiment: sample_graph.run("trained_model", f"{experiment}|{KEY}")
        for experiment in sample_graph.experiments[KEY]
    }
    return sample_graph.data_dir, results


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["espa-binary", "xgboost-binary", "rf-binary", "knn-binary"])
def test_every_model_beats_the_majority_baseline(models, experiment) -> None:
    data_dir, results = models
    result = results[experiment]
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["beats_majority_baseline"].passed, checks["beats_majority_baseline"].metadata
    assert result.success
    (model,) = result.asset_materializations_for_node("trained_model")
    assert model.metadata["cv_f1_macro"].value > model.metadata["majority_cv_f1_macro"].value
    assert "| f1_macro" in model.metadata["scores"].value
    top = model.metadata["top_features"].value
    assert any(name in top for name in ("elevation", "slope", "tpi", "tri", "vrm", "curvature"))
    folder = data_dir / "training-results" / KEY / experiment
    scores = pd.read_parquet(folder / "scores.parquet").set_index("metric")
    assert scores.loc["roc_auc", "model_test"] > 0.6


@pytest.mark.slow
def test_predictions_cover_every_cell_and_match_the_model(models, sample_graph) -> None:
    data_dir, _ = models
    folder = data_dir / "training-results" / KEY / "xgboost-binary"
    frame = gpd.read_parquet(folder / "predictions.parquet").set_index("cell_id")
    cells = gpd.read_parquet(data_dir / "grids" / f"{KEY}.parquet")
    assert set(frame.index) == set(cells["cell_id"]) and frame.crs.to_epsg() == 4326
    predicted = frame["predicted_class"].notna()
    assert predicted.sum() >= 0.99 * len(frame)
    total = frame.loc[predicted, ["proba_no_rts", "proba_rts"]].sum(axis=1)
    np.testing.assert_allclose(total, 1, rtol=1e-5)
    model, stamp = load_model(folder)
    data = TrainingData(read_dataset(data_dir / "datasets" / f"{KEY}.zarr"))
    X = data.X("test")
    np.testing.assert_allclose(
        frame.loc[X.index, "proba_rts"], model.predict_proba(X[stamp["feature_names"]])[:, 1], 1e-6
    )
    terrain = stamp["data_versions"]["terrain_features"]
    assert terrain["sha256"]
    # the model names the exact terrain_derivatives commit its features were aggregated from
    derivatives = sample_graph.metadata("terrain_derivatives")
    assert terrain["derivatives_snapshot_id"] == derivatives["icechunk_snapshot_id"]


@pytest.mark.slow
def test_cli_train_and_predict(models, tmp_path) -> None:
    data_dir, _ = models
    out = tmp_path / "xgboost"
    env = {"ENTROPICE_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    train = subprocess.run(
        [
            *(str(ENTROPICE), "train", "--config", "configs/xgboost-binary.toml"),
            *("--grid-level", KEY, "--n-iter", "2", "--importance-repeats", "1"),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
        check=False,
    )
    assert train.returncode == 0, train.stderr
    assert "beats the majority baseline" in train.stderr and "roc_auc" in train.stdout
    stamp = json.loads((out / "model.json").read_text())
    assert stamp["grid_level"] == KEY and len(stamp["best_params"]) == 5  # the searched ones
    bad = subprocess.run(
        [str(ENTROPICE), "train", "--config", "configs/dataset.toml", "--grid-level", KEY],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
        check=False,
    )
    assert bad.returncode == 2 and "configs/dataset.toml: model: missing" in bad.stderr
    predict = subprocess.run(
        [
            *(str(ENTROPICE), "predict", "--grid-level", KEY, "--experiment", "rf-binary"),
            *("--batch-size", "500", "--out", str(tmp_path / "p.parquet")),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert predict.returncode == 0, predict.stderr
    expected = gpd.read_parquet(
        data_dir / "training-results" / KEY / "rf-binary" / "predictions.parquet"
    )
    got = gpd.read_parquet(tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(
        got.drop(columns="geometry").reset_index(drop=True),
        expected.drop(columns="geometry").reset_index(drop=True),
    )
