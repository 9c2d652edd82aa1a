"""`python -m entropice_dagster.demo`: what `entropice demo` / `make demo` run."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from entropice_core.config import DEFAULT_GRID_LEVELS
from entropice_dagster.demo import MODEL_LEVELS
from entropice_dagster.partitions import experiment_partitions

REPO = Path(__file__).resolve().parents[1]


def _demo(tmp_path: Path, aoi: str) -> subprocess.CompletedProcess:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = os.environ | {
        "DAGSTER_HOME": str(home),
        "ENTROPICE_DATA_DIR": str(tmp_path / "data"),
        "ENTROPICE_AOI": aoi,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "entropice_dagster.demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_demo_materialises_every_grid_level(tmp_path: Path) -> None:
    done = _demo(tmp_path, "sample")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "data" / "watermask" / "watermask.parquet").exists()
    for key in DEFAULT_GRID_LEVELS:
        assert (tmp_path / "data" / "grids" / f"{key}.parquet").exists()
        assert (tmp_path / "data" / "darts" / f"labels_{key}.zarr").is_dir()
        assert (tmp_path / "data" / "darts" / f"labels_{key}.parquet").exists()
        assert (tmp_path / "data" / "arcticdem" / f"features_{key}.zarr").is_dir()
        assert (tmp_path / "data" / "era5" / f"features_{key}.zarr").is_dir()
        assert key in done.stdout
    experiments = experiment_partitions.get_partition_keys()
    for key in MODEL_LEVELS:
        assert (tmp_path / "data" / "datasets" / f"{key}.zarr").is_dir()
        for experiment in experiments:
            folder = tmp_path / "data" / "training-results" / key / experiment
            assert (folder / "predictions.parquet").exists()
            assert (folder / "cv_results.parquet").exists()
            assert re.search(rf"{key}\s+│\s+{experiment}\s+│\s+0\.\d{{3}}", done.stdout)
    assert "Spatial CV scores per grid level and model" in done.stdout
    assert "grids/{grid_level}.parquet" in done.stdout
    assert "make ui" in done.stdout and "http://127.0.0.1:3000" in done.stdout
    # the runs stay in the persistent instance, for the UI
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    try:
        statuses = [run.status for run in instance.get_runs()]
    finally:
        instance.dispose()
    # 3 unpartitioned (watermask, DARTS, ArcticDEM tiles + derivatives), 6 Arctic years x 2
    # (download + daily, then indices), 9 grid levels, then datasets and models
    runs = 3 + 12 + len(DEFAULT_GRID_LEVELS) + len(MODEL_LEVELS) * (1 + len(experiments))
    assert statuses == [dg.DagsterRunStatus.SUCCESS] * runs


def test_demo_fails_loudly_with_the_cause(tmp_path: Path) -> None:
    done = _demo(tmp_path, "1,2,3")
    assert done.returncode == 1
    assert "watermask failed" in done.stdout
    assert "must have four numbers" in done.stdout


def test_demo_plans_one_run_per_partition_key_covering_every_asset() -> None:
    from entropice_dagster.assets import all_assets
    from entropice_dagster.demo import _steps

    years = ["2018", "2019", "2020"]
    steps = _steps(years)
    keys = [str(key) for _, _, key in steps]
    assert len(keys) == len(set(keys)), "two runs for one partition key"
    covered = {asset.key.to_user_string() for _, selection, _ in steps for asset in selection}
    assert covered == {asset.key.to_user_string() for asset in all_assets}
    # a year's indices read the next year's daily store: newest year first
    era5 = [key for stage, _, key in steps if stage == "era5"]
    assert era5 == ["2020", "2019", "2018"]
    experiments = experiment_partitions.get_partition_keys()
    expected = 1 + len(years) + len(DEFAULT_GRID_LEVELS) + len(MODEL_LEVELS) * len(experiments)
    assert len(steps) == expected
