"""The sample region checked with independent readers (rasterio, xarray, geopandas, pyogrio)
and hand-computed conventions, not with the generator's own helpers."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.merge
import shapely
import xarray as xr
from pyproj import Transformer

import entropice_core.sample.generate as generate
from entropice_core.config import SAMPLE_REGION_BBOX
from entropice_core.io.atomic import atomic_path
from entropice_core.sample import generate_sample_region
from entropice_core.sample.arcticdem import detail_noise, render_tile
from entropice_core.sample.darts import coverage_layer, drop_unimaged, simulate_rts
from entropice_core.sample.era5 import simulate_era5, thawing_degree_days
from entropice_core.sample.world import LatentWorld, build_world

SEED = 42
DARTS_STEM = "DARTS_NitzeEtAl_v1-2_features_2018-2023_level2"
COVERAGE_FILE = "DARTS_NitzeEtAl_v1-2_coverage_2018-2023.parquet"


@pytest.fixture(scope="session")
def world() -> LatentWorld:
    """The latent world rebuilt in this process (for the reproducibility checks)."""
    return build_world(SEED)


@pytest.fixture(scope="session")
def footprints(region) -> gpd.GeoDataFrame:
    data_dir, _, _ = region
    return gpd.read_parquet(data_dir / "sources" / "darts" / f"{DARTS_STEM}.parquet")


def _tif_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "sources" / "arcticdem").glob("*/*.tif"))


# --- generation: layout, budget, idempotency, atomicity ------------------------------------


def test_generation_fits_the_size_budget(region):
    data_dir, files, _ = region
    size = sum(p.stat().st_size for p in (data_dir / "sources").rglob("*") if p.is_file())
    assert size < 500e6, f"sample region takes {size / 1e6:.0f} MB"
    assert all(p.exists() for p in files.paths)
    # the AlphaEarth request cache (sources/alphaearth/requests) is written beside the COGs by
    # the runs that read them, not by the generator
    cache = data_dir / "sources" / "alphaearth" / "requests"
    assert set(files.paths) | {files.manifest} == {
        p for p in (data_dir / "sources").rglob("*") if p.is_file() and cache not in p.parents
    }


def test_second_call_skips_and_keeps_files(region, monkeypatch):
    data_dir, files, _ = region
    mtimes = {p: p.stat().st_mtime_ns for p in files.paths}

    def no_world(*args, **kwargs):
        raise AssertionError("a complete sample region was generated again")

    # every generation starts with the latent world: a skipped call never builds it
    monkeypatch.setattr(generate, "build_world", no_world)
    again = generate_sample_region(data_dir, seed=SEED)
    assert again == files
    assert {p: p.stat().st_mtime_ns for p in files.paths} == mtimes


def test_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "tile.tif"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


# --- determinism -----------------------------------------------------------------------------


def test_dem_tile_reproduces_from_seed(region, world):
    data_dir, _, _ = region
    path = _tif_files(data_dir)[5]
    row, col = (int(v) for v in path.parent.name.split("_"))
    with rasterio.open(path) as src:
        written = src.read(1)
    tiles = [tuple(int(v) for v in p.parent.name.split("_")) for p in _tif_files(data_dir)]
    again = render_tile(world, detail_noise(SEED, tiles), row, col)
    np.testing.assert_array_equal(again, written)


def test_era5_and_darts_reproduce_from_seed(region, world, footprints):
    data_dir, _, _ = region
    hourly = simulate_era5(world)
    with xr.open_dataset(
        data_dir / "sources" / "era5" / "2021" / "07" / "data_stream-oper_stepType-instant.nc"
    ) as ds:
        july = (hourly.valid_time >= np.datetime64("2021-07-01")) & (
            hourly.valid_time < np.datetime64("2021-08-01")
        )
        np.testing.assert_array_equal(ds["t2m"].to_numpy(), hourly.t2m[july])
        np.testing.assert_array_equal(ds["sd"].to_numpy(), hourly.sd[july])
    years, tdd = thawing_degree_days(hourly)
    again = simulate_rts(world, years, tdd, hourly.latitude, hourly.longitude)
    again = drop_unimaged(again, coverage_layer(SEED, SAMPLE_REGION_BBOX), SAMPLE_REGION_BBOX)
    np.testing.assert_array_equal(again["area_m2"].to_numpy(), footprints["area_m2"].to_numpy())
    assert shapely.equals_exact(again.geometry.values, footprints.geometry.values, 1e-9).all()


def test_another_seed_gives_another_world(world):
    other = build_world(SEED + 1)
    assert not np.array_equal(other.elevation, world.elevation)
    assert not np.array_equal(other.ground_ice, world.ground_ice)
    tiles = [(40, 16)]
    assert not np.array_equal(
        detail_noise(SEED, tiles).values, detail_noise(SEED + 1, tiles).values
    )


# --- ArcticDEM ---------------------------------------------------------------------------------


def test_dem_tiles_are_arcticdem_cogs(region):
    data_dir, _, _ = region
    paths = _tif_files(data_dir)
    assert len(paths) == 16
    for path in paths:
        with rasterio.open(path) as src:
            assert src.driver == "GTiff"
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert src.profile["tiled"] and src.block_shapes == [(512, 512)]
            assert src.overviews(1) == [2, 4, 8]
            assert src.crs.to_epsg() == 3413
            assert src.res == (32.0, 32.0)
            assert (src.width, src.height) == (3125, 3125)
            assert src.nodata == -9999
            assert src.dtypes == ("float32",)
            left, bottom, right, top = src.bounds
        # The PGC tile index, computed here from the file's own bounds.
        row = math.floor((bottom + 4_000_000) / 100_000) + 1
        col = math.floor((left + 4_000_000) / 100_000) + 1
        assert (left, bottom) == ((col - 1) * 100_000 - 4_000_000, (row - 1) * 100_000 - 4_000_000)
        assert (right - left, top - bottom) == (100_000, 100_000)
        assert path.name == f"{row}_{col}_32m_v4.1_dem.tif"
        assert path.parent.name == f"{row}_{col}"


def test_dem_covers_the_box_with_plausible_heights(region):
    data_dir, _, _ = region
    to_polar = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
    minlon, minlat, maxlon, maxlat = SAMPLE_REGION_BBOX
    lon, lat = np.meshgrid(  # inside the box and south of the coast: all land
        np.linspace(minlon + 0.01, maxlon - 0.01, 30), np.linspace(minlat + 0.01, maxlat - 0.5, 30)
    )
    x, y = to_polar.transform(lon.ravel(), lat.ravel())
    values = []
    for path in _tif_files(data_dir):
        with rasterio.open(path) as src:
            inside = [
                (xi, yi)
                for xi, yi in zip(x, y, strict=True)
                if src.bounds.left <= xi < src.bounds.right
                and src.bounds.bottom < yi <= src.bounds.top
            ]
            values += [v[0] for v in src.sample(inside)]
    values = np.array(values)
    assert len(values) == x.size
    assert (values != -9999).all()
    valid = values[values != -9999]
    assert valid.min() > -20 and valid.max() < 2500
    assert np.ptp(valid) > 300  # mountains, plateau and delta, not a flat plane


# --- ERA5 ----------------------------------------------------------------------------------------


def _era5(data_dir: Path, year: int, month: int, step: str, **kwargs) -> xr.Dataset:
    path = data_dir / "sources" / "era5" / f"{year}" / f"{month:02d}"
    return xr.open_dataset(path / f"data_stream-oper_stepType-{step}.nc", **kwargs)


def test_era5_files_follow_the_new_cds_layout(region):
    data_dir, _, _ = region
    files = sorted((data_dir / "sources" / "era5").rglob("*.nc"))
    assert len(files) == 6 * 12 * 2  # Oct 2017 .. Sep 2023, instant + accum
    with _era5(data_dir, 2020, 2, "instant", decode_times=False) as ds:
        assert ds["t2m"].dims == ("valid_time", "latitude", "longitude")
        assert set(ds.data_vars) == {"t2m", "sd"}
        vt = ds["valid_time"]
        assert vt.dtype == np.int64
        assert vt.attrs["units"] == "seconds since 1970-01-01"
        assert vt.attrs["calendar"] == "proleptic_gregorian"
        assert int(vt[0]) == 1580515200  # 2020-02-01T00 UTC
        assert (np.diff(vt) == 3600).all() and vt.size == 29 * 24  # leap year
        lat, lon = ds["latitude"].to_numpy(), ds["longitude"].to_numpy()
        assert (np.diff(lat) == -0.25).all()
        assert (np.diff(lon) == 0.25).all()
        minlon, minlat, maxlon, maxlat = SAMPLE_REGION_BBOX
        assert lat[-1] <= minlat - 0.25 and lat[0] >= maxlat + 0.25
        assert lon[0] <= minlon - 0.25 and lon[-1] >= maxlon + 0.25
        assert ds["number"].ndim == 0 and int(ds["number"]) == 0
        assert ds["expver"].dims == ("valid_time",)
        assert set(ds["expver"].to_numpy().tolist()) == {"0001"}
        assert ds["t2m"].attrs["units"] == "K" and ds["t2m"].attrs["GRIB_paramId"] == 167
        assert ds["sd"].attrs["units"] == "m of water equivalent"
        assert ds["sd"].attrs["GRIB_paramId"] == 141
    with _era5(data_dir, 2020, 2, "accum") as ds:
        assert set(ds.data_vars) == {"tp", "sf"}
        assert ds["tp"].attrs["units"] == "m" and ds["tp"].attrs["GRIB_paramId"] == 228
        assert ds["sf"].attrs["units"] == "m of water equivalent"
        assert ds["sf"].attrs["GRIB_paramId"] == 144
        assert ds["valid_time"].dtype.kind == "M"  # CF time decodes


@pytest.mark.parametrize("year", range(2018, 2024))
def test_era5_climate_is_arctic(region, year):
    data_dir, _, _ = region
    with _era5(data_dir, year, 1, "instant") as jan, _era5(data_dir, year, 7, "instant") as jul:
        jan_daily = jan["t2m"].resample(valid_time="1D").mean() - 273.15
        jul_daily = jul["t2m"].resample(valid_time="1D").mean() - 273.15
        assert float(jan_daily.mean()) < -15
        assert float(jul_daily.mean()) > 5
        assert (jul_daily.mean(["latitude", "longitude"]) > 0).mean() > 0.9
        assert float(jul["sd"].isel(latitude=slice(2, None)).mean()) < 0.005  # snow gone
        assert float(jan["sd"].isel(latitude=slice(2, None)).mean()) > 0.02


def test_era5_accumulations_are_plausible(region):
    data_dir, _, _ = region
    totals = []
    for month in range(1, 13):
        calendar_year = 2021 if month < 10 else 2020  # Arctic year 2021
        with _era5(data_dir, calendar_year, month, "accum") as acc:
            tp, sf = acc["tp"].to_numpy(), acc["sf"].to_numpy()
            assert (tp >= 0).all() and (sf >= 0).all()
            assert (sf <= tp * 1.001 + 1e-9).all()
            totals.append(tp.sum(axis=0))
    annual_mm = np.sum(totals, axis=0)[2:] * 1000  # land rows
    assert 200 < annual_mm.mean() < 450


# --- DARTS ---------------------------------------------------------------------------------------


def test_darts_schema(region, footprints):
    data_dir, _, _ = region
    assert footprints.crs.to_epsg() == 4326
    assert list(footprints.columns) == ["id", "year", "area_m2", "geometry"]
    assert footprints["year"].dtype.kind == "i" and footprints["id"].is_unique
    assert set(footprints["year"]) == set(range(2018, 2024))
    assert footprints.geometry.is_valid.all()
    assert (footprints.geom_type == "Polygon").all()
    minlon, minlat, maxlon, maxlat = SAMPLE_REGION_BBOX
    west, south, east, north = footprints.total_bounds
    assert west >= minlon - 0.05 and east <= maxlon + 0.05
    assert south >= minlat - 0.05 and north <= maxlat + 0.05
    recomputed = footprints.to_crs("EPSG:6931").area.to_numpy()
    np.testing.assert_allclose(footprints["area_m2"], recomputed, rtol=1e-3)
    gpkg = data_dir / "sources" / "darts" / f"{DARTS_STEM}.gpkg"
    assert pyogrio.list_layers(gpkg)[:, 0].tolist() == [DARTS_STEM]
    from_gpkg = gpd.read_file(gpkg, engine="pyogrio")
    assert from_gpkg.crs.to_epsg() == 4326
    assert from_gpkg["id"].tolist() == footprints["id"].tolist()
    np.testing.assert_allclose(from_gpkg["area_m2"], footprints["area_m2"])


def test_darts_coverage_has_gaps_and_no_footprint_lies_in_one(region, footprints):
    data_dir, _, _ = region
    coverage = gpd.read_parquet(data_dir / "sources" / "darts" / COVERAGE_FILE)
    assert coverage.crs.to_epsg() == 4326
    assert sorted(coverage["year"]) == list(range(2018, 2024))
    box = shapely.box(*SAMPLE_REGION_BBOX)
    gaps = {int(r.year): box.difference(r.geometry) for r in coverage.itertuples()}
    laea = "EPSG:6931"
    gap_km2 = {
        y: gpd.GeoSeries([g], crs=4326).to_crs(laea).area.iloc[0] / 1e6 for y, g in gaps.items()
    }
    # every year misses some hundreds of km^2 inside the box, and never the same place
    assert all(400 < a < 8000 for a in gap_km2.values()), gap_km2
    assert all(coverage.geometry.within(box.buffer(1e-9)))
    assert len({g.wkb for g in gaps.values()}) == len(gaps)
    # the independent reading: no footprint of a year touches that year's gaps
    for year, gap in gaps.items():
        of_year = footprints[footprints["year"] == year]
        assert len(of_year) > 500
        assert not of_year.intersects(gap).any(), year
    # ... while the simulated slumps did fall in them: gaps removed footprints
    assert any(footprints[footprints["year"] != y].intersects(g).any() for y, g in gaps.items())


def test_darts_sizes_are_realistic(footprints):
    area = footprints["area_m2"]
    assert area.min() >= 200
    assert area.max() <= 650_000
    assert 1_000 < area.median() < 4_000
    assert area.quantile(0.99) > 50_000  # some slumps of tens of hectares
    assert 500 < len(footprints[footprints.year == 2023]) < 5_000


def test_darts_slumps_persist_and_grow(footprints):
    polar = footprints.to_crs("EPSG:3413")
    before, after = polar[polar.year == 2022], polar[polar.year == 2023]
    pairs = gpd.sjoin(before, after, predicate="intersects", lsuffix="a", rsuffix="b")
    persisted = pairs.index.unique()
    assert len(persisted) / len(before) > 0.7
    grew = (pairs["area_m2_b"] >= pairs["area_m2_a"] * 0.999).mean()
    assert grew > 0.9
    new = after[~after.index.isin(pairs["index_b"])]
    assert len(new) > 20


def test_training_labels_match_their_images(region, footprints):
    data_dir, _, _ = region
    folder = data_dir / "sources" / "darts" / "training-labels" / "peel_plateau"
    labels = gpd.read_file(folder / "TrainingLabel_peel_plateau.gpkg")
    images = gpd.read_file(folder / "ImageFootprints_peel_plateau.gpkg")
    assert labels.crs.to_epsg() == 4326 and images.crs.to_epsg() == 4326
    assert images["image_id"].is_unique
    assert set(labels["image_id"]) == set(images["image_id"])
    assert (images["date"].dt.month.isin([7, 8, 9])).all()
    polar_labels, polar_images = labels.to_crs("EPSG:3413"), images.to_crs("EPSG:3413")
    polar_footprints = footprints.to_crs("EPSG:3413")
    for image in polar_images.itertuples():
        drawn = polar_labels[polar_labels["image_id"] == image.image_id]
        assert len(drawn) > 5
        assert drawn.within(image.geometry.buffer(1.0)).all()
        same_year = polar_footprints[polar_footprints["year"] == image.date.year]
        assert drawn.geometry.apply(lambda g, fp=same_year: fp.intersects(g).any()).all()


def test_rts_are_denser_on_steep_terrain(region, footprints):
    """The signal models must find, measured on the written DEM at 128 m only."""
    data_dir, _, _ = region
    sources = [rasterio.open(p) for p in _tif_files(data_dir)]
    try:
        mosaic, transform = rasterio.merge.merge(sources, res=128, nodata=-9999)
    finally:
        for src in sources:
            src.close()
    z = np.where(mosaic[0] == -9999, np.nan, mosaic[0])
    dz_dy, dz_dx = np.gradient(z, 128.0)
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    centroids = footprints[footprints.year == 2023].to_crs("EPSG:3413").geometry.centroid
    rows, cols = rasterio.transform.rowcol(transform, centroids.x, centroids.y)
    at_rts = slope[np.asarray(rows), np.asarray(cols)]
    valid = np.isfinite(slope)
    flat, steep = valid & (slope < 2), valid & (slope >= 5)
    density_flat = (at_rts < 2).sum() / flat.sum()
    density_steep = (at_rts >= 5).sum() / steep.sum()
    assert density_steep > 5 * density_flat
