"""Experiments: one model on one task, tuned by randomised search over spatial CV folds.

An experiment is a TOML file named ``<model>-<task>.toml`` (configs/espa-binary.toml, ...):
the model, the target, fixed parameters and the search distributions (scipy.stats names with
their keyword arguments, or a list to choose from). Every model goes through the same steps:

1. ``Pipeline([scale?, model])``: distance-based models (eSPA, KNN) get a StandardScaler fitted
   inside each CV split, so no validation cell shapes the scaling.
2. ``RandomizedSearchCV`` over the dataset's spatial folds (buffered, see dataset.py), scored
   with accuracy, F1, Jaccard, precision, recall (macro and weighted) and ROC AUC (binary);
   the best candidate by ``search.refit`` is refitted on all training cells.
3. The held-out test blocks score the model and the majority-class baseline.
4. Feature importance: the model's own (eSPA's W, tree gains/impurity) where it has one, and
   permutation importance on the test cells for every model.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from entropice_core import __version__
from entropice_core.config import Device, resolve_backend
from entropice_core.io.atomic import atomic_dirs, resolve_published
from entropice_core.ml.dataset import (
    DatasetEnsemble,
    Target,
    TrainingData,
    VariantSpec,
    config_error,
    fingerprint,
    read_toml,
)

if TYPE_CHECKING:  # the ML stack is imported where it is used: the configs load without it
    import pandas as pd
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

ModelName = Literal["espa", "xgboost", "rf", "knn"]

#: Files of a trained experiment (the ``training-results/{grid_level}/{experiment}/`` folder).
MODEL_STAMP = "model.json"
CV_RESULTS = "cv_results.parquet"
SCORES = "scores.parquet"
FEATURE_IMPORTANCE = "feature_importance.parquet"
RESOLVED_CONFIG = "config.toml"

#: Module prefixes a model file may hold; anything else is refused when loading.
TRUSTED_MODULES = ("sklearn.", "xgboost.", "numpy.", "scipy.", "entropice_core.ml.")


@dataclass(frozen=True)
class ModelKind:
    """How one model family is built and what it can do.

    Models are built single-threaded: the parallelism is the search's (``n_jobs`` candidate
    fits at once), which keeps one process per core instead of threads fighting over them.
    """

    build: Callable[[Device, int], BaseEstimator]
    scaled: bool
    takes_missing: bool
    takes_sample_weight: bool
    takes_device_arrays: bool = False


def _espa(device: Device, seed: int) -> BaseEstimator:
    from entropice_core.ml.espa import ESPAClassifier

    model = ESPAClassifier(random_state=seed)
    if device == "cuda":  # one array-API code path; torch carries it to the GPU
        model.set_params(backend=resolve_backend(device, "torch"), device=device)
    return model


def _xgboost(device: Device, seed: int) -> BaseEstimator:
    try:
        from xgboost import XGBClassifier
    except ImportError as err:
        raise ImportError(
            "model 'xgboost' needs the xgboost module: install the `cpu` extra (xgboost-cpu: "
            "`uv sync --extra cpu`, pip install 'entropice[cpu]') or the `gpu` extra"
        ) from err
    return XGBClassifier(device=device, tree_method="hist", random_state=seed, n_jobs=1)


def _cuml(module: str, name: str) -> Any:
    try:
        return getattr(__import__(f"cuml.{module}", fromlist=[name]), name)
    except ImportError as err:
        raise ImportError(
            f"device 'cuda' for {name} needs cuML (RAPIDS): install it with conda or "
            "`pip install cuml-cu12`, or use device = 'cpu'"
        ) from err


def _rf(device: Device, seed: int) -> BaseEstimator:
    if device == "cuda":
        return _cuml("ensemble", "RandomForestClassifier")(random_state=seed)
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(random_state=seed, n_jobs=1)


def _knn(device: Device, seed: int) -> BaseEstimator:
    if device == "cuda":
        return _cuml("neighbors", "KNeighborsClassifier")()
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_jobs=1)


MODELS: dict[str, ModelKind] = {
    "espa": ModelKind(_espa, scaled=True, takes_missing=False, takes_sample_weight=True),
    "xgboost": ModelKind(
        _xgboost,
        scaled=False,
        takes_missing=True,
        takes_sample_weight=True,
        takes_device_arrays=True,
    ),
    "rf": ModelKind(_rf, scaled=False, takes_missing=False, takes_sample_weight=True),
    "knn": ModelKind(_knn, scaled=True, takes_missing=False, takes_sample_weight=False),
}


class SearchSpec(BaseModel):
    """Randomised search: how many candidates, which metric picks the best, what to sample."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_iter: int = Field(default=10, ge=1, description="Candidates drawn.")
    refit: str = Field(default="f1_macro", description="Metric that picks the best candidate.")
    distributions: dict[str, Any] = Field(
        default_factory=dict,
        description="Per parameter: {dist = '<scipy.stats name>', <its kwargs>} or a list.",
    )

    @field_validator("distributions")
    @classmethod
    def _valid(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, spec in value.items():
            distribution(name, spec)
        return value

    def sampled(self) -> dict[str, Any]:
        """Build the distributions as RandomizedSearchCV takes them.

        Returns
        -------
        dict of str to Any
            Per parameter, a frozen scipy.stats distribution or a list of choices.
        """
        return {name: distribution(name, spec) for name, spec in self.distributions.items()}


def distribution(name: str, spec: Any) -> Any:
    """Build a frozen scipy.stats distribution (or a list of choices) from its TOML form.

    Parameters
    ----------
    name : str
        Parameter name (for error messages).
    spec : Any
        ``{dist = "<scipy.stats name>", <its kwargs>}`` or a non-empty list of values.

    Returns
    -------
    Any
        The frozen distribution, or ``spec`` itself if it is a list.

    Raises
    ------
    ValueError
        If ``spec`` is an empty list, has no ``dist``, names no scipy.stats distribution, or
        its arguments are invalid.
    """
    import scipy.stats

    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"parameter {name!r}: an empty list has nothing to choose from")
        return spec
    if not isinstance(spec, dict) or "dist" not in spec:
        raise ValueError(
            f"parameter {name!r}: write {{dist = 'loguniform', a = 1e-3, b = 1.0}} (a scipy.stats "
            f"distribution and its arguments) or a list of values, not {spec!r}"
        )
    kwargs = {k: v for k, v in spec.items() if k != "dist"}
    family = getattr(scipy.stats, str(spec["dist"]), None)
    if not isinstance(family, scipy.stats.rv_continuous | scipy.stats.rv_discrete):
        raise ValueError(
            f"parameter {name!r}: {spec['dist']!r} is not a scipy.stats distribution; use e.g. "
            "uniform (loc, scale), loguniform (a, b), randint (low, high), norm (loc, scale)"
        )
    try:
        frozen = family(**kwargs)
        frozen.rvs(random_state=0)
    except Exception as err:
        raise ValueError(
            f"parameter {name!r}: scipy.stats.{spec['dist']}({kwargs}) is invalid: {err}"
        ) from err
    return frozen


def _read_experiment(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read an experiment's TOML with its ``extends`` chain merged in (this file wins)."""
    if path.resolve() in seen:
        raise ValueError(f"{path}: `extends` loops back to itself")
    raw = read_toml(path, "experiment config")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ValueError(f"{path}: extends: give the file name of another experiment, got {base!r}")
    if not (path.parent / base).is_file():
        raise FileNotFoundError(
            f"{path}: extends: {path.parent / base} does not exist (a path relative to "
            f"{path.parent}); the experiments there are {_experiment_files(path.parent)}"
        )
    merged = _read_experiment(path.parent / base, (*seen, path.resolve()))
    merged.pop("name", None)
    return _merged(merged, raw)


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge TOML tables: ``override`` wins, tables merge key by key."""
    out = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if nested else value
    return out


class ExperimentConfig(BaseModel):
    """One experiment: ``<model>-<task>[-<dataset>]``, read from configs/ of that name."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    name: str = Field(
        description="Experiment key <model>-<task>[-<dataset>], e.g. espa-binary (dataset "
        "'all') or xgboost-binary-terrain."
    )
    model: ModelName
    device: Device = "cpu"
    target: Target = Target()
    dataset: str = Field(
        default="all",
        description="Dataset variant (the ensemble's [variants]): which sources and time mode.",
    )
    class_weight: Literal["balanced", "none"] = Field(
        default="balanced",
        description="'balanced' weights samples inversely to class frequency in fit "
        "(models that take sample weights; KNN does not).",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed hyperparameters.")
    search: SearchSpec = SearchSpec()
    importance_repeats: int = Field(
        default=5, ge=1, description="Shuffles per feature in the permutation importance."
    )
    seed: int = 0
    n_jobs: int = Field(
        default=-1,
        description="Parallel CV fits and permutation-importance repeats (-1: all cores; "
        "1: in this process only).",
    )
    ensemble: DatasetEnsemble

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        self.ensemble.variant(self.dataset)  # an unknown variant fails here, named
        expected = experiment_name(self.model, self.target.task, self.dataset)
        if self.name != expected:
            raise ValueError(
                f"experiment {self.name!r} must be named <model>-<task>[-<dataset>]: {expected}"
            )
        return self

    @property
    def variant(self) -> VariantSpec:
        """The dataset variant the model sees."""
        return self.ensemble.variant(self.dataset)

    @classmethod
    def from_toml(cls, path: str | Path) -> ExperimentConfig:
        """Read an experiment file; its ``ensemble`` key names the dataset config (relative).

        Parameters
        ----------
        path : str or Path
            ``<model>-<task>[-<dataset>].toml`` file; the name defaults to its stem.

        Returns
        -------
        ExperimentConfig
            The validated experiment, with its dataset config loaded.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not valid TOML, names an unknown model, key or dataset variant, or
            fails validation (the file is named).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"experiment config {path} does not exist; the experiments in {path.parent} "
                f"are {_experiment_files(path.parent)}"
            )
        raw = _read_experiment(path)
        model = raw.get("model")
        if model not in MODELS:
            problem = "missing" if model is None else f"unknown model {model!r}"
            raise ValueError(f"{path}: model: {problem}; choose one of {', '.join(MODELS)}")
        ensemble = raw.get("ensemble", "dataset.toml")
        if isinstance(ensemble, str):
            if not (path.parent / ensemble).is_file():
                raise FileNotFoundError(
                    f"{path}: ensemble: the dataset config {path.parent / ensemble} does not "
                    f"exist (a path relative to {path.parent}; default dataset.toml)"
                )
            raw["ensemble"] = DatasetEnsemble.from_toml(path.parent / ensemble)
        raw.setdefault("name", path.stem)
        try:
            config = cls.model_validate(raw)
        except ValidationError as err:
            raise config_error(path, err) from err
        unknown = config.unknown_parameters()
        if unknown:
            raise ValueError(
                f"{path}: "
                + "; ".join(f"{key}: not a parameter of {config.model}" for key in unknown)
                + f". Its parameters are {config.model_parameters()}"
            )
        return config

    def model_parameters(self) -> list[str]:
        """Return the names of the model's hyperparameters (``params`` and ``search`` keys).

        Returns
        -------
        list of str
            Sorted parameter names of the estimator.
        """
        return sorted(MODELS[self.model].build(self.device, self.seed).get_params())

    def unknown_parameters(self) -> list[str]:
        """Return the ``params`` and ``search.distributions`` keys the model does not have.

        Checked for CPU models only: a CUDA model may be another library's estimator, which
        this machine may lack; :meth:`estimator` checks those when it builds them.

        Returns
        -------
        list of str
            ``params.<name>`` and ``search.distributions.<name>`` of each unknown parameter.
        """
        if self.device != "cpu":
            return []
        valid = set(self.model_parameters())
        return [f"params.{p}" for p in self.params if p not in valid] + [
            f"search.distributions.{p}" for p in self.search.distributions if p not in valid
        ]

    def with_budget(
        self, n_iter: int | None = None, importance_repeats: int | None = None
    ) -> ExperimentConfig:
        """Return the experiment with another search or importance budget (None: keep).

        Parameters
        ----------
        n_iter : int, optional
            Search candidates instead of ``search.n_iter``.
        importance_repeats : int, optional
            Shuffles per feature instead of ``importance_repeats``.

        Returns
        -------
        ExperimentConfig
            The changed copy.
        """
        search = self.search.model_copy(update={"n_iter": n_iter or self.search.n_iter})
        repeats = importance_repeats or self.importance_repeats
        return self.model_copy(update={"search": search, "importance_repeats": repeats})

    def estimator(self) -> Pipeline:
        """Build the untrained pipeline with the fixed parameters set.

        Returns
        -------
        sklearn.pipeline.Pipeline
            ``[as_array, scale?, model]``: a feature frame as one NumPy array first (xgboost
            converts a DataFrame column by column on every call: about 25 ms per predict of
            230 columns, three quarters of the permutation importance), then a StandardScaler
            for distance-based models.

        Raises
        ------
        ValueError
            If a fixed or searched parameter is not one of the model's.
        """
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        kind = MODELS[self.model]
        model = kind.build(self.device, self.seed)
        valid = model.get_params()
        unknown = sorted(p for p in {*self.params, *self.search.distributions} if p not in valid)
        if unknown:
            raise ValueError(
                f"{self.name}: {type(model).__name__} has no parameters {unknown}; it has "
                f"{sorted(model.get_params())}"
            )
        model.set_params(**self.params)
        steps = [("as_array", FunctionTransformer(frame_values))]
        steps += [("scale", StandardScaler())] if kind.scaled else []
        return Pipeline([*steps, ("model", model)])


def frame_values(X: Any) -> Any:
    """Return a DataFrame's values as one NumPy array; any other array as it is.

    The first step of every pipeline (``ExperimentConfig.estimator``): the models then see one
    array, and device arrays (cupy, torch) pass through untouched.

    Parameters
    ----------
    X : pandas.DataFrame or array
        Features.

    Returns
    -------
    array
        ``X.to_numpy()`` for a DataFrame, else ``X``.
    """
    import pandas as pd

    return X.to_numpy() if isinstance(X, pd.DataFrame) else X


def scorers(binary: bool) -> dict[str, Any]:
    """Build the metrics of every experiment (zero_division=0: a class never predicted scores 0).

    Parameters
    ----------
    binary : bool
        Whether the task has two classes (adds ``roc_auc``).

    Returns
    -------
    dict of str to Any
        Scorer per metric name: accuracy, then f1, jaccard, precision and recall, each macro
        and weighted.
    """
    from sklearn.metrics import (
        f1_score,
        get_scorer,
        jaccard_score,
        make_scorer,
        precision_score,
        recall_score,
    )

    result: dict[str, Any] = {"accuracy": get_scorer("accuracy")}
    for average in ("macro", "weighted"):
        for metric, function in (
            ("f1", f1_score),
            ("jaccard", jaccard_score),
            ("precision", precision_score),
            ("recall", recall_score),
        ):
            result[f"{metric}_{average}"] = make_scorer(function, average=average, zero_division=0)
    if binary:
        result["roc_auc"] = get_scorer("roc_auc")
    return result


#: Scores shown as numbers (Dagster metadata, the demo's summary).
HEADLINE_METRICS = ("accuracy", "f1_macro", "roc_auc")
HEADLINE_COLUMNS = {"cv": "model_cv_mean", "test": "model_test", "majority_cv": "baseline_cv_mean"}


@dataclass
class TrainedExperiment:
    """A fitted model with its scores, importances and provenance."""

    model: Pipeline
    config: ExperimentConfig
    classes: list[str]
    feature_names: list[str]
    cv_results: pd.DataFrame
    scores: pd.DataFrame
    importance: pd.DataFrame
    stamp: dict[str, Any] = field(default_factory=dict)

    @property
    def refit_metric(self) -> str:
        """Metric that picked the best candidate (``search.refit`` of the config)."""
        return self.config.search.refit

    def headline_scores(self) -> dict[str, float]:
        """Return the headline metrics flat, for logs and metadata.

        Returns
        -------
        dict of str to float
            ``cv_*``, ``test_*`` and ``majority_cv_*`` scores of each headline metric the
            scores hold.
        """
        return {
            f"{prefix}_{metric}": float(self.scores.loc[metric, column])
            for metric in HEADLINE_METRICS
            if metric in self.scores.index
            for prefix, column in HEADLINE_COLUMNS.items()
        }

    def beats_baseline(self) -> bool:
        """Tell whether the model beats the majority class on the refit metric.

        Returns
        -------
        bool
            True if it scores higher both in CV (mean) and on the test cells.
        """
        row = self.scores.loc[self.refit_metric]
        return bool(
            row["model_cv_mean"] > row["baseline_cv_mean"]
            and row["model_test"] > row["baseline_test"]
        )


@contextmanager
def joblib_on(client: Any | None) -> Iterator[None]:
    """Run the joblib loops inside the block on ``client``'s Dask cluster.

    scikit-learn parallelises the search's candidate fits, cross-validation and permutation
    importance through joblib; joblib's ``dask`` backend sends each of those tasks to the
    cluster (a LocalCluster, a scheduler given by address, a dask-jobqueue cluster alike),
    where ``n_jobs=-1`` means every worker thread. Without a client nothing changes: joblib's
    default (loky processes on this machine).

    Parameters
    ----------
    client : distributed.Client or None
        The cluster's client; None runs in this process as before.
    """
    if client is None:
        yield
        return
    import joblib

    with client.as_current(), joblib.parallel_config(backend="dask"):
        yield


def train_experiment(
    data: TrainingData,
    config: ExperimentConfig,
    progress: Callable[[str], None] | None = None,
    client: Any | None = None,
) -> TrainedExperiment:
    """Tune, refit and evaluate ``config``'s model on ``data`` (see the module docstring).

    Parameters
    ----------
    data : TrainingData
        The training dataset with its splits and spatial CV folds.
    config : ExperimentConfig
        Model, target, parameters and search.
    progress : callable, optional
        Receives one line per stage.
    client : distributed.Client, optional
        Run the search, cross-validation and permutation importance on this Dask cluster
        (:func:`joblib_on`); the results are the same as without (fixed seeds).

    Returns
    -------
    TrainedExperiment
        The refitted model with CV results, scores against the baseline, feature importance
        and its stamp.

    Raises
    ------
    ValueError
        If the training or test cells are empty, the training cells hold one class only, the
        model cannot take the missing values the dataset keeps, or ``search.refit`` is not a
        metric.
    """
    import pandas as pd
    from sklearn.dummy import DummyClassifier
    from sklearn.model_selection import RandomizedSearchCV, cross_validate
    from sklearn.utils.class_weight import compute_sample_weight

    report = progress or (lambda message: None)
    kind = MODELS[config.model]
    data = data.with_variant(config.variant)
    X, y, classes = data.xy(config.target, "train")
    X_test, y_test, _ = data.xy(config.target, "test")
    if len(X) == 0 or len(X_test) == 0:
        raise ValueError(
            f"the dataset has {len(X)} training and {len(X_test)} test cells: nothing to train "
            "or test on; use a larger area or a finer grid level"
        )
    if np.unique(y).size < 2:
        raise ValueError(
            f"the training cells hold one class only ({classes[y[0]]}): nothing to learn"
        )
    if not kind.takes_missing and (X.isna().any().any() or X_test.isna().any().any()):
        raise ValueError(
            f"model {config.model} cannot take missing values, and a source keeps them "
            "(missing = 'keep'): set missing = 'drop' or 'fill' in the dataset config"
        )
    binary = len(classes) == 2
    metrics = scorers(binary)
    if config.search.refit not in metrics:
        raise ValueError(f"search.refit {config.search.refit!r} is not one of {list(metrics)}")
    splits = data.cv_splits()
    fit_params: dict[str, Any] = {}
    if config.class_weight == "balanced" and kind.takes_sample_weight:
        fit_params["model__sample_weight"] = compute_sample_weight("balanced", y)

    report(f"{config.name}: {config.search.n_iter} candidates x {len(splits)} spatial folds")
    with warnings.catch_warnings():
        # all-list search spaces smaller than n_iter are searched whole
        warnings.filterwarnings("ignore", message="The total space of parameters")
        search = RandomizedSearchCV(
            config.estimator(),
            {f"model__{k}": v for k, v in config.search.sampled().items()},
            n_iter=config.search.n_iter,
            scoring=metrics,
            refit=config.search.refit,
            cv=splits,
            random_state=config.seed,
            n_jobs=config.n_jobs,
            error_score="raise",
        )
        started = time.perf_counter()
        with joblib_on(client):
            search.fit(X, y, **fit_params)
        search_seconds = time.perf_counter() - started
    model = search.best_estimator_

    report(f"{config.name}: scoring the test blocks and the majority baseline")
    baseline = DummyClassifier(strategy="most_frequent")
    baseline_cv = cross_validate(baseline, X, y, cv=splits, scoring=metrics)
    baseline.fit(X, y)
    best = search.best_index_
    rows = {}
    for metric, scorer in metrics.items():
        rows[metric] = {
            "model_cv_mean": search.cv_results_[f"mean_test_{metric}"][best],
            "model_cv_std": search.cv_results_[f"std_test_{metric}"][best],
            "model_test": scorer(model, X_test, y_test),
            "baseline_cv_mean": float(np.mean(baseline_cv[f"test_{metric}"])),
            "baseline_test": scorer(baseline, X_test, y_test),
        }
    scores = pd.DataFrame.from_dict(rows, orient="index").astype(float)
    scores.index.name = "metric"

    report(f"{config.name}: feature importance")
    with joblib_on(client):
        importance = _importance(model, X_test, y_test, metrics[config.search.refit], config)
    stamp = {
        "experiment": config.name,
        "grid_level": data.spec.key,
        "model": config.model,
        "predict_device": config.device if kind.takes_device_arrays else "cpu",
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "task": config.target.task,
        "dataset": config.dataset,
        "time": config.variant.time,
        "sources": data.sources,
        "classes": classes,
        "bin_edges": config.target.bin_edges(data),
        "feature_names": list(X.columns),
        "best_params": {
            k.removeprefix("model__"): _plain(v) for k, v in search.best_params_.items()
        },
        "search_candidates": config.search.n_iter,
        "search_seconds": round(search_seconds, 3),
        "refit_seconds": round(float(search.refit_time_), 3),
        "train_rows": len(X),
        "test_rows": len(X_test),
        "data_versions": data.data_versions,
        "training_dataset_sha256": fingerprint(data.dataset),
    }
    return TrainedExperiment(
        model=model,
        config=config,
        classes=classes,
        feature_names=list(X.columns),
        cv_results=_cv_table(search.cv_results_),
        scores=scores,
        importance=importance,
        stamp=stamp,
    )


def _importance(
    model: Pipeline, X: pd.DataFrame, y: np.ndarray, scorer: Any, config: ExperimentConfig
) -> pd.DataFrame:
    """Native importance (if the model has one) and permutation importance on ``X``."""
    import pandas as pd
    from sklearn.inspection import permutation_importance

    estimator = model[-1]
    native = getattr(estimator, "feature_importances_", None)
    permuted = permutation_importance(
        model,
        X,
        y,
        scoring=scorer,
        n_repeats=config.importance_repeats,
        random_state=config.seed,
        n_jobs=config.n_jobs,
    )
    table = pd.DataFrame(
        {
            "feature": list(X.columns),
            "native": np.asarray(native, dtype=float) if native is not None else np.nan,
            "permutation_mean": permuted.importances_mean,
            "permutation_std": permuted.importances_std,
        }
    )
    key = "native" if native is not None else "permutation_mean"
    return table.sort_values(key, ascending=False, ignore_index=True)


def _cv_table(results: dict[str, Any]) -> pd.DataFrame:
    """``cv_results_`` as a Parquet-friendly table: parameters as JSON text."""
    import pandas as pd

    table = pd.DataFrame(
        {k: v for k, v in results.items() if not k.startswith("param") and "split" not in k}
    )
    table.insert(
        0,
        "params",
        [
            json.dumps({k.removeprefix("model__"): _plain(v) for k, v in p.items()})
            for p in results["params"]
        ],
    )
    return table


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _versions() -> dict[str, str]:
    names = ("scikit-learn", "xgboost", "xgboost-cpu", "skops", "numpy", "scipy")
    found = {"entropice": __version__}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def save_experiment(result: TrainedExperiment, directory: str | Path) -> dict[str, Path]:
    """Write a trained experiment into ``directory``, all files published together.

    The model goes to skops, or joblib where skops cannot hold it, beside its stamp, CV
    results, scores, feature importance and the resolved config. They are written to a
    temporary folder published as one version (:func:`entropice_core.io.atomic.atomic_dirs`):
    a reader sees the previous experiment or the new one, never a new model with old scores.
    Files of the previous version this does not write (predictions) are carried over.

    Parameters
    ----------
    result : TrainedExperiment
        The trained experiment.
    directory : str or Path
        Folder to write into; created if missing.

    Returns
    -------
    dict of str to Path
        Path of each file: model, cv_results, scores, feature_importance, config and stamp.
    """
    import joblib
    import skops.io as sio
    import tomlkit

    directory = Path(directory)
    try:
        payload, fmt = sio.dumps(result.model), "skops"
    except Exception:  # cuML and other estimators skops does not know
        payload, fmt = None, "joblib"
    names = {
        "model": f"model.{fmt}",
        "cv_results": CV_RESULTS,
        "scores": SCORES,
        "feature_importance": FEATURE_IMPORTANCE,
        "config": RESOLVED_CONFIG,
        "stamp": MODEL_STAMP,
    }
    with atomic_dirs(directory, keep_others=True) as (tmp,):
        tmp.mkdir()
        if payload is not None:
            (tmp / names["model"]).write_bytes(payload)
        else:
            joblib.dump(result.model, tmp / names["model"])
        for key, frame in (
            ("cv_results", result.cv_results),
            ("scores", result.scores.reset_index()),
            ("feature_importance", result.importance),
        ):
            frame.to_parquet(tmp / names[key], index=False)
        config = _toml_ready(result.config.model_dump(mode="json"))
        (tmp / names["config"]).write_text(tomlkit.dumps(config))
        stamp = {**result.stamp, "format": fmt, "model_file": names["model"]}
        (tmp / names["stamp"]).write_text(json.dumps(stamp, indent=2))
    return {key: directory / name for key, name in names.items()}


def _toml_ready(value: Any) -> Any:
    """TOML has no null: drop None values (they are the defaults)."""
    if isinstance(value, dict):
        return {k: _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_toml_ready(v) for v in value]
    return value


def load_model(directory: str | Path) -> tuple[Pipeline, dict[str, Any]]:
    """Load the fitted pipeline and its stamp from ``save_experiment``'s folder.

    skops files are loaded trusting only scikit-learn, xgboost, numpy, scipy and Entropice
    types; anything else in the file is refused. A scikit-learn version other than the one
    that trained the model is warned about.

    Parameters
    ----------
    directory : str or Path
        Folder written by :func:`save_experiment`.

    Returns
    -------
    tuple of (sklearn.pipeline.Pipeline, dict of str to Any)
        The fitted model and its stamp (``model.json``).

    Raises
    ------
    FileNotFoundError
        If the folder holds no stamp.
    ValueError
        If the skops file holds types outside :data:`TRUSTED_MODULES`.
    """
    import joblib
    import skops.io as sio

    directory = resolve_published(directory)  # once: model and stamp of one version
    stamp_path = directory / MODEL_STAMP
    if not stamp_path.exists():
        raise FileNotFoundError(
            f"{stamp_path} does not exist: train the experiment first (`entropice train` or "
            "the trained_model asset)"
        )
    stamp = json.loads(stamp_path.read_text())
    path = directory / stamp["model_file"]
    if stamp["format"] == "skops":
        untrusted = sio.get_untrusted_types(file=path)
        refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULES)]
        if refused:
            raise ValueError(
                f"{path} holds types outside {TRUSTED_MODULES}: {refused}; refusing to load it"
            )
        model = sio.load(path, trusted=untrusted)
    else:
        model = joblib.load(path)
    trained = stamp["versions"].get("scikit-learn")
    if trained != _versions().get("scikit-learn"):
        warnings.warn(
            f"{path} was trained with scikit-learn {trained}, this is "
            f"{_versions().get('scikit-learn')}: retrain if predictions look off",
            stacklevel=2,
        )
    return model, stamp


def experiment_name(model: str, task: str, dataset: str = "all") -> str:
    """Return the key of an experiment: ``<model>-<task>``, plus ``-<dataset>`` unless ``all``.

    Parameters
    ----------
    model : str
        Model name (``espa``, ``xgboost``, ``rf``, ``knn``).
    task : str
        Task (``binary``, ``count``, ``density``).
    dataset : str, optional
        Dataset variant.

    Returns
    -------
    str
        The experiment key, also the config file's stem.
    """
    return f"{model}-{task}" + ("" if dataset == "all" else f"-{dataset}")


def experiment_keys(config_dir: str | Path) -> list[str]:
    """List the experiments of a config folder: every ``<model>-<task>[-<dataset>].toml``.

    Parameters
    ----------
    config_dir : str or Path
        Folder of experiment configs.

    Returns
    -------
    list of str
        Experiment keys with a known model and task, sorted.
    """
    tasks = get_args(Target.model_fields["task"].annotation)
    keys = []
    for path in sorted(Path(config_dir).glob("*.toml")):
        model, _, rest = path.stem.partition("-")
        if model in MODELS and rest.partition("-")[0] in tasks:
            keys.append(path.stem)
    return sorted(keys)


def _experiment_files(folder: Path) -> list[str]:
    """Return the experiment configs in ``folder`` (every ``*.toml`` but dataset.toml)."""
    return sorted(p.name for p in folder.glob("*.toml") if p.name != "dataset.toml")
