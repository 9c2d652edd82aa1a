"""Overview: what the data directory holds, and the leaderboard."""

import json

import pandas as pd
import streamlit as st

from entropice_core.ml.summary import best_per_level
from entropice_dashboard.data import (
    DataProblem,
    experiments,
    inventory,
    layout,
    leaderboard,
    source_inventory,
)
from entropice_dashboard.plots import score_bars
from entropice_dashboard.ui import show_plot, show_problem, show_table

lay = layout()
st.title("Overview")
st.caption(f"Data directory `{lay.root}` (ENTROPICE_DATA_DIR); paths: entropice_core/layout.py")
if not lay.root.is_dir() or not any(lay.root.iterdir()):
    st.warning(
        f"**{lay.root}** is empty or does not exist.\n\nMake the sample region's outputs with:"
        "\n\n```\nmake demo\n```\n\nor point ENTROPICE_DATA_DIR at a data directory.",
        icon=":material/info:",
    )
    st.stop()

st.subheader("Assets stored")
st.markdown("Each asset of the graph, the partitions found on disk and when it was last written.")
show_table(inventory(lay), "assets")
st.subheader("Sources")
show_table(source_inventory(lay), "sources")

incomplete = [e for e in experiments(lay) if not e.complete]
for e in incomplete:
    st.warning(
        f"Experiment folder **{e.folder}** lacks {', '.join(e.missing)} (half-written or "
        f"failed). Make it with: `entropice train --config configs/{e.experiment}.toml "
        f"--grid-level {e.grid_level}` and `entropice predict --grid-level {e.grid_level} "
        f"--experiment {e.experiment}`",
        icon=":material/warning:",
    )

st.subheader("Leaderboard")
try:
    summary = leaderboard(lay)
except DataProblem as problem:
    show_problem(problem)
    st.stop()
if summary.empty:
    st.info("The leaderboard is empty: no experiment has been trained.")
    st.stop()
st.markdown(
    "Best experiment per grid level and task by CV F1 macro (macro averages weigh the rare RTS "
    "classes like the others); the majority-class baseline is what predicting the most common "
    "class scores."
)
best = best_per_level(summary)[
    ["grid_level", "task", "experiment", "cv_f1_macro", "test_f1_macro", "baseline_cv_f1_macro"]
]
show_table(best, "best-per-grid-level")
show_plot(score_bars(summary, "f1_macro", "F1 macro (0-1, higher is better)"), "leaderboard")
st.markdown("Every trained experiment (all scores, search time, best parameters):")
show_table(summary, "leaderboard", height=300)

st.subheader("Data versions")
st.markdown("What each grid level's models were trained on: content hash and snapshot ids.")
versions = []
for row in summary.drop_duplicates("grid_level").itertuples():
    for asset, version in json.loads(row.data_versions).items():
        versions.append({"grid_level": row.grid_level, "input": asset, "version": version})
show_table(pd.DataFrame(versions), "data-versions")
