"""Training data, inference and model speed: Entropice vs what a user would write, and fit /
predict time of every model and task.

1. Join and inference, on synthetic L2 datasets on the real h3_7 cells of a 1,000 x 900 km box
   of the western Canadian Arctic (about 180,000 cells): a terrain-like source (8 statistics
   plus 2 quartiles) and a climate-like one (6 variables x 6 years, summarised to their mean
   over the years as static mode does), 16 feature columns in all.

   - Join: ``DatasetEnsemble`` flattening and joining the sources vs ``to_dataframe`` + mean
     over the years + unstack + ``join`` in pandas (same columns, checked equal); the blocked
     split with its buffer is timed on its own (pandas has no counterpart).
   - Inference with a 100-tree XGBoost model: ``predict_cells`` reading the features from Zarr
     in batches vs loading the whole feature matrix and calling ``predict_proba`` once (same
     probabilities, checked); peak traced memory of each.

2. Models on the sample region: the ``all`` dataset of ``h3_6`` (every source, static mode)
   of a data directory ``make demo`` materialised, opened with ``DatasetEnsemble.open``. For
   each model (espa, xgboost, rf, knn) and task (binary, count, density), from
   ``configs/<model>-<task>.toml``:

   - fit: one fit of the experiment's pipeline (``ExperimentConfig.estimator()``: scaler where
     the model has one, the model single-threaded as experiments build it) on the training
     rows, with the class encoding of the task and the balanced sample weights; parameters
     are the best ones of the data directory's trained model (its ``model.json``), else those
     of the model's binary experiment (the demo trains only some tasks), else the config's
     fixed parameters and the model's defaults (the table's ``params`` column says which);
   - predict: ``predict_proba`` on every row with features (train, test, buffer, unlabelled),
     and ``predict_cells`` on the stored ``training_dataset`` with the grid cells;
   - train_experiment: the whole experiment (search over the spatial folds on both cores,
     refit, test and baseline scores, permutation importance) with a small budget
     (``with_budget(n_iter=4, importance_repeats=2)``), wall time;
   - test F1: macro F1 on the test rows, a check that the fit learnt something.

3. Models at Arctic scale: 100,000 synthetic cells (``--cells``; the real h3_7 cells of the
   box above, sampled) with as many feature columns as the sample's ``all`` dataset (230 when
   it is absent) and a learnable signal (RTS counts Poisson in a function of 12 of the
   columns), split into blocks like the real data. Fit and predict as in 2, without
   ``train_experiment``. Where a step would take minutes (eSPA's fit, KNN's brute-force
   predict), it runs on a random subsample of the rows (``--espa-fit-rows``,
   ``--knn-predict-rows``) and the table says so; the seconds for all rows are extrapolated
   linearly (an estimate: eSPA's iterations to converge vary with the rows).

The machine's other load shows in the timings; run on an idle machine for numbers to quote.

Run: ``.venv/bin/python benchmarks/training.py [--data-dir DIR] [--skip-join] [--skip-sample]
[--skip-synthetic] [--cells 100000]``. The sample region's datasets come from ``make demo``
(``--data-dir`` defaults to ``$ENTROPICE_DATA_DIR`` or ``./data``); without them part 2 is
skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from rich.console import Console
from rich.table import Table
from sklearn.metrics import f1_score
from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.io.zarr import read_dataset, write_dataset
from entropice_core.layout import Layout
from entropice_core.ml.dataset import DatasetEnsemble, SourceSpec, TrainingData, _source_columns
from entropice_core.ml.inference import predict_cells
from entropice_core.ml.training import MODELS, ExperimentConfig, train_experiment
from entropice_core.spatial.grids import cell_ids, mean_cell_area_km2

BBOX = (-140.0, 64.0, -115.0, 72.0)
YEARS = list(range(2018, 2024))
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TASKS = ("binary", "count", "density")
#: Rows that get a prediction: every cell with features.
PREDICTED = ("train", "test", "buffer", "unlabelled")
console = Console(width=200)


# --- 1. join and inference -------------------------------------------------------------------


def sources(spec: GridSpec, seed: int = 0) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    ids = np.sort(cell_ids(spec, AreaOfInterest.from_bbox(BBOX)))
    rng = np.random.default_rng(seed)
    coords = {"cell_ids": ("cell_ids", ids, spec.xdggs_attrs)}
    terrain = xr.Dataset(
        {f"elevation_{s}": ("cell_ids", rng.normal(size=ids.size)) for s in "abcdefgh"}
        | {"elevation_quantile": (("cell_ids", "quantile"), rng.normal(size=(ids.size, 2)))},
        coords=coords | {"quantile": [0.25, 0.75]},
    )
    climate = xr.Dataset(
        {f"climate_{v}": (("cell_ids", "year"), rng.normal(size=(ids.size, 6))) for v in "uvwxyz"},
        coords=coords | {"year": YEARS},
    )
    count = rng.poisson(np.exp(terrain["elevation_a"].to_numpy() - 1))
    labels = xr.Dataset(
        {"rts_count_all_years": ("cell_ids", count), "rts_density_all_years": ("cell_ids", count)},
        coords=coords,
    )
    return labels, {"terrain_features": terrain, "climate_features": climate}


def pandas_join(l2: dict[str, xr.Dataset]) -> pd.DataFrame:
    """What a user would write: each variable as a table, yearly ones averaged over the years,
    other dims unstacked to columns, sources joined on the cells."""
    frames = []
    for dataset in l2.values():
        columns = []
        for name in sorted(dataset.data_vars):
            series = dataset[name].to_series()
            if "year" in dataset[name].dims:
                keep = [d for d in dataset[name].dims if d != "year"]
                series = series.groupby(level=keep).mean()
            if series.index.nlevels == 1:
                columns.append(series.rename(name))
                continue
            wide = series.unstack([d for d in series.index.names if d != "cell_ids"])
            wide.columns = [f"{name}_{c:g}" for c in wide.columns]
            columns.append(wide)
        frames.append(pd.concat(columns, axis=1))
    return frames[0].join(frames[1:], how="inner")


def timed(function, *args, **kwargs):
    """Value, seconds and peak traced MiB: timed untraced (tracemalloc slows Python code),
    then run again under tracemalloc for the peak."""
    start = time.perf_counter()
    value = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    function(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return value, seconds, peak


def join_and_inference(level: int) -> None:
    spec = GridSpec(grid="h3", level=level)
    labels, l2 = sources(spec)
    ids = labels["cell_ids"].to_numpy()
    ensemble = DatasetEnsemble(
        sources=[SourceSpec(asset=name, path="-") for name in l2],
    )
    table = Table(
        title=f"1. Training data and inference, {ids.size:,} {spec.key} cells (2 cores, shared)"
    )
    for column in (
        "step",
        "what a user writes",
        "s",
        "entropice",
        "s",
        "speed-up",
        "peak MiB (user / ours)",
    ):
        table.add_column(column, justify="right")

    reference, pandas_s, pandas_mib = timed(pandas_join, l2)

    def ours_join():
        return pd.concat(
            [_source_columns(s, l2[s.asset], ids, None).static for s in ensemble.sources],
            axis=1,
        )

    joined, ours_s, ours_mib = timed(ours_join)
    pd.testing.assert_frame_equal(
        joined[reference.columns].reset_index(drop=True),
        reference.reset_index(drop=True),
        check_dtype=False,
    )
    table.add_row(
        "join 2 sources",
        "to_dataframe+mean+unstack+join",
        f"{pandas_s:.2f}",
        "DatasetEnsemble",
        f"{ours_s:.2f}",
        f"{pandas_s / ours_s:.1f}x",
        f"{pandas_mib:.0f} / {ours_mib:.0f}",
    )
    data, build_s, build_mib = timed(ensemble.build, labels, l2)
    table.add_row(
        "join + blocked split + buffer",
        "-",
        "-",
        "DatasetEnsemble.build",
        f"{build_s:.2f}",
        "-",
        f"- / {build_mib:.0f}",
    )

    X, y = data.X("train"), data.dataset["rts_count"].to_numpy()[data.mask("train")] > 0
    model = XGBClassifier(n_estimators=100, max_depth=4, n_jobs=2).fit(X, y)
    cells = gpd.GeoDataFrame({"cell_id": ids}, geometry=[shapely.Point(0, 0)] * ids.size, crs=4326)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dataset.zarr"
        write_dataset(data.dataset.chunk({"cell_ids": 65_536}), path)

        def in_memory():
            stored = read_dataset(path)
            features = pd.DataFrame(stored["features"].to_numpy(), columns=data.feature_names)
            proba = model.predict_proba(features)
            return cells.assign(proba_rts=proba[:, 1])

        def batched():
            return predict_cells(
                model,
                read_dataset(path),
                cells,
                ["no_rts", "rts"],
                data.feature_names,
                batch_size=65_536,
            )

        whole, whole_s, whole_mib = timed(in_memory)
        ours, batch_s, batch_mib = timed(batched)
    usable = ~data.mask("excluded")
    np.testing.assert_allclose(
        ours["proba_rts"].to_numpy()[usable], whole["proba_rts"].to_numpy()[usable], rtol=1e-6
    )
    table.add_row(
        "predict every cell",
        "load all + predict_proba",
        f"{whole_s:.2f}",
        "predict_cells (65,536/batch)",
        f"{batch_s:.2f}",
        f"{whole_s / batch_s:.1f}x",
        f"{whole_mib:.0f} / {batch_mib:.0f}",
    )
    console.print(table)
    console.print(
        f"{ids.size / batch_s:,.0f} cells/s predicted in batches; the batched peak stays at one "
        "batch of features as the cell count grows, the in-memory one grows with it."
    )


# --- 2. and 3. fit and predict per model and task --------------------------------------------


@dataclass
class Timing:
    """Fit and predict of one experiment's pipeline."""

    model: str
    task: str
    classes: int
    params: str
    fit_rows: int
    fit_rows_all: int
    fit_s: float
    predict_rows: int
    predict_rows_all: int
    predict_s: float
    test_f1: float
    note: str = ""
    cells_s: float | None = None
    experiment_s: float | None = None


def best_params(
    data_dir: Path | None, grid_level: str, config: ExperimentConfig
) -> tuple[dict[str, Any], str]:
    """The best parameters of ``config``'s trained model in ``data_dir``, else those of the
    model's binary experiment (the demo trains only some tasks; the search space is the same),
    else none (the config's fixed parameters and the model's defaults); and which it was."""
    if data_dir is not None:
        for experiment, label in ((config.name, "best"), (f"{config.model}-binary", "binary's")):
            stamp = (
                Layout(data_dir).asset_path(
                    "trained_model", grid_level=grid_level, experiment=experiment
                )
                / "model.json"
            )
            if stamp.exists():
                return json.loads(stamp.read_text())["best_params"], label
    return {}, "default"


def fit_and_predict(
    config: ExperimentConfig,
    data: TrainingData,
    params: tuple[dict[str, Any], str],
    fit_cap: int | None = None,
    predict_cap: int | None = None,
    seed: int = 0,
) -> tuple[Timing, Any]:
    """Time one fit on the training rows and ``predict_proba`` on every row with features.

    ``fit_cap`` / ``predict_cap`` subsample the rows (at random) where the full step would be
    too slow; the timing records both counts.
    """
    rng = np.random.default_rng(seed)
    kind = MODELS[config.model]
    view = data.with_variant(config.variant)
    X, y, classes = view.xy(config.target, "train")
    n_fit = len(X)
    if fit_cap is not None and n_fit > fit_cap:
        rows = np.sort(rng.choice(n_fit, fit_cap, replace=False))
        X, y = X.iloc[rows], y[rows]
    pipeline = config.estimator()
    pipeline.set_params(**{f"model__{k}": v for k, v in params[0].items()})
    fit_params = {}
    if config.class_weight == "balanced" and kind.takes_sample_weight:
        fit_params["model__sample_weight"] = compute_sample_weight("balanced", y)
    notes = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        pipeline.fit(X, y, **fit_params)
        fit_s = time.perf_counter() - start
    if any("converge" in str(w.message) for w in caught):
        notes.append(f"did not converge in max_iter={pipeline[-1].get_params()['max_iter']}")

    keep = view.mask(*PREDICTED)
    codes = config.target.encode(view)[0][keep]
    is_test = view.mask("test")[keep]
    X_all = view.X(*PREDICTED)
    n_predict = len(X_all)
    if predict_cap is not None and n_predict > predict_cap:
        rows = np.sort(rng.choice(n_predict, predict_cap, replace=False))
        X_all, codes, is_test = X_all.iloc[rows], codes[rows], is_test[rows]
    start = time.perf_counter()
    proba = pipeline.predict_proba(X_all)
    predict_s = time.perf_counter() - start
    test_f1 = f1_score(codes[is_test], proba[is_test].argmax(axis=1), average="macro")
    timing = Timing(
        model=config.model,
        task=config.target.task,
        classes=len(classes),
        params=params[1],
        fit_rows=len(X),
        fit_rows_all=n_fit,
        fit_s=fit_s,
        predict_rows=len(X_all),
        predict_rows_all=n_predict,
        predict_s=predict_s,
        test_f1=float(test_f1),
        note="; ".join(notes),
    )
    return timing, pipeline


def timing_table(title: str, timings: list[Timing], sample: bool) -> Table:
    table = Table(title=title)
    columns = ["model", "task", "classes", "params", "fit rows", "fit s", "fit rows/s"]
    columns += ["predict rows", "predict s", "predict rows/s"]
    columns += ["predict_cells s", "train_experiment s"] if sample else ["all rows est. s"]
    columns += ["test F1", "note"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "task", "note") else "right")
    for t in timings:
        row = [t.model, t.task, str(t.classes), t.params]
        fit_rows = f"{t.fit_rows:,}" + (
            f" of {t.fit_rows_all:,}" if t.fit_rows < t.fit_rows_all else ""
        )
        predict_rows = f"{t.predict_rows:,}" + (
            f" of {t.predict_rows_all:,}" if t.predict_rows < t.predict_rows_all else ""
        )
        row += [fit_rows, f"{t.fit_s:.2f}", f"{t.fit_rows / t.fit_s:,.0f}"]
        row += [predict_rows, f"{t.predict_s:.2f}", f"{t.predict_rows / t.predict_s:,.0f}"]
        if sample:
            row += [
                "-" if t.cells_s is None else f"{t.cells_s:.2f}",
                "-" if t.experiment_s is None else f"{t.experiment_s:.1f}",
            ]
        else:
            estimates = []
            if t.fit_rows < t.fit_rows_all:
                estimates.append(f"fit ~{t.fit_s * t.fit_rows_all / t.fit_rows:.0f}")
            if t.predict_rows < t.predict_rows_all:
                estimates.append(
                    f"predict ~{t.predict_s * t.predict_rows_all / t.predict_rows:.0f}"
                )
            row.append(", ".join(estimates) or "-")
        row += [f"{t.test_f1:.3f}", t.note]
        table.add_row(*row)
    return table


def configs(models: list[str], tasks: list[str]) -> list[ExperimentConfig]:
    return [
        ExperimentConfig.from_toml(CONFIGS / f"{model}-{task}.toml")
        for model in models
        for task in tasks
    ]


def sample_region(
    data_dir: Path,
    grid_level: str,
    models: list[str],
    tasks: list[str],
    n_iter: int,
    repeats: int,
) -> int | None:
    """Part 2; returns the number of feature columns of the ``all`` dataset (None: skipped)."""
    ensemble = DatasetEnsemble.from_toml(CONFIGS / "dataset.toml")
    layout = Layout(data_dir)
    needed = [layout.dataset_path(a, grid_level) for a in ensemble.assets()]
    absent = [str(p) for p in needed if not p.exists()]
    if absent:
        console.print(
            f"[yellow]2. Sample region skipped: {data_dir} lacks {', '.join(absent)}. "
            "Materialise it with `make demo` (or `entropice demo --data-dir DIR`) and pass "
            "--data-dir DIR.[/yellow]"
        )
        return None
    data = ensemble.open(data_dir, grid_level)
    summary = data.summary()
    stored_path = layout.asset_path("training_dataset", grid_level)
    stored = read_dataset(stored_path) if stored_path.exists() else None
    grid = layout.grid_cells(grid_level)
    cells = gpd.read_parquet(grid) if grid.exists() else None
    timings = []
    for config in configs(models, tasks):
        params = best_params(data_dir, grid_level, config)
        timing, pipeline = fit_and_predict(config, data, params)
        view = data.with_variant(config.variant)
        if stored is not None and cells is not None:
            try:
                start = time.perf_counter()
                predict_cells(
                    pipeline,
                    stored,
                    cells,
                    config.target.encode(view)[1],
                    view.feature_names,
                )
                timing.cells_s = time.perf_counter() - start
            except (KeyError, ValueError):  # stored by another config or version
                timing.note = "stored training_dataset differs: no predict_cells"
        start = time.perf_counter()
        train_experiment(data, config.with_budget(n_iter=n_iter, importance_repeats=repeats))
        timing.experiment_s = time.perf_counter() - start
        timings.append(timing)
        console.print(
            f"  {config.name}: fit {timing.fit_s:.2f} s, train_experiment "
            f"{timing.experiment_s:.1f} s",
            style="dim",
        )
    console.print(
        timing_table(
            f"2. Sample region, {grid_level} `all` dataset: {summary['train_rows']:,} training "
            f"rows, {summary['features']} features ({data_dir}; 2 cores, shared)",
            timings,
            sample=True,
        )
    )
    console.print(
        "fit: one fit of the pipeline on the training rows, single-threaded as experiments "
        "build the models; predict: predict_proba on every row with features; predict_cells: "
        f"on the stored training_dataset with the grid cells; train_experiment: n_iter={n_iter} "
        f"candidates x {summary['folds']} spatial folds on both cores, refit, test and baseline "
        f"scores, permutation importance ({repeats} repeats)."
    )
    return summary["features"]


def synthetic_data(n_cells: int, n_features: int, seed: int = 0) -> TrainingData:
    """``n_cells`` real h3_7 cells of the box (sampled) with ``n_features`` columns and a
    learnable RTS count, built and split like the real data."""
    spec = GridSpec(grid="h3", level=7)
    rng = np.random.default_rng(seed)
    ids = np.sort(cell_ids(spec, AreaOfInterest.from_bbox(BBOX)))
    if ids.size > n_cells:
        ids = np.sort(rng.choice(ids, n_cells, replace=False))
    coords = {"cell_ids": ("cell_ids", ids, spec.xdggs_attrs)}
    X = rng.normal(size=(ids.size, n_features)).astype(np.float32)
    informative = min(12, n_features)
    weights = rng.normal(scale=0.6, size=informative)
    signal = X[:, :informative] @ weights
    if informative >= 2:
        signal += 0.5 * X[:, 0] * X[:, 1]  # an interaction, as terrain x climate
    count = rng.poisson(np.exp(signal - 3.0)).astype(np.float64)
    area = mean_cell_area_km2(spec) * rng.uniform(0.5, 1.0, ids.size)  # land share of a cell
    features = xr.Dataset(
        {f"feature_{i:03d}": ("cell_ids", X[:, i]) for i in range(n_features)}, coords=coords
    )
    labels = xr.Dataset(
        {
            "rts_count_all_years": ("cell_ids", count),
            "rts_density_all_years": ("cell_ids", count / area * 1000.0),
        },
        coords=coords,
    )
    ensemble = DatasetEnsemble(sources=[SourceSpec(asset="synthetic_features", path="-")])
    return ensemble.build(labels, {"synthetic_features": features})


def synthetic(
    n_cells: int,
    n_features: int,
    models: list[str],
    tasks: list[str],
    data_dir: Path | None,
    grid_level: str,
    espa_fit_rows: int,
    knn_predict_rows: int,
) -> None:
    start = time.perf_counter()
    data = synthetic_data(n_cells, n_features)
    build_s = time.perf_counter() - start
    summary = data.summary()
    rts = float((data.dataset["rts_count"].to_numpy() > 0).mean())
    console.print(
        f"  {summary['cells']:,} synthetic cells built and split in {build_s:.1f} s; "
        f"{rts:.1%} with RTS",
        style="dim",
    )
    timings = []
    for config in configs(models, tasks):
        # eSPA and KNN: ExperimentConfig still names them "espa-..." / "knn-..."
        caps = {
            "espa": {"fit_cap": espa_fit_rows},
            "knn": {"predict_cap": knn_predict_rows},
        }.get(config.model, {})
        params = best_params(data_dir, grid_level, config)
        timing, _ = fit_and_predict(config, data, params, **caps)
        timings.append(timing)
        console.print(
            f"  {config.name}: fit {timing.fit_s:.2f} s, predict {timing.predict_s:.2f} s",
            style="dim",
        )
    console.print(
        timing_table(
            f"3. Synthetic, {summary['cells']:,} h3_7 cells: {summary['train_rows']:,} "
            f"training rows, {summary['features']} features (2 cores, shared)",
            timings,
            sample=False,
        )
    )
    console.print(
        "params: as in part 2 (the sample region's best ones where its trained models are "
        "found, else the defaults). Subsampled rows are drawn at random; 'all rows est.' "
        "scales the measured seconds linearly to every row (KNN predict is linear in the rows "
        "it predicts; eSPA's fit is linear per iteration, but the number of iterations varies)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", type=int, default=7, help="H3 resolution of part 1's cells")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("ENTROPICE_DATA_DIR", "data")),
        help="data directory of `make demo` (default: $ENTROPICE_DATA_DIR or ./data)",
    )
    parser.add_argument("--grid-level", default="h3_6", help="grid level of part 2")
    parser.add_argument("--cells", type=int, default=100_000, help="cells of part 3")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--n-iter", type=int, default=4, help="train_experiment's candidates")
    parser.add_argument("--repeats", type=int, default=2, help="permutation importance repeats")
    parser.add_argument("--espa-fit-rows", type=int, default=20_000, help="part 3 eSPA fit rows")
    parser.add_argument(
        "--knn-predict-rows", type=int, default=20_000, help="part 3 KNN predicted rows"
    )
    parser.add_argument("--skip-join", action="store_true", help="skip part 1")
    parser.add_argument("--skip-sample", action="store_true", help="skip part 2")
    parser.add_argument("--skip-synthetic", action="store_true", help="skip part 3")
    args = parser.parse_args()
    if not args.skip_join:
        join_and_inference(args.level)
    n_features = None
    if not args.skip_sample:
        n_features = sample_region(
            args.data_dir, args.grid_level, args.models, args.tasks, args.n_iter, args.repeats
        )
    if not args.skip_synthetic:
        synthetic(
            args.cells,
            n_features or 230,
            args.models,
            args.tasks,
            args.data_dir,
            args.grid_level,
            args.espa_fit_rows,
            args.knn_predict_rows,
        )


if __name__ == "__main__":
    main()
