"""Resources map their typed fields onto the core configs, and every field is described."""

import pydantic
import pytest

from entropice_core.config import SAMPLE_REGION_BBOX, GridCellsConfig, WatermaskConfig
from entropice_dagster.io_managers import GeoParquetIOManager
from entropice_dagster.resources import (
    AreaOfInterestResource,
    DataDirResource,
    GridSettingsResource,
    WatermaskSourceResource,
)


@pytest.mark.parametrize(
    "resource",
    [
        AreaOfInterestResource,
        DataDirResource,
        GridSettingsResource,
        WatermaskSourceResource,
        GeoParquetIOManager,
    ],
)
def test_every_field_is_described(resource) -> None:
    fields = resource.model_fields
    assert fields
    assert all(f.description for f in fields.values()), resource


def test_defaults_are_the_core_defaults() -> None:
    assert GridSettingsResource().config() == GridCellsConfig()
    assert WatermaskSourceResource().config() == WatermaskConfig()


def test_settings_reach_the_core_configs(tmp_path) -> None:
    grid = GridSettingsResource(min_land_fraction=0.25, mask_resolution_deg=0.1).config()
    assert (grid.min_land_fraction, grid.mask_resolution_deg) == (0.25, 0.1)
    water = WatermaskSourceResource(source="file", path=str(tmp_path / "w.gpkg"), tile_deg=2).config()
    assert (water.source, water.path, water.tile_deg) == ("file", tmp_path / "w.gpkg", 2)


def test_invalid_settings_fail_with_the_core_message() -> None:
    with pytest.raises(pydantic.ValidationError, match="needs a path"):
        WatermaskSourceResource(source="file").config()
    with pytest.raises(pydantic.ValidationError):
        GridSettingsResource(min_land_fraction=1.5).config()


def test_area_of_interest_parses_the_spec() -> None:
    assert AreaOfInterestResource().area().bbox == SAMPLE_REGION_BBOX
    assert AreaOfInterestResource(aoi="10,60,20,70").area().bbox == (10, 60, 20, 70)
    with pytest.raises(ValueError, match="four numbers"):
        AreaOfInterestResource(aoi="1,2,3").area()
