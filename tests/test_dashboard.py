"""The dashboard (entropice_dashboard): every page under streamlit's AppTest against the
end-to-end run's outputs (``sample_graph``), what each shows; bad data directories give a
message naming the file and the command, never a traceback; the map helpers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from entropice_core.config import GridSpec
from entropice_core.layout import Layout
from entropice_core.ml.summary import experiment_summary
from entropice_dashboard import PAGES, page_url
from entropice_dashboard.cells import cell_label, coarsen, display_level, polygons_3413
from entropice_dashboard.data import DataProblem, inventory, make_command, read_table

APP = Path(__file__).resolve().parents[1] / "entropice_dashboard" / "app.py"
PAGE_FILES = {slug: f"pages/{slug.replace('-', '_')}.py" for slug in PAGES}


def open_page(data_dir: Path, page: str, monkeypatch, **query: str) -> AppTest:
    """Run one page of the app against ``data_dir`` (query parameters preselect its inputs)."""
    monkeypatch.setenv("ENTROPICE_DATA_DIR", str(data_dir))
    app = AppTest.from_file(str(APP), default_timeout=120)
    app.run()
    app.query_params.update(query)
    app.switch_page(PAGE_FILES[page]).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def tables(app: AppTest) -> list[pd.DataFrame]:
    return [element.value for element in app.dataframe]


def plots(app: AppTest) -> int:
    """The Bokeh figures the page rendered (streamlit-bokeh is a v2 custom component)."""
    return len(app.get("bidi_component"))


# --- against the end-to-end run (slow: sample_graph) -------------------------------------


def test_overview_shows_inventory_and_leaderboard(sample_graph, monkeypatch):
    app = open_page(sample_graph.data_dir, "overview", monkeypatch)
    summary = experiment_summary(Layout(sample_graph.data_dir))
    shown = tables(app)
    leaderboard = next(t for t in shown if "cv_f1_macro" in t and len(t) == len(summary))
    assert list(leaderboard["experiment"]) == list(summary["experiment"])
    best = next(t for t in shown if list(t.columns)[:3] == ["grid_level", "task", "experiment"])
    assert set(best["grid_level"]) == set(sample_graph.levels)
    assets = next(t for t in shown if "asset" in t)
    grid_row = assets.set_index("asset").loc["grid_cells"]
    assert set(grid_row["partitions"].split(", ")) >= set(sample_graph.levels)
    assert plots(app) >= 1
    assert len(app.get("download_button")) == len(shown)  # a download for every table


def test_training_data_page(sample_graph, monkeypatch):
    level = "h3_5"
    app = open_page(sample_graph.data_dir, "training-data", monkeypatch, grid_level=level)
    cells = Layout(sample_graph.data_dir).training_dataset(level)
    import xarray as xr

    n = xr.open_zarr(cells, consolidated=False).sizes["cell_ids"]
    assert any(c.value.startswith(f"{n:,} cells mapped") for c in app.caption)
    missing = next(t for t in tables(app) if "missing_cells" in t)
    assert len(missing) > 0 and (missing["missing_cells"] >= 0).all()
    assert plots(app) == 4  # histogram, target, roles, split map
    assert not app.error


def test_training_analysis_page(sample_graph, monkeypatch):
    level, experiment = "h3_5", "xgboost-binary"
    app = open_page(
        sample_graph.data_dir, "training-analysis", monkeypatch, grid_level=level,
        experiment=experiment,
    )  # fmt: skip
    folder = Layout(sample_graph.data_dir).experiment(level, experiment)
    cv = pd.read_parquet(folder / "cv_results.parquet")
    spread = next(t for t in tables(app) if {"mean", "std", "rank"} <= set(t.columns))
    assert len(spread) == len(cv)
    assert plots(app) >= 2  # the comparison and one plot per numeric hyperparameter


def test_model_state_page_espa(sample_graph, monkeypatch):
    level, experiment = "h3_5", "espa-binary"
    app = open_page(
        sample_graph.data_dir, "model-state", monkeypatch, grid_level=level,
        experiment=experiment,
    )  # fmt: skip
    folder = Layout(sample_graph.data_dir).experiment(level, experiment)
    expected = pd.read_parquet(folder / "feature_importance.parquet")
    importance = next(t for t in tables(app) if "permutation_mean" in t)
    assert set(importance["feature"]) == set(expected["feature"])
    assert [s.value for s in app.subheader] == [
        "Feature importance", "eSPA boxes", "Decision boundary"
    ]  # fmt: skip
    assert plots(app) == 5  # importance, Lambda, box sizes, W, decision boundary


def test_inference_page_maps_every_cell(sample_graph, monkeypatch):
    layout = Layout(sample_graph.data_dir)
    for level in sample_graph.levels:
        experiment = sample_graph.experiments[level][0]
        app = open_page(
            sample_graph.data_dir, "inference", monkeypatch, grid_level=level,
            experiment=experiment,
        )  # fmt: skip
        predictions = pd.read_parquet(layout.predictions(level, experiment), columns=["cell_id"])
        assert any(c.value.startswith(f"{len(predictions):,} cells mapped") for c in app.caption), [
            c.value for c in app.caption
        ]
        assert plots(app) >= 1
    # the H3 level has several experiments: the difference map is drawn too
    app = open_page(sample_graph.data_dir, "inference", monkeypatch, grid_level="h3_5")
    assert plots(app) == 2


# --- bad data: messages, not tracebacks (quick) ------------------------------------------


def test_every_page_on_an_empty_data_dir(tmp_path, monkeypatch):
    for page in PAGES:
        app = open_page(tmp_path, page, monkeypatch)
        text = " ".join(w.value for w in app.warning)
        assert "make demo" in text or "dagster asset materialize" in text, page


def test_corrupt_leaderboard_and_half_written_experiment(tmp_path, monkeypatch):
    layout = Layout(tmp_path)
    layout.experiment_summary.parent.mkdir(parents=True)
    layout.experiment_summary.write_bytes(b"PAR1 not really parquet")
    folder = layout.experiment("h3_5", "espa-binary")
    folder.mkdir(parents=True)
    (folder / "scores.parquet").write_bytes(b"")
    layout.grid_cells("h3_5").parent.mkdir(parents=True)
    layout.grid_cells("h3_5").write_bytes(b"")
    app = open_page(tmp_path, "overview", monkeypatch)
    errors = " ".join(e.value for e in app.error)
    assert str(layout.experiment_summary) in errors and "cannot be read" in errors
    assert "experiment_summary" in errors  # the command that makes it
    warnings = " ".join(w.value for w in app.warning)
    assert str(folder) in warnings and "model.json" in warnings


def test_model_state_names_the_missing_stamp(tmp_path, monkeypatch):
    folder = Layout(tmp_path).experiment("h3_5", "espa-binary")
    folder.mkdir(parents=True)
    pd.DataFrame(
        {"feature": ["a"], "native": [1.0], "permutation_mean": [0.1], "permutation_std": [0.0]}
    ).to_parquet(folder / "feature_importance.parquet")
    app = open_page(tmp_path, "model-state", monkeypatch)
    errors = " ".join(e.value for e in app.error)
    assert str(folder / "model.json") in errors and "does not exist" in errors
    assert "entropice train --config configs/espa-binary.toml --grid-level h3_5" in errors


def test_read_table_caches_on_mtime_and_names_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(path)
    reads = []
    original = pd.read_parquet
    monkeypatch.setattr(pd, "read_parquet", lambda *a, **k: reads.append(a) or original(*a, **k))
    read_table(path, "experiment_summary")
    read_table(path, "experiment_summary")
    assert len(reads) == 1  # unchanged: from the cache
    pd.DataFrame({"a": [1, 2, 3]}).to_parquet(path)
    stat = path.stat()
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert len(read_table(path, "experiment_summary")) == 3  # rewritten: read again
    assert len(reads) == 2
    with pytest.raises(DataProblem, match="does not exist"):
        read_table(tmp_path / "none.parquet", "predictions", grid_level="h3_5", experiment="x")
    path.write_bytes(b"garbage")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000))
    with pytest.raises(DataProblem, match="cannot be read"):
        read_table(path, "experiment_summary")


def test_commands_and_urls():
    assert make_command("predictions", "h3_6", "espa-binary") == (
        "entropice predict --grid-level h3_6 --experiment espa-binary"
    )
    assert "--partition h3_5" in make_command("training_dataset", "h3_5")
    assert page_url("inference", grid_level="h3_6", experiment="espa-binary") == (
        "http://127.0.0.1:8501/inference?grid_level=h3_6&experiment=espa-binary"
    )
    assert page_url("overview") == "http://127.0.0.1:8501/"
    with pytest.raises(KeyError):
        page_url("nope")


def test_inventory_of_a_partial_dir(tmp_path):
    layout = Layout(tmp_path)
    for key in ("h3_5", "healpix_9"):
        path = layout.grid_cells(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    table = inventory(layout).set_index("asset")
    assert table.loc["grid_cells", "stored"] == 2
    assert table.loc["grid_cells", "partitions"] == "h3_5, healpix_9"
    assert table.loc["watermask", "stored"] == 0


# --- maps ----------------------------------------------------------------------------------


def test_coarsen_h3_parents_and_polygons_in_3413():
    import h3

    spec = GridSpec.from_key("h3_6")
    parent = h3.latlng_to_cell(70.0, -130.0, 3)
    ids = np.array([h3.str_to_int(c) for c in h3.cell_to_children(parent, 6)], dtype=np.uint64)
    frame = pd.DataFrame(
        {"cell_id": ids, "p": np.linspace(0, 1, len(ids)), "label": ["a"] * 300 + ["b"] * 43}
    )
    assert display_level(spec, ids, 1000) == 6
    level = display_level(spec, ids, 10)
    assert level == 4  # 343 cells -> 7 parents at level 4 (49 at level 5)
    coarse = coarsen(spec, frame, level, ["p"], ["label"])
    assert coarse["cells"].sum() == len(ids) and len(coarse) == 7
    assert np.isclose((coarse["p"] * coarse["cells"]).sum(), frame["p"].sum())
    assert set(coarse["label"]) <= {"a", "b"}
    xs, ys = polygons_3413(GridSpec(grid="h3", level=level), coarse["cell_id"].to_numpy())
    assert len(xs) == 7 and all(len(x) == 6 for x in xs)
    # 70 N, 130 W lies about 2,200 km from the pole in EPSG:3413
    r = np.hypot(np.concatenate(xs), np.concatenate(ys))
    assert 1.9e6 < r.mean() < 2.5e6
    assert cell_label(spec, ids[:1])[0] == h3.int_to_str(int(ids[0]))


def test_healpix_labels_and_parents():
    spec = GridSpec.from_key("healpix_9")
    ids = np.arange(4**3, dtype=np.uint64) + np.uint64(4**9 * 2)
    frame = pd.DataFrame({"cell_id": ids, "p": np.ones(len(ids))})
    coarse = coarsen(spec, frame, 6, ["p"], [])
    assert len(coarse) == 1 and coarse["cells"].iloc[0] == 64
    assert cell_label(spec, ids[:1])[0] == f"healpix 9/{int(ids[0])}"


@pytest.fixture
def copied(sample_graph, tmp_path) -> Path:
    """A copy of the run's experiment folders, for damaging them."""
    target = tmp_path / "data"
    shutil.copytree(sample_graph.data_dir / "training-results", target / "training-results")
    return target


def test_inference_page_names_a_corrupt_predictions_file(copied, monkeypatch):
    path = Layout(copied).predictions("h3_5", "espa-binary")
    path.write_bytes(b"PAR1 broken")
    app = open_page(copied, "inference", monkeypatch, grid_level="h3_5", experiment="espa-binary")
    errors = " ".join(e.value for e in app.error)
    assert str(path) in errors and "cannot be read" in errors
    assert "entropice predict --grid-level h3_5 --experiment espa-binary" in errors
    assert json.loads((Layout(copied).experiment("h3_5", "espa-binary") / "model.json").read_text())


def test_the_dashboard_never_imports_dagster():
    import subprocess
    import sys

    package = APP.parent
    modules = [f"entropice_dashboard.{p.stem}" for p in package.glob("*.py") if p.stem != "app"]
    script = "\n".join(f"import {m}" for m in modules)
    script += "\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
    script += "('dagster', 'entropice_dagster')))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
    import re

    imports = re.compile(r"^\s*(import|from)\s+(dagster|entropice_dagster)\b", re.MULTILINE)
    for page in package.rglob("*.py"):  # the page scripts run only inside streamlit
        assert not imports.search(page.read_text()), page


def test_assets_link_their_dashboard_page(sample_graph):
    import dagster as dg

    key = dg.MultiPartitionKey({"grid_level": "h3_5", "experiment": "espa-binary"})
    url = sample_graph.metadata("predictions", key)["dashboard"]
    assert url == page_url("inference", experiment="espa-binary", grid_level="h3_5")
    assert sample_graph.metadata("experiment_summary")["dashboard"] == page_url("overview")
