"""`python -m entropice_dagster.demo` (what `entropice demo` / `make demo` run): its failure path.

The graph the demo materialises is checked in-process by test_dagster_end_to_end.py; the full
nine-level demo itself is what `make demo` proves."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a subprocess imports the whole stack
def test_demo_fails_loudly_with_the_cause(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "ENTROPICE_DATA_DIR": str(tmp_path / "data"),
        "ENTROPICE_AOI": "1,2,3",
        "COLUMNS": "200",
    }
    # quiet: about 15 s (imports, then the first run fails); the limit is for a loaded machine
    done = subprocess.run(
        [sys.executable, "-m", "entropice_dagster.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    # the cause and the valid forms (issue 13, point 5), not a Python traceback
    assert "must have four numbers" in output and "Valid forms" in output, output
    assert "Traceback" not in output, output
    assert not (tmp_path / "data" / "sources").exists()  # no sample region for a bad area


def test_demo_plans_runs_covering_every_asset() -> None:
    from entropice_core.config import DEFAULT_GRID_LEVELS
    from entropice_dagster.assets import all_assets
    from entropice_dagster.demo import DEMO_EXPERIMENTS, _pooled, _steps
    from entropice_dagster.partitions import experiment_partitions

    years = ["2018", "2019", "2020"]
    steps = _steps(years)
    keys = [str(key) for _, _, key in steps]
    # five unpartitioned runs: the sources and the terrain derivatives first, the terrain and
    # the AlphaEarth statistics of every level, the leaderboard of the trained models last
    assert keys.count("None") == 5 and keys[0] == keys[1] == keys[-1] == "None"
    assert [a.key.to_user_string() for a in steps[-1][1]] == ["experiment_summary"]
    names = [[a.key.to_user_string() for a in selection] for _, selection, _ in steps]
    statistics = names.index(["terrain_statistics"])
    assert names[statistics + 1] == ["alphaearth_statistics"]
    assert all("grid_cells" not in n for n in names[statistics:])
    assert all("terrain_features" not in n for n in names[:statistics])
    assert all("alphaearth_features" not in n for n in names[:statistics])
    # the pooled (dask) runs hold no asset that could run beside them without the pool
    pooled = [n for step, n in zip(steps, names, strict=True) if _pooled(step)]
    assert pooled[0] == ["arcticdem_tiles", "terrain_derivatives"]
    assert all(len(n) == 1 for n in pooled[1:])
    # each grid level's cells and labels, and its climate, in a run each; its AlphaEarth and
    # terrain features in one, or, where models train, in two (the AlphaEarth features before
    # the terrain statistics, the terrain features with the training dataset after them)
    for stage in ("grid levels", "climate"):
        levels = [key for st, _, key in steps if st == stage]
        assert sorted(levels) == sorted(DEFAULT_GRID_LEVELS), stage
    features = [key for st, _, key in steps if st == "level features"]
    assert sorted(features) == sorted([*DEFAULT_GRID_LEVELS, *DEMO_EXPERIMENTS])
    covered = {asset.key.to_user_string() for _, selection, _ in steps for asset in selection}
    assert covered == {asset.key.to_user_string() for asset in all_assets}
    # a year's indices read the next year's daily store: newest year first
    era5 = [key for stage, _, key in steps if stage == "era5"]
    assert era5 == ["2020", "2019", "2018"]
    trained = [e for experiments in DEMO_EXPERIMENTS.values() for e in experiments]
    assert set(trained) <= set(experiment_partitions.get_partition_keys())
    # every model, the count task, a single-source and a yearly variant reach the leaderboard
    assert {e.split("-")[0] for e in trained} == {"espa", "xgboost", "rf", "knn"}
    assert any("-count" in e for e in trained) and any("yearly" in e for e in trained)
    expected = 5 + len(years) + 3 * len(DEFAULT_GRID_LEVELS) + len(DEMO_EXPERIMENTS) + len(trained)
    assert len(steps) == expected


def test_demo_starts_no_pooled_run_beside_another() -> None:
    """A pooled run beside another would hold a worker idle until the pool's slot is free."""
    from entropice_dagster.demo import _can_start, _pooled, _steps

    steps = _steps(["2018"])
    pooled = [step for step in steps if _pooled(step)]
    free = [step for step in steps if not _pooled(step)]
    assert len(pooled) == 2 and free  # the terrain derivatives and statistics
    assert not _can_start(pooled[1], [pooled[0]])
    assert _can_start(pooled[1], [free[0]]) and _can_start(free[0], [pooled[0]])
    # the models hold the gpu pool, whose limit is the demo's two runs: two train at once
    models = [step for step in steps if step[0] == "models"]
    assert models[0][1][0].op.pool == "gpu" and _can_start(models[1], [models[0]])


def test_demo_runs_wait_for_what_they_read_and_nothing_else() -> None:
    """Runs overlap only where neither reads the other's assets (the demo runs two at once)."""
    from entropice_dagster.demo import _prerequisites, _steps

    steps = _steps(["2018", "2019", "2020"])
    prerequisites = _prerequisites(steps)
    written = [{k for a in selection for k in a.keys} for _, selection, _ in steps]
    for i, (_, selection, _) in enumerate(steps):
        assert all(j < i for j in prerequisites[i])
        parents = {p for a in selection for k in a.keys for p in a.asset_deps[k]} - written[i]
        # every parent is written by a step this one waits for
        assert all(any(p in written[j] for j in prerequisites[i]) for p in parents), i
    index = {(stage, str(key)): i for i, (stage, _, key) in enumerate(steps)}
    by_stage = {}
    for i, (stage, _, key) in enumerate(steps):
        by_stage.setdefault((stage, str(key)), []).append(i)
    statistics = set(by_stage["statistics", "None"])
    assert len(statistics) == 2
    assert all(not prerequisites[i] & statistics for i in statistics)  # side by side
    # the grid cells and the AlphaEarth statistics do not wait for the terrain derivatives
    sources, derivatives = index["sources", "None"], index["terrain derivatives", "None"]
    alphaearth = max(statistics)
    assert derivatives not in prerequisites[alphaearth]
    for level in ("h3_3", "healpix_10"):
        assert prerequisites[index["grid levels", level]] == {sources}
        assert prerequisites[index["climate", level]] == {
            index["grid levels", level],
            *(index["era5", year] for year in ("2018", "2019", "2020")),
        }
        (features,) = by_stage["level features", level]  # no models: one run after both
        assert prerequisites[features] == {index["grid levels", level], *statistics}
    alphaearth_features, terrain_features = by_stage["level features", "h3_6"]
    assert prerequisites[alphaearth_features] == {index["grid levels", "h3_6"], alphaearth}
    # with the training dataset, which reads the level's climate and AlphaEarth features too
    assert prerequisites[terrain_features] == {
        index["grid levels", "h3_6"],
        min(statistics),
        index["climate", "h3_6"],
        alphaearth_features,
    }
    models = [i for i, (stage, _, _) in enumerate(steps) if stage == "models"][:-1]
    assert all(not prerequisites[i] & set(models) for i in models)  # models train side by side
    assert prerequisites[-1] == set(models)  # the leaderboard waits for every model
