"""Inference: maps of predicted class and probability per cell, and differences between two."""

import numpy as np
import pandas as pd
import streamlit as st

from entropice_core.config import GridSpec
from entropice_core.ml.inference import probability_columns
from entropice_dashboard.cells import MAX_POLYGONS
from entropice_dashboard.data import (
    IMPORTANCE,
    DataProblem,
    experiment_table,
    layout,
    make_command,
    model_stamp,
    open_store,
    read_table,
    table_columns,
)
from entropice_dashboard.maps import WORLD, hash_path, in_box
from entropice_dashboard.maps import cell_map as prepare_map
from entropice_dashboard.plots import cell_map
from entropice_dashboard.ui import choose, guard, need, show_plot, show_table

lay = layout()
st.title("Inference")
found = [(g, e) for g, e, _ in lay.experiment_folders() if lay.predictions(g, e).exists()]
need(
    [g for g, _ in found],
    "predictions (training-results/{grid_level}/{experiment}/predictions.parquet)",
    make_command("predictions"),
)
grid_level = choose("Grid level", sorted({g for g, _ in found}), "grid_level")
names = [e for g, e in found if g == grid_level]
experiment = choose("Experiment", names, "experiment")
path = lay.predictions(grid_level, experiment)
keys = {"grid_level": grid_level, "experiment": experiment}


def load(experiment: str) -> tuple[pd.DataFrame, list[str], str]:
    """Read predictions without geometry; return them, their classes and a cache key."""
    file = lay.predictions(grid_level, experiment)
    with guard():
        stamp = model_stamp(lay, grid_level, experiment)
        classes = [str(c) for c in stamp["classes"]]
        wanted = ["cell_id", "predicted_label", *probability_columns(classes)]
        present = table_columns(file, "predictions", grid_level=grid_level, experiment=experiment)
        wanted += [c for c in ("year",) if c in present]
        frame = read_table(file, "predictions", wanted, grid_level, experiment)
    return frame, classes, hash_path(file)


frame, classes, key = load(experiment)
probas = probability_columns(classes)
if "year" in frame:
    years = sorted(int(y) for y in frame["year"].dropna().unique())
    year = st.select_slider("Year (a yearly model predicts each)", years, value=years[-1])
    frame = frame[frame["year"] == year]
    key += f" year={year}"
frame = frame.assign(p_rts=1.0 - frame[probas[0]].astype(float))

cols = st.columns([2, 2, 1])
colour = cols[0].radio(
    "Colour by",
    ["predicted class", *[f"P({c})" for c in classes], "P(RTS) = 1 - P(first class)"],
    horizontal=False,
)
budget = cols[2].number_input(
    "Polygons at most",
    1_000,
    500_000,
    MAX_POLYGONS,
    step=5_000,
    help="Above this, parent cells are drawn (mean probability, "
    "most frequent class); zoom into a region for full cells.",
)
with cols[1].expander("Region (zoom for full cells)", expanded=False):
    lon = st.slider("Longitude", -180.0, 180.0, (WORLD[0], WORLD[1]), 1.0)
    lat = st.slider("Latitude", 40.0, 90.0, (WORLD[2], WORLD[3]), 0.5)
box = (lon[0], lon[1], lat[0], lat[1])
mtime = path.stat().st_mtime_ns
inside = in_box(grid_level, frame["cell_id"].to_numpy(np.uint64), box, key, mtime)
view_frame = frame[inside]
spec = GridSpec.from_key(grid_level)
view = prepare_map(
    grid_level, view_frame, (*probas, "p_rts"), ("predicted_label",), int(budget), f"{key} {box}"
)
drawn = "cells" if view.level == spec.level else f"parent cells (level {view.level})"
st.caption(f"{view.cells:,} cells mapped, drawn as {view.polygons:,} {drawn}")

hover = [("cell", "@cell"), ("cells", "@cells"), ("predicted", "@predicted_label")]
hover += [(f"P({c})", f"@{{{p}}}{{0.000}}") for c, p in zip(classes, probas, strict=True)]
data = dict(view.data)
top: list[str] = []
if view.level == spec.level:  # features of the cells on hover: the three most important
    try:
        importance = experiment_table(lay, grid_level, experiment, IMPORTANCE)
        ds = open_store(lay.training_dataset(grid_level), "training_dataset", grid_level)
        ranked = importance.sort_values("permutation_mean", ascending=False)["feature"]
        top = [f for f in ranked.head(3) if f in ds["feature"].to_numpy()]
    except DataProblem as problem:  # the map needs neither: say so and go on
        st.caption(f"No features on hover: {problem}")
    if top:
        ids = view_frame["cell_id"].to_numpy(np.uint64)
        values = ds["features"].sel(feature=top).reindex(cell_ids=ids).to_numpy()
        for i, feature in enumerate(top):
            data[f"feat{i}"] = values[:, i]
            hover.append((feature, f"@feat{i}{{0.00}}"))
if colour == "predicted class":
    figure = cell_map(
        view.xs,
        view.ys,
        data,
        "predicted_label",
        f"{experiment}: predicted class on {grid_level}",
        "predicted class",
        hover,
        categories=[*classes, "none"],
    )
else:
    column = "p_rts" if colour.startswith("P(RTS)") else probas[classes.index(colour[2:-1])]
    figure = cell_map(
        view.xs,
        view.ys,
        data,
        column,
        f"{experiment}: {colour} on {grid_level}",
        f"{colour} (probability, 0-1)",
        hover,
        low=0.0,
        high=1.0,
    )
show_plot(figure, "prediction-map")
counts = frame["predicted_label"].value_counts(dropna=False).rename_axis("class")
show_table(counts.reset_index(), f"predicted-classes-{grid_level}-{experiment}")

st.subheader("Difference between two experiments")
st.markdown("Where do two experiments disagree? P(RTS) of the second minus the first's.")
others = [e for e in names if e != experiment]
if not others:
    st.info("Only one experiment has predictions at this grid level.")
    st.stop()
other = st.selectbox("Compare with", others)
other_frame, other_classes, other_key = load(other)
if "year" in other_frame:
    other_frame = other_frame[other_frame["year"] == other_frame["year"].max()]
other_p = 1.0 - other_frame[probability_columns(other_classes)[0]].astype(float)
both = view_frame[["cell_id", "p_rts"]].merge(
    pd.DataFrame({"cell_id": other_frame["cell_id"], "p_other": other_p}), on="cell_id"
)
both["difference"] = both["p_other"] - both["p_rts"]
diff = prepare_map(
    grid_level,
    both,
    ("difference", "p_rts", "p_other"),
    (),
    int(budget),
    f"diff {key} {other_key} {box}",
)
show_plot(
    cell_map(
        diff.xs,
        diff.ys,
        diff.data,
        "difference",
        f"P(RTS): {other} - {experiment}",
        "difference of P(RTS), -1 to 1",
        [
            ("cell", "@cell"),
            ("cells", "@cells"),
            (experiment, "@p_rts{0.000}"),
            (other, "@p_other{0.000}"),
            ("difference", "@difference{+0.000}"),
        ],
        low=-1.0,
        high=1.0,
        diverging=True,
    ),
    "difference-map",
)
show_table(both.describe().reset_index(), f"difference-{grid_level}-{experiment}-{other}")
