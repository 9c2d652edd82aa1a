"""Model State: feature importance, eSPA's boxes, decision boundaries over two features."""

import numpy as np
import pandas as pd
import streamlit as st

from entropice_core.config import Settings
from entropice_core.ml.dataset import DatasetEnsemble, Target, TrainingData
from entropice_dashboard.data import (
    IMPORTANCE,
    experiment_table,
    experiments,
    layout,
    make_command,
    model,
    open_store,
)
from entropice_dashboard.plots import bars, heatmap, importance_bars, probability_surface
from entropice_dashboard.ui import choose, guard, need, show_plot, show_table

lay = layout()
st.title("Model State")
found = [e for e in experiments(lay) if (e.folder / IMPORTANCE).exists()]
need(
    [e.grid_level for e in found],
    "trained experiment (training-results/)",
    make_command("trained_model"),
)
grid_level = choose("Grid level", sorted({e.grid_level for e in found}), "grid_level")
experiment = choose(
    "Experiment", [e.experiment for e in found if e.grid_level == grid_level], "experiment"
)

st.subheader("Feature importance")
st.markdown(
    "Which features does the model rely on? Permutation importance: how much the test "
    "score drops when a feature is shuffled; native: the model's own measure (eSPA: W)."
)
with guard():
    importance = experiment_table(lay, grid_level, experiment, IMPORTANCE)
show_plot(importance_bars(importance), "importance")
show_table(importance, f"importance-{grid_level}-{experiment}", height=250)

with guard():
    pipeline, stamp = model(lay, grid_level, experiment)
estimator = pipeline[-1]
classes = [str(c) for c in stamp["classes"]]
names = [str(f) for f in stamp["feature_names"]]
with guard():
    dataset = open_store(lay.training_dataset(grid_level), "training_dataset", grid_level)
ensemble = DatasetEnsemble.from_toml(Settings.from_env().config_dir / "dataset.toml")
data = TrainingData(dataset).with_variant(ensemble.variant(stamp["dataset"]))
X = data.X("train")[names]

if hasattr(estimator, "Lambda_"):
    st.subheader("eSPA boxes")
    st.markdown(
        "eSPA splits the feature space into K boxes; each box predicts the class "
        "frequencies of its training cells (Lambda) and W weighs the features."
    )
    lam = np.asarray(estimator.Lambda_)
    boxes = [str(k) for k in range(lam.shape[1])]
    order = np.argsort(-lam[-1], kind="stable")  # boxes by P(last class): RTS boxes first
    show_plot(
        heatmap(
            lam[:, order],
            [boxes[k] for k in order],
            classes,
            "Lambda: class probability per box",
            "P(class | box), 0-1",
            0.0,
            1.0,
        ),
        "lambda",
    )
    Xs = np.asarray(pipeline[:-1].transform(X), dtype=float)
    S, W = np.asarray(estimator.S_, dtype=float), np.asarray(estimator.W_, dtype=float)
    nearest = (
        np.concatenate(
            [
                np.argmin(
                    (((Xs[i : i + 256, :, None] - S[None]) ** 2) * W[None, :, None]).sum(1), axis=1
                )
                for i in range(0, len(Xs), 256)
            ]
        )
        if len(Xs)
        else np.zeros(0, dtype=int)
    )
    sizes = np.bincount(nearest, minlength=len(boxes))
    show_plot(
        bars(
            [boxes[k] for k in order],
            sizes[order],
            "training cells",
            "Box sizes (training cells nearest each box)",
        ),
        "box-sizes",
    )
    weights = pd.DataFrame({"feature": names, "W": W}).sort_values("W", ascending=False)
    top = weights.head(30)
    show_plot(
        bars(
            top["feature"].tolist(),
            top["W"].to_numpy(),
            "weight (sums to 1)",
            "W: the 30 heaviest feature weights",
        ),
        "weights",
    )
    show_table(
        pd.DataFrame(lam.T, columns=classes).assign(box=boxes, cells=sizes),
        f"espa-boxes-{grid_level}-{experiment}",
    )

st.subheader("Decision boundary")
st.markdown(
    "The model's probability of RTS over two features, the others at their training "
    "median: where does the model switch, and do the training cells agree?"
)
ranked = importance.sort_values("permutation_mean", ascending=False)["feature"].astype(str)
ranked = [f for f in ranked if f in names] or names
cols = st.columns(2)
fx = cols[0].selectbox("x feature", ranked, index=0)
fy = cols[1].selectbox("y feature", ranked, index=min(1, len(ranked) - 1))
if len(X) == 0:
    st.info("No training rows with features at this grid level.")
    st.stop()
steps = 60
x_lo, x_hi = (float(v) for v in np.nanpercentile(X[fx], [1, 99]))
y_lo, y_hi = (float(v) for v in np.nanpercentile(X[fy], [1, 99]))
gx = np.linspace(x_lo, x_hi, steps)
gy = np.linspace(y_lo, y_hi, steps)
grid = pd.DataFrame(np.repeat(X.median().to_numpy()[None], steps * steps, axis=0), columns=names)
grid[fx] = np.tile(gx, steps)
grid[fy] = np.repeat(gy, steps)
proba = np.asarray(pipeline.predict_proba(grid.astype(np.float32)))
p_rts = 1.0 - proba[:, 0]
_, codes, _ = data.xy(Target(task="binary"), "train")
show_plot(
    probability_surface(
        gx,
        gy,
        p_rts.reshape(steps, steps),
        (X[fx].to_numpy(), X[fy].to_numpy(), np.asarray(codes)),
        (fx, fy),
        f"{experiment}: P(RTS) over {fx} and {fy}",
        f"P(not {classes[0]}), 0-1",
    ),
    "boundary",
)
