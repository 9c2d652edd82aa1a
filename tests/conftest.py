"""Shared fixtures: the sample region, and Dagster resources under a temporary data directory."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from entropice_core.sample import SampleRegionFiles, generate_sample_region

#: The seed of the sample region the tests share (the default seed of `make demo`).
SEED = 42
REPO = Path(__file__).resolve().parents[1]


def dagster_resources(data_dir: Path, aoi: str = "sample") -> dict[str, object]:
    """The resources of ``definitions.defs``, pointed at ``data_dir``."""
    # Imported here so that the core tests never import dagster.
    from entropice_dagster.resources import project_resources

    return project_resources(data_dir, aoi)


def backfill_from_cli(tmp_path: Path, job: str, dynamic: dict[str, list[str]] | None = None):
    """Run ``dagster job backfill -j <job> --all`` as a user would, against a fresh instance
    under ``tmp_path`` (``dynamic`` partitions added first); returns its runs and backfill."""
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    if dynamic:
        instance = dg.DagsterInstance.from_config(str(home))
        for name, keys in dynamic.items():
            instance.add_dynamic_partitions(name, keys)
        instance.dispose()
    env = os.environ | {"DAGSTER_HOME": str(home), "ENTROPICE_DATA_DIR": str(tmp_path / "data")}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "job", "backfill", "-j", job, "--all", "--noprompt", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        (backfill,) = instance.get_backfills()
    finally:
        instance.dispose()
    return runs, backfill


@pytest.fixture(scope="session")
def cli_backfill():
    """``cli_backfill(tmp_path, job, dynamic=None)``: see :func:`backfill_from_cli`."""
    return backfill_from_cli


@pytest.fixture(scope="session")
def make_resources():
    """``make_resources(data_dir, aoi="sample")`` builds the resources (usable in any scope)."""
    return dagster_resources


@pytest.fixture(scope="session")
def region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleRegionFiles, float]:
    """The sample region for SEED, generated once per session: data dir, files, seconds taken."""
    data_dir = tmp_path_factory.mktemp("sample-region")
    started = time.perf_counter()
    files = generate_sample_region(data_dir, seed=SEED)
    return data_dir, files, time.perf_counter() - started
