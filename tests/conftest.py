"""Shared fixtures: Dagster resources that write under a temporary data directory."""

from pathlib import Path

import pytest


def dagster_resources(data_dir: Path, aoi: str = "sample") -> dict[str, object]:
    """The resources of ``definitions.defs``, pointed at ``data_dir``."""
    # Imported here so that the core tests never import dagster.
    from entropice_dagster.assets.grids import IO_MANAGER_KEY
    from entropice_dagster.io_managers import GeoParquetIOManager
    from entropice_dagster.resources import (
        AreaOfInterestResource,
        DataDirResource,
        GridCellsResource,
        WatermaskResource,
    )

    return {
        IO_MANAGER_KEY: GeoParquetIOManager(data_dir=str(data_dir)),
        "data_dir": DataDirResource(path=str(data_dir)),
        "area_of_interest": AreaOfInterestResource(aoi=aoi),
        "grid_settings": GridCellsResource(),
        "watermask_source": WatermaskResource(),
    }


@pytest.fixture(scope="session")
def make_resources():
    """``make_resources(data_dir, aoi="sample")`` builds the resources (usable in any scope)."""
    return dagster_resources
