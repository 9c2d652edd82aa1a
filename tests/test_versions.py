"""Content versions (the Dagster data versions): equal for equal content however it was
built or stored, different when a value, a geometry or a listed file changes."""

import os

import geopandas as gpd
import numpy as np
import shapely
import xarray as xr

from entropice_core.io.versions import content_version, files_fingerprint


def _dataset(values: list[float]) -> xr.Dataset:
    return xr.Dataset({"elevation_mean": ("cell_ids", np.asarray(values))}, {"cell_ids": [1, 2, 3]})


def test_a_dataset_version_follows_its_values_not_its_storage(tmp_path) -> None:
    first = _dataset([1.0, 2.0, 3.0])
    first.to_zarr(tmp_path / "a.zarr")
    again = xr.open_zarr(tmp_path / "a.zarr").load()
    assert content_version(again) == content_version(first)
    assert content_version(_dataset([1.0, 2.0, 3.5])) != content_version(first)
    assert content_version(first.chunk({"cell_ids": 1})) is None  # lazy: not read twice


def test_a_frame_version_follows_values_and_geometries() -> None:
    def cells(x: float) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame(
            {"cell_id": np.array([7, 8], dtype="uint64"), "land_fraction": [1.0, 0.5]},
            geometry=[shapely.Point(x, 68), shapely.Point(-134, 68)],
            crs=4326,
        )

    assert content_version(cells(-135.0)) == content_version(cells(-135.0))
    assert content_version(cells(-135.0)) != content_version(cells(-135.001))
    renamed = cells(-135.0).rename(columns={"land_fraction": "water_fraction"})
    assert content_version(renamed) != content_version(cells(-135.0))


def test_a_manifest_version_is_its_listing_in_any_key_order() -> None:
    manifest = {"tiles": ["a.tif", "b.tif"], "missing_tiles": ["3_4"]}
    same = {"missing_tiles": ["3_4"], "tiles": ["a.tif", "b.tif"]}
    assert content_version(manifest) == content_version(same)
    assert content_version({**manifest, "tiles": ["a.tif"]}) != content_version(manifest)
    assert content_version({"path": object()}) is None
    assert content_version(42) is None


def test_files_fingerprint_sees_a_rewritten_file(tmp_path) -> None:
    path = tmp_path / "release.parquet"
    path.write_bytes(b"v1")
    os.utime(path, ns=(1_000, 1_000))
    before = files_fingerprint([path])
    os.utime(path, ns=(2_000, 2_000))
    assert files_fingerprint([path]) != before
