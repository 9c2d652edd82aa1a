"""Core configuration: area-of-interest specs (valid forms and near-misses), the settings read
from the environment, and the one device/backend vocabulary."""

from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from entropice_core.config import (
    AOI_FORMS,
    SAMPLE_REGION_BBOX,
    AreaOfInterest,
    Settings,
    resolve_backend,
)

VALID_FORMS = ("'sample'", "'arctic'", "'north-of:LAT'", "minlon,minlat,maxlon,maxlat", ".gpkg")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("sample ", "remove the surrounding whitespace"),
        (" sample", "remove the surrounding whitespace"),
        ("sample\n", "remove the surrounding whitespace"),
        ("Sample", "write 'sample' in lower case"),
        ("ARCTIC", "write 'arctic' in lower case"),
        ("samples", "not a keyword, bbox or vector file path"),
        ("", "the spec is empty"),
        ("north-of:abc", "'abc' is not a latitude"),
        ("north-of:", "'' is not a latitude"),
        ("north-of:95", "latitude 95 is outside -90..90"),
        ("north of 60", "write north-of:LAT"),
        ("north_of:60", "write north-of:LAT"),
        ("northof:60", "write north-of:LAT"),
        ("region.kml", ".kml is not a vector format read here"),
        ("-138.5,66.5,-131.5", "must have four numbers"),
        ("-138.5,66.5,-131.5,abc", "not a number"),
        ("-130,69,-120,68", "minlat < maxlat"),
        ("190,60,200,70", "outside -180..180"),
        ("missing.gpkg", "does not exist"),
    ],
)
def test_near_misses_fail_in_one_line_naming_the_valid_forms(spec: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        AreaOfInterest.parse(spec)
    text = str(info.value)
    assert "\n" not in text
    assert reason in text
    assert text.startswith(f"area of interest {spec!r}: ")
    assert text.endswith(f"Valid forms: {AOI_FORMS}")
    assert all(form in AOI_FORMS for form in VALID_FORMS)


def test_the_valid_forms_parse(tmp_path: Path) -> None:
    assert AreaOfInterest.parse("sample").bbox == SAMPLE_REGION_BBOX
    assert AreaOfInterest.parse("arctic").bbox == (-180.0, 50.0, 180.0, 90.0)
    assert AreaOfInterest.parse("north-of:62.5").bbox == (-180.0, 62.5, 180.0, 90.0)
    assert AreaOfInterest.parse("170, 60, -170, 70").bbox == (170.0, 60.0, -170.0, 70.0)
    path = tmp_path / "aoi.gpkg"
    box = shapely.box(-120, 65, -110, 70)
    gpd.GeoDataFrame(geometry=[box], crs=4326).to_file(path)
    assert AreaOfInterest.parse(str(path)).geometry.equals(box)
    # checking the form reads no file
    assert AreaOfInterest.check_spec(str(tmp_path / "not-yet.parquet")).endswith(".parquet")


def test_environment_settings_refuse_a_near_miss_naming_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("ENTROPICE_AOI", "sample ")
    with pytest.raises(ValueError, match=r"^ENTROPICE_AOI: area of interest 'sample '") as info:
        Settings.from_env()
    assert "\n" not in str(info.value)
    monkeypatch.setenv("ENTROPICE_AOI", "sample")
    assert Settings.from_env().is_sample
    monkeypatch.setenv("ENTROPICE_AOI", "-138.5,66.5,-131.5,69.2")  # the sample box, not 'sample'
    assert not Settings.from_env().is_sample


@pytest.mark.parametrize(
    ("device", "backend", "expected"),
    [
        ("cpu", None, "numpy"),
        ("cuda", None, "cupy"),
        ("cpu", "torch", "torch"),
        ("cuda", "torch", "torch"),
        ("cpu", "numpy", "numpy"),
        ("cuda", "cupy", "cupy"),
    ],
)
def test_devices_map_onto_array_backends(device, backend, expected) -> None:
    assert resolve_backend(device, backend) == expected


@pytest.mark.parametrize(
    ("device", "backend", "message"),
    [
        ("gpu", None, "unknown device 'gpu': use one of cpu, cuda"),
        ("cupy", None, "unknown device 'cupy'"),
        ("cpu", "jax", "unknown array backend 'jax'"),
        ("cuda", "numpy", "'numpy' cannot run on device 'cuda'"),
        ("cpu", "cupy", "'cupy' cannot run on device 'cpu'"),
    ],
)
def test_impossible_device_backend_pairs_are_refused(device, backend, message) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_backend(device, backend)
