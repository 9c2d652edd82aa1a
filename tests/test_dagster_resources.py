"""Resources map their typed fields onto the core configs, every field is described, and
each resource is registered under the key its class name spells."""

from pathlib import Path

import dagster as dg
import pydantic
import pytest

from entropice_core.config import SAMPLE_REGION_BBOX, GridCellsConfig, WatermaskConfig
from entropice_dagster import io_managers, resources
from entropice_dagster.definitions import defs
from entropice_dagster.resources import (
    AreaOfInterestResource,
    GridSettingsResource,
    WatermaskSourceResource,
    project_resources,
)

#: Every resource and IO manager class the package defines.
CLASSES = sorted(
    (
        cls
        for module in (resources, io_managers)
        for cls in vars(module).values()
        if isinstance(cls, type)
        and issubclass(cls, dg.ConfigurableResource | dg.ConfigurableIOManager)
        and cls.__module__ == module.__name__
        and not cls.__name__.startswith("_")
    ),
    key=lambda cls: cls.__name__,
)


def test_the_classes_are_found() -> None:
    assert len(CLASSES) >= 11


@pytest.mark.parametrize("resource", CLASSES, ids=lambda cls: cls.__name__)
def test_every_field_is_described(resource) -> None:
    fields = resource.model_fields
    assert fields
    undescribed = [name for name, f in fields.items() if not f.description]
    assert not undescribed, f"{resource.__name__}: {undescribed}"


def test_each_resource_is_registered_under_the_key_its_class_spells(tmp_path: Path) -> None:
    # Product names are one word in keys (GeoParquet -> geoparquet, ArcticDEM -> arcticdem):
    # keys are compared with the class names without underscores and case.
    registered = project_resources(tmp_path, "sample")
    for key, resource in registered.items():
        name = type(resource).__name__
        if not isinstance(resource, dg.ConfigurableIOManager):
            name = name.removesuffix("Resource")
        assert key.replace("_", "") == name.lower(), (key, type(resource).__name__)
    assert {type(r) for r in registered.values()} == set(CLASSES)


def test_every_registered_resource_is_used_by_an_asset() -> None:
    assets = defs.resolve_asset_graph().assets_defs
    used = set().union(*(a.required_resource_keys for a in assets))
    assert set(defs.resources) <= used, set(defs.resources) - used


def test_defaults_are_the_core_defaults() -> None:
    assert GridSettingsResource().config() == GridCellsConfig()
    assert WatermaskSourceResource().config() == WatermaskConfig()


def test_settings_reach_the_core_configs(tmp_path) -> None:
    grid = GridSettingsResource(min_land_fraction=0.25, mask_resolution_deg=0.1).config()
    assert (grid.min_land_fraction, grid.mask_resolution_deg) == (0.25, 0.1)
    water = WatermaskSourceResource(
        source="file", path=str(tmp_path / "w.gpkg"), tile_deg=2
    ).config()
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


@pytest.mark.parametrize("spec", ["sample ", "Sample", "north-of:abc", "region.kml"])
def test_area_of_interest_refuses_near_misses_when_configured(spec: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="Valid forms: 'sample'"):
        AreaOfInterestResource(aoi=spec)
    with pytest.raises(ValueError, match="Valid forms: 'sample'"):
        project_resources(Path("data"), spec)
