"""Shared fixtures: the sample region, and Dagster resources under a temporary data directory."""

import time
from pathlib import Path

import pytest

from entropice_core.sample import SampleRegionFiles, generate_sample_region

#: The seed of the sample region the tests share (the default seed of `make demo`).
SEED = 42


def dagster_resources(data_dir: Path, aoi: str = "sample") -> dict[str, object]:
    """The resources of ``definitions.defs``, pointed at ``data_dir``."""
    # Imported here so that the core tests never import dagster.
    from entropice_dagster.resources import project_resources

    return project_resources(data_dir, aoi)


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
