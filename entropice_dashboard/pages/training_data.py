"""Training Data: feature distributions by target class, targets, missing values, the split."""

import json

import numpy as np
import pandas as pd
import streamlit as st

from entropice_dashboard.data import grid_levels_with, layout, make_command, open_store
from entropice_dashboard.maps import cell_map as prepare_map
from entropice_dashboard.maps import hash_path
from entropice_dashboard.plots import bars, cell_map, histogram_by_class
from entropice_dashboard.ui import choose, guard, need, show_plot, show_table

lay = layout()
st.title("Training Data")
levels = grid_levels_with(lay, "training_dataset")
need(levels, "training dataset (datasets/{grid_level}.zarr)", make_command("training_dataset"))
grid_level = choose("Grid level", levels, "grid_level")
path = lay.training_dataset(grid_level)
with guard():
    ds = open_store(path, "training_dataset", grid_level)
    if "features" not in ds or "role" not in ds:
        from entropice_dashboard.data import DataProblem

        raise DataProblem(
            path,
            "is not a training dataset (no features or role)",
            make_command("training_dataset", grid_level),
        )

role_codes = ds["role"].to_numpy()
flag_values = list(ds["role"].attrs.get("flag_values", [0, 1, 2, 3, -1]))
flag_names = str(ds["role"].attrs.get("flag_meanings", "train test buffer unlabelled excluded"))
role_names = dict(zip([int(v) for v in flag_values], flag_names.split(), strict=False))
count = ds["rts_count"].to_numpy()
target = np.where(np.isnan(count), -1, (count > 0).astype(int))
st.caption(
    f"`{path}`: {ds.sizes['cell_ids']:,} cells, {ds.sizes['feature']:,} features; "
    f"block level {ds.attrs.get('block_level', '?')}"
)

st.subheader("Feature distributions by target class")
st.markdown(
    "Does a feature separate cells with RTS from those without? Histograms are "
    "normalised per class (labelled cells only)."
)
sources = list(dict.fromkeys(ds["feature_source"].to_numpy().tolist()))
source = st.selectbox("Source", sources)
features = [
    str(f)
    for f, s in zip(ds["feature"].to_numpy(), ds["feature_source"].to_numpy(), strict=True)
    if s == source
]
feature = st.selectbox("Feature", features)
values = ds["features"].sel(feature=feature).to_numpy().astype(float)
show_plot(histogram_by_class(values, target, ["no RTS", "RTS"], feature), "histogram")

st.subheader("Target distribution")
st.markdown("How many slumps a cell holds (all DARTS years; NaN: never imaged) and the roles.")
observed = count[~np.isnan(count)].astype(int)
edges = [0, 1, 2, 3, 6, 11, np.inf]
names = ["0", "1", "2", "3-5", "6-10", ">10"]
binned = pd.cut(observed, edges, right=False, labels=names).value_counts().reindex(names)
cols = st.columns(2)
with cols[0]:
    show_plot(bars(names, binned.to_numpy(), "cells", "RTS per cell (rts_count)"), "target")
roles = pd.Series(role_codes).map(role_names).value_counts()
with cols[1]:
    show_plot(
        bars(roles.index.tolist(), roles.to_numpy(), "cells", "Cells per split role"), "roles"
    )
targets = pd.DataFrame(
    {
        "rts_count": pd.Series(observed).describe(),
        "rts_density": pd.Series(ds["rts_density"].to_numpy()).describe(),
    }
)
show_table(targets, f"targets-{grid_level}", index=True)

st.subheader("Missing values")
st.markdown("NaN cells per feature (excluded cells, with no value from some source, count too).")
missing = ds["features"].isnull().sum("cell_ids").to_numpy()
table = pd.DataFrame(
    {
        "feature": ds["feature"].to_numpy().astype(str),
        "source": ds["feature_source"].to_numpy().astype(str),
        "missing_cells": missing,
    }
)
per_source = table.groupby("source")["missing_cells"].agg(["count", "sum", "max"])
per_source.columns = ["features", "missing values", "most missing in one feature"]
show_table(per_source, f"missing-by-source-{grid_level}", index=True)
show_table(table, f"missing-{grid_level}", height=250)
with st.expander("Source report (dataset attribute `sources`)"):
    st.json(json.loads(ds.attrs.get("sources", "{}")))

st.subheader("Spatial split")
st.markdown(
    "Test blocks, the buffer around them and the training cells (EPSG:3413): are the "
    "test blocks spread over the region, and is every test block fenced by a buffer?"
)
frame = pd.DataFrame(
    {
        "cell_id": ds["cell_ids"].to_numpy().astype(np.uint64),
        "role": pd.Series(role_codes).map(role_names).to_numpy(),
        "fold": ds["fold"].to_numpy().astype(int),
        "block": ds["block"].to_numpy().astype(np.uint64).astype(str),
    }
)
view = prepare_map(
    grid_level, frame, (), ("role", "fold", "block"), 30_000, f"split {hash_path(path)}"
)
st.caption(f"{view.cells:,} cells mapped as {view.polygons:,} polygons at level {view.level}")
show_plot(
    cell_map(
        view.xs,
        view.ys,
        view.data,
        "role",
        f"Spatial split of {grid_level}",
        "split role",
        [("cell", "@cell"), ("role", "@role"), ("fold", "@fold"), ("block", "@block")],
        categories=[role_names[k] for k in sorted(role_names)],
    ),
    "split-map",
)
