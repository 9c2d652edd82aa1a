"""Training Analysis: CV results per experiment, scores vs hyperparameters, comparisons."""

import json

import numpy as np
import pandas as pd
import streamlit as st

from entropice_dashboard.data import (
    CV_RESULTS,
    DataProblem,
    experiment_table,
    experiments,
    layout,
    leaderboard,
    make_command,
)
from entropice_dashboard.plots import scatter_errors, score_bars
from entropice_dashboard.ui import choose, guard, need, show_plot, show_problem, show_table

lay = layout()
st.title("Training Analysis")
found = [e for e in experiments(lay) if (e.folder / CV_RESULTS).exists()]
need(
    [e.grid_level for e in found],
    "trained experiment (training-results/)",
    make_command("trained_model"),
)
grid_level = choose("Grid level", sorted({e.grid_level for e in found}), "grid_level")

st.subheader("Experiments side by side")
st.markdown(
    "Which model, task and dataset variant scores best on the same spatial folds? "
    "Bars: CV mean ± std; red: the test blocks; x: the majority class."
)
try:
    summary = leaderboard(lay)
    rows = summary[summary["grid_level"] == grid_level]
    show_plot(score_bars(rows, "f1_macro", "F1 macro (0-1)"), "comparison")
    variants = rows.pivot_table(index=["model", "task"], columns="dataset", values="cv_f1_macro")
    st.markdown("Dataset variants (CV F1 macro): what each source adds, model by model.")
    show_table(variants.reset_index(), f"variants-{grid_level}")
except DataProblem as problem:
    show_problem(problem)

st.subheader("Search results of one experiment")
names = [e.experiment for e in found if e.grid_level == grid_level]
experiment = choose("Experiment", names, "experiment")
with guard():
    cv = experiment_table(lay, grid_level, experiment, CV_RESULTS)
metrics = [c.removeprefix("mean_test_") for c in cv.columns if c.startswith("mean_test_")]
metric = st.selectbox(
    "Metric", metrics, index=metrics.index("f1_macro") if "f1_macro" in metrics else 0
)
params = pd.json_normalize([json.loads(p) for p in cv["params"]])
mean = cv[f"mean_test_{metric}"].to_numpy(float)
std = cv[f"std_test_{metric}"].to_numpy(float)
st.markdown(
    f"**{len(cv)} candidates.** Each point is one candidate's mean {metric} over the "
    "CV folds; its bar is the fold-to-fold standard deviation (how much the score "
    "depends on which blocks are held out)."
)
numeric = [p for p in params.columns if pd.api.types.is_numeric_dtype(params[p])]
cols = st.columns(2)
for i, name in enumerate(numeric):
    x = params[name].to_numpy(float)
    log_x = bool(np.all(x > 0) and x.max() / max(x.min(), 1e-300) > 100)
    with cols[i % 2]:
        show_plot(scatter_errors(x, mean, std, name, f"CV {metric} (0-1)", log_x), f"param-{name}")
for name in (p for p in params.columns if p not in numeric):
    st.write(f"{name}: " + ", ".join(sorted({str(v) for v in params[name]})))
spread = params.assign(mean=mean, std=std, rank=cv[f"rank_test_{metric}"].to_numpy())
show_table(spread.sort_values("rank"), f"fold-spread-{grid_level}-{experiment}")
with st.expander("Every column of cv_results.parquet"):
    show_table(cv, f"cv-results-{grid_level}-{experiment}")
