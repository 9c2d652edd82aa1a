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
    from entropice_dagster.assets.grids import IO_MANAGER_KEY
    from entropice_dagster.assets.labels import ZARR_IO_MANAGER_KEY
    from entropice_dagster.io_managers import GeoParquetIOManager, ZarrIOManager
    from entropice_dagster.resources import (
        ArcticDEMSourceResource,
        AreaOfInterestResource,
        DartsSourceResource,
        DataDirResource,
        GridCellsResource,
        WatermaskResource,
    )

    return {
        IO_MANAGER_KEY: GeoParquetIOManager(data_dir=str(data_dir)),
        ZARR_IO_MANAGER_KEY: ZarrIOManager(data_dir=str(data_dir)),
        "data_dir": DataDirResource(path=str(data_dir)),
        "area_of_interest": AreaOfInterestResource(aoi=aoi),
        "grid_settings": GridCellsResource(),
        "watermask_source": WatermaskResource(),
        "darts_source": DartsSourceResource(),
        "arcticdem_source": ArcticDEMSourceResource(),
    }


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
