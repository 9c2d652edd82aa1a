"""Resources map their typed fields onto the core configs, and every field is described."""

import pydantic
import pytest

from entropice_core.config import SAMPLE_REGION_BBOX, GridCellsConfig, WatermaskConfig
from entropice_dagster.definitions import defs
from entropice_dagster.resources import (
    AreaOfInterestResource,
    GridCellsResource,
    WatermaskResource,
)


def _undescribed(resource: type[pydantic.BaseModel], prefix: str = "") -> list[str]:
    """Fields without a description, also in nested resources and config models."""
    missing = []
    for name, field in resource.model_fields.items():
        if not (field.description and field.description.strip()):
            missing.append(prefix + name)
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, pydantic.BaseModel):
            missing += _undescribed(nested, f"{prefix}{name}.")
    return missing


@pytest.mark.parametrize("key", sorted(defs.resources))
def test_every_resource_of_the_definitions_is_documented(key: str) -> None:
    """Every resource the code location registers (IO managers included), so a new one is
    covered without editing this test: a class docstring and a description on every field
    (the launchpad and the UI's resource page show them)."""
    resource = type(defs.resources[key])
    assert resource.__doc__ and resource.__doc__.strip(), key
    assert not _undescribed(resource), (key, _undescribed(resource))


def test_every_registered_resource_is_used_by_an_asset() -> None:
    assets = defs.resolve_asset_graph().assets_defs
    used = set().union(*(a.required_resource_keys for a in assets))
    assert set(defs.resources) <= used, set(defs.resources) - used
    assert len(defs.resources) >= 11  # io managers, paths, area, grids, sources, dask


def test_defaults_are_the_core_defaults() -> None:
    assert GridCellsResource().config() == GridCellsConfig()
    assert WatermaskResource().config() == WatermaskConfig()


def test_settings_reach_the_core_configs(tmp_path) -> None:
    grid = GridCellsResource(min_land_fraction=0.25, mask_resolution_deg=0.1).config()
    assert (grid.min_land_fraction, grid.mask_resolution_deg) == (0.25, 0.1)
    water = WatermaskResource(source="file", path=str(tmp_path / "w.gpkg"), tile_deg=2).config()
    assert (water.source, water.path, water.tile_deg) == ("file", tmp_path / "w.gpkg", 2)


def test_invalid_settings_fail_with_the_core_message() -> None:
    with pytest.raises(pydantic.ValidationError, match="needs a path"):
        WatermaskResource(source="file").config()
    with pytest.raises(pydantic.ValidationError):
        GridCellsResource(min_land_fraction=1.5).config()


def test_area_of_interest_parses_the_spec() -> None:
    assert AreaOfInterestResource().area().bbox == SAMPLE_REGION_BBOX
    assert AreaOfInterestResource(aoi="10,60,20,70").area().bbox == (10, 60, 20, 70)
    with pytest.raises(ValueError, match="four numbers"):
        AreaOfInterestResource(aoi="1,2,3").area()
