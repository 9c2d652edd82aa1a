"""Experiments on synthetic data: configs, every model through one interface, model files,
inference. The sample-region runs are in test_ml_sample_region.py."""

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import skops.io as sio
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline
from test_ml_dataset import synthetic

from entropice_core.layout import Layout
from entropice_core.ml.dataset import ROLES, DatasetEnsemble, SourceSpec, TrainingData
from entropice_core.ml.inference import predict_cells
from entropice_core.ml.summary import experiment_summary
from entropice_core.ml.training import (
    MODEL_STAMP,
    ExperimentConfig,
    experiment_keys,
    load_model,
    save_experiment,
    train_experiment,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = ("espa", "xgboost", "rf", "knn")
SINGLE_SOURCES = ("terrain", "climate", "alphaearth")


@pytest.fixture(scope="module")
def data() -> TrainingData:
    labels, features, _ = synthetic("healpix_9", seed=1)
    holes = features.copy(deep=True)
    holes["b_std"][:4] = np.nan  # four excluded cells: no prediction for them
    ensemble = DatasetEnsemble(sources=[SourceSpec(asset="terrain_features", path="x")])
    return ensemble.build(labels, {"terrain_features": holes})


def config(model: str, **changes) -> ExperimentConfig:
    base = ExperimentConfig.from_toml(CONFIGS / f"{model}-binary.toml")
    search = base.search.model_copy(update={"n_iter": 2})
    return base.model_copy(update={"search": search, **changes})


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> dict[str, tuple]:
    out = {}
    for model in MODELS:
        result = train_experiment(data, config(model))
        folder = tmp_path_factory.mktemp(model)
        save_experiment(result, folder)
        out[model] = (result, folder)
    return out


def test_the_example_configs_are_the_experiments() -> None:
    keys = experiment_keys(CONFIGS)
    every_task = {f"{m}-{t}" for m in MODELS for t in ("binary", "count", "density")}
    ablations = {f"{m}-binary-{s}" for m in ("espa", "xgboost") for s in SINGLE_SOURCES}
    assert every_task | ablations <= set(keys)
    budgets = set()
    for key in keys:
        experiment = ExperimentConfig.from_toml(CONFIGS / f"{key}.toml")
        assert experiment.name == key
        experiment.estimator()  # every parameter exists on the estimator
        budgets.add(experiment.search.n_iter)
        variant = experiment.variant
        if key in ablations:
            assert variant.sources == [key.rsplit("-", 1)[1] + "_features"]
    assert len(budgets) == 1  # the same search budget for every model: a fair comparison
    count = ExperimentConfig.from_toml(CONFIGS / "espa-count.toml")
    binary = ExperimentConfig.from_toml(CONFIGS / "espa-binary.toml")
    assert count.target.task == "count" and count.search == binary.search  # `extends`


@pytest.mark.parametrize("model", MODELS)
def test_every_model_learns_the_synthetic_signal(trained, model) -> None:
    result, _ = trained[model]
    assert result.beats_baseline()
    assert set(result.scores.index) >= {
        "accuracy",
        "f1_macro",
        "f1_weighted",
        "jaccard_macro",
        "precision_weighted",
        "recall_macro",
        "roc_auc",
    }
    # a_mean carries the label
    assert result.importance.sort_values("permutation_mean").iloc[-1]["feature"] == "a_mean"
    assert len(result.cv_results) == 2


@pytest.mark.parametrize("model", MODELS)
def test_model_file_round_trip_gives_identical_predictions(data, trained, model) -> None:
    result, folder = trained[model]
    loaded, stamp = load_model(folder)
    X = data.X("test")
    np.testing.assert_array_equal(loaded.predict_proba(X), result.model.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), result.model.predict(X))
    assert stamp["format"] == "skops" and (folder / "model.skops").exists()
    assert stamp["versions"]["entropice"] and stamp["versions"]["scikit-learn"]
    assert stamp["data_versions"]["rts_labels"]["sha256"]
    for name in ("cv_results.parquet", "scores.parquet", "feature_importance.parquet"):
        assert not pd.read_parquet(folder / name).empty
    again = ExperimentConfig.from_toml(folder / "config.toml")
    assert again == result.config


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("batch_size", [7, 100_000])
def test_inference_equals_the_models_own_predict_proba(data, trained, model, batch_size) -> None:
    result, _ = trained[model]
    ids = data.cell_ids
    # the grid cells in another order, plus one cell the dataset lacks
    cells = gpd.GeoDataFrame(
        {"cell_id": np.append(ids[::-1], np.uint64(1))},
        geometry=[shapely.Point(0, 0)] * (ids.size + 1),
        crs="EPSG:4326",
    )
    frame = predict_cells(
        result.model,
        data.dataset,
        cells,
        result.classes,
        result.feature_names,
        batch_size=batch_size,
    ).set_index("cell_id")
    usable = ~data.mask("excluded")
    expected = result.model.predict_proba(data.X()[usable])
    got = frame.loc[ids[usable], ["proba_no_rts", "proba_rts"]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    classes = frame.loc[ids[usable], "predicted_class"].to_numpy(dtype=int)
    np.testing.assert_array_equal(classes, np.argmax(expected, axis=1))
    no_prediction = [*list(ids[~usable]), 1]
    assert frame.loc[no_prediction, "predicted_class"].isna().all()
    assert frame.loc[no_prediction, "proba_rts"].isna().all()
    assert (frame.loc[ids[data.mask("test")], "role"] == "test").all()
    assert int(ROLES["excluded"]) == -1


class Smuggled(ClassifierMixin, BaseEstimator):
    """A class from outside the trusted modules, as a tampered file would hold."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self


def test_model_files_with_untrusted_types_are_refused(trained, tmp_path) -> None:
    _, folder = trained["rf"]
    for name in (MODEL_STAMP, "model.skops"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    sio.dump(Pipeline([("model", Smuggled().fit([[0]], [0]))]), tmp_path / "model.skops")
    with pytest.raises(ValueError, match="refusing to load"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="train the experiment first"):
        load_model(tmp_path / "nothing")


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "dataset.toml").write_text((CONFIGS / "dataset.toml").read_text())
    path = tmp_path / "xgboost-binary.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model = "svm"', "unknown model 'svm'; choose one of espa, xgboost, rf, knn"),
        (
            'model = "xgboost"\n[search.distributions]\nmax_depth = { dist = "randomint" }',
            "'randomint' is not a scipy.stats distribution",
        ),
        (
            'model = "xgboost"\n[search.distributions]\neta = { dist = "uniform", lo = 1 }',
            r"scipy.stats.uniform\(\{'lo': 1\}\) is invalid",
        ),
        (
            'model = "xgboost"\n[search.distributions]\neta = 0.1',
            "or a list of values",
        ),
        ('model = "xgboost"\n[target]\ntask = "count"', "must be named <model>-<task>"),
        ('model = "xgboost"\n[search]\nn_iter = 0', "greater than or equal to 1"),
        (
            'model = "xgboost"\n[search]\nn_iterr = 5',
            r"xgboost-binary.toml: search.n_iterr: unknown key",
        ),
        (
            'model = "xgboost"\ndataset = "dem"',
            r"xgboost-binary.toml: unknown dataset variant 'dem'; the dataset config defines",
        ),
        ('model = "xgboost"\ndataset = "terrain"', "must be named .*: xgboost-binary-terrain"),
        ('extends = "xgboost-binary.toml"\nmodel = "xgboost"', "loops back to itself"),
        ("model = [", "is not valid TOML"),
    ],
)
def test_bad_configs_give_clear_errors(tmp_path, text, message) -> None:
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.from_toml(_write(tmp_path, text))


def test_unknown_hyperparameters_and_missing_files_are_named(tmp_path) -> None:
    path = _write(tmp_path, 'model = "xgboost"\n[params]\nn_trees = 5')
    with pytest.raises(ValueError) as err:  # at load, not after the data are read
        ExperimentConfig.from_toml(path)
    assert f"{path}: params.n_trees: not a parameter of xgboost." in str(err.value)
    assert "'max_depth'" in str(err.value)  # the parameters it does have
    path = _write(tmp_path, "")
    (tmp_path / "rf-binary.toml").write_text('model = "rf"\n[search.distributions]\ndepth = [1, 2]')
    with pytest.raises(ValueError, match=r"rf-binary.toml: search.distributions.depth: not a "):
        ExperimentConfig.from_toml(tmp_path / "rf-binary.toml")
    with pytest.raises(FileNotFoundError, match=r"knn-binary.toml does not exist; the experiments"):
        ExperimentConfig.from_toml(tmp_path / "knn-binary.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # syntax errors name the file, the line and show it
        (
            'model = "xgboost"\nseed = 0 0',
            r"xgboost-binary.toml is not valid TOML: .*line 2.*`seed = 0 0`",
        ),
        (
            'model = "xgboost"\nextends = "xgb.toml"',
            r"xgboost-binary.toml: extends: .*xgb.toml does not exist",
        ),
        ('model = "xgboost"\nextends = 3', r"xgboost-binary.toml: extends: give the file name"),
        (
            'model = "xgboost"\nensemble = "nope.toml"',
            r"xgboost-binary.toml: ensemble: the dataset config .*nope.toml does not exist",
        ),
        ("seed = 1", r"xgboost-binary.toml: model: missing; choose one of"),
        (
            'model = "xgboost"\nseed = "zero"',
            r"xgboost-binary.toml: seed: Input should be a valid integer",
        ),
    ],
)
def test_experiment_errors_name_the_file_and_key(tmp_path, text, message) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        ExperimentConfig.from_toml(_write(tmp_path, text))


def test_empty_or_one_class_training_data_is_refused(data) -> None:
    one_class = data.dataset.copy(deep=True)
    one_class["rts_count"][:] = 0
    with pytest.raises(ValueError, match="one class only"):
        train_experiment(TrainingData(one_class), config("knn"))
    nothing = data.dataset.copy(deep=True)
    nothing["role"][:] = ROLES["excluded"]
    with pytest.raises(ValueError, match="nothing to train"):
        train_experiment(TrainingData(nothing), config("knn"))


def test_models_that_cannot_take_missing_values_say_so(data) -> None:
    kept = data.dataset.copy(deep=True)
    features = kept["features"].to_numpy().copy()
    features[np.flatnonzero(data.mask("train"))[:3], 0] = np.nan
    kept["features"] = (kept["features"].dims, features)
    with pytest.raises(ValueError, match="cannot take missing values"):
        train_experiment(TrainingData(kept), config("knn"))
    assert train_experiment(TrainingData(kept), config("xgboost")).beats_baseline()


def test_summary_equals_the_individual_result_files(data, trained, tmp_path) -> None:
    layout = Layout(tmp_path)
    for model in ("espa", "knn"):
        save_experiment(trained[model][0], layout.experiment("healpix_9", f"{model}-binary"))
    save_experiment(trained["xgboost"][0], layout.experiment("healpix_9", "xgboost-binary"))
    summary = experiment_summary(layout).set_index("experiment")
    assert sorted(summary.index) == ["espa-binary", "knn-binary", "xgboost-binary"]
    for name, row in summary.iterrows():
        folder = tmp_path / "training-results" / "healpix_9" / name
        scores = pd.read_parquet(folder / "scores.parquet").set_index("metric")
        stamp = json.loads((folder / "model.json").read_text())
        assert row["grid_level"] == "healpix_9" and row["model"] == stamp["model"]
        assert (row["task"], row["dataset"], row["time"]) == ("binary", "all", "static")
        for metric in ("accuracy", "f1_macro", "jaccard_macro", "recall_macro", "roc_auc"):
            assert row[f"cv_{metric}"] == scores.loc[metric, "model_cv_mean"]
            assert row[f"cv_{metric}_std"] == scores.loc[metric, "model_cv_std"]
            assert row[f"test_{metric}"] == scores.loc[metric, "model_test"]
            assert row[f"baseline_test_{metric}"] == scores.loc[metric, "baseline_test"]
        assert json.loads(row["best_params"]) == stamp["best_params"]
        assert row["search_seconds"] == stamp["search_seconds"]
        versions = json.loads(row["data_versions"])
        assert versions["rts_labels"] == f"sha256={stamp['data_versions']['rts_labels']['sha256']}"
    # best first within a grid level and task
    assert summary["cv_f1_macro"].is_monotonic_decreasing
