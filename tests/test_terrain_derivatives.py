"""Terrain derivatives against xarray-spatial, scipy, hand-computed values and analytic surfaces.

Conventions where xarray-spatial differs (see docs/terrain.md): it marks flat aspect -1 (ours
NaN) and reports curvature in 1/(100 m) (ours 1/m); both leave the outer ring NaN, as we do.
"""

import pickle

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
import xarray as xr
import xrspatial
from scipy import ndimage

from entropice_core.spatial.watermask import water_raster
from entropice_core.terrain.derivatives import (
    TerrainConfig,
    _block,
    derivatives_array,
    terrain_derivatives,
)

RES = 32.0


def grid(values: np.ndarray, res: float = RES, crs: str | None = "EPSG:3413") -> xr.DataArray:
    ny, nx = values.shape
    dem = xr.DataArray(
        values.astype(np.float32),
        dims=("y", "x"),
        coords={"y": 1e5 - res * (np.arange(ny) + 0.5), "x": 2e5 + res * (np.arange(nx) + 0.5)},
        name="dem",
    )
    return dem.rio.write_crs(crs) if crs else dem


def rough_dem(n: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = ndimage.gaussian_filter(rng.normal(size=(n, n)), 3) * 400 + 300
    z[40:47, 60:90] = np.nan  # a hole of nodata
    return z.astype(np.float32)


def compute(dem: xr.DataArray, **config) -> xr.Dataset:
    return terrain_derivatives(dem, TerrainConfig(**config)).compute()


@pytest.fixture(scope="module")
def rough():
    dem = grid(rough_dem())
    return dem, compute(dem, chunk=64, tpi_radii_m=(96.0, 320.0))


def test_slope_aspect_curvature_tri_roughness_equal_xarray_spatial(rough):
    dem, ours = rough
    slope = xrspatial.slope(dem).to_numpy()
    np.testing.assert_allclose(ours["slope"], slope, atol=2e-3, equal_nan=True)
    aspect = xrspatial.aspect(dem).to_numpy()
    aspect = np.where(aspect == -1, np.nan, aspect)  # xarray-spatial's flat marker
    got = ours["aspect"].to_numpy()
    assert np.array_equal(np.isnan(got), np.isnan(aspect))
    turn = np.abs((got - aspect + 180) % 360 - 180)
    assert np.nanmax(turn) < 0.05
    total = xrspatial.curvature(dem).to_numpy() / 100  # 1/(100 m) -> 1/m
    np.testing.assert_allclose(ours["curvature_total"], total, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(ours["tri"], xrspatial.tri(dem), atol=1e-3, equal_nan=True)
    rough = xrspatial.roughness(dem)
    np.testing.assert_allclose(ours["roughness"], rough, atol=1e-3, equal_nan=True)


def test_tpi_equals_a_masked_circular_convolution(rough):
    """Independent: scipy convolution with a disk kernel (centre excluded), valid pixels only."""
    dem, ours = rough
    z = dem.to_numpy().astype(np.float64)
    valid = np.isfinite(z)
    for radius_m in (96.0, 320.0):
        r = int(radius_m / RES)
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        kernel = (xx**2 + yy**2 <= r * r).astype(float)
        kernel[r, r] = 0
        total = ndimage.convolve(np.where(valid, z, 0), kernel, mode="constant")
        count = ndimage.convolve(valid.astype(float), kernel, mode="constant")
        with np.errstate(invalid="ignore"):
            expected = z - total / count
        got = ours[f"tpi_{radius_m:g}m"].to_numpy()
        # Heights are summed in integer units of 1/1024 m.
        np.testing.assert_allclose(got, expected, atol=2e-3, equal_nan=True)


def test_vrm_equals_sappington_from_xarray_spatial_slope_and_aspect(rough):
    dem, ours = rough
    slope = np.radians(xrspatial.slope(dem).to_numpy().astype(float))
    aspect = np.radians(xrspatial.aspect(dem).to_numpy().astype(float))
    aspect = np.where(np.degrees(aspect) == -1, 0.0, aspect)  # flat: the normal points up
    x, y, z = np.sin(slope) * np.sin(aspect), np.sin(slope) * np.cos(aspect), np.cos(slope)
    for w in (3, 9):
        got = ours[f"vrm_{w}"].to_numpy()
        h = w // 2
        for i, j in [(20, 20), (80, 100), (40 + 3, 58), (150, 150), (5, 120)]:
            window = (slice(i - h, i + h + 1), slice(j - h, j + h + 1))
            ok = np.isfinite(x[window])
            if not np.isfinite(x[i, j]):
                assert np.isnan(got[i, j])
                continue
            length = np.sqrt(x[window][ok].sum() ** 2 + y[window][ok].sum() ** 2)
            length = np.hypot(length, z[window][ok].sum())
            assert got[i, j] == pytest.approx(1 - length / ok.sum(), abs=1e-5)


def test_plane_has_known_slope_and_aspect_and_no_curvature():
    ax, ay = 0.05, -0.12  # dz/dx (east) and dz/dy (north)
    n = 40
    x = RES * np.arange(n)
    y = -RES * np.arange(n)[:, None]  # rows run south
    dem = grid(300 + ax * x + ay * y)
    got = compute(dem, tpi_radii_m=(96.0,), vrm_windows=(3,)).isel(y=slice(6, -6), x=slice(6, -6))
    slope = np.degrees(np.arctan(np.hypot(ax, ay)))
    aspect = np.degrees(np.arctan2(-ax, -ay)) % 360  # downslope, clockwise from north
    np.testing.assert_allclose(got["slope"], slope, rtol=1e-4)
    np.testing.assert_allclose(got["aspect"], aspect, atol=1e-3)
    np.testing.assert_allclose(got["northness"], np.cos(np.radians(aspect)), atol=1e-5)
    np.testing.assert_allclose(got["eastness"], np.sin(np.radians(aspect)), atol=1e-5)
    for name in ("curvature_profile", "curvature_plan", "curvature_total"):
        np.testing.assert_allclose(got[name], 0, atol=1e-6)
    np.testing.assert_allclose(got["tri"], RES * np.sqrt(6 * (ax**2 + ay**2)), rtol=1e-4)
    np.testing.assert_allclose(got["roughness"], 2 * RES * (abs(ax) + abs(ay)), rtol=1e-4)
    np.testing.assert_allclose(got["tpi_96m"], 0, atol=2e-3)
    np.testing.assert_allclose(got["vrm_3"], 0, atol=1e-6)


def test_flat_ground_has_no_aspect_and_zero_curvature():
    got = compute(grid(np.full((20, 20), 50.0)), derivatives=("slope", "aspect", "curvature"))
    inner = got.isel(y=slice(1, -1), x=slice(1, -1))
    assert np.isnan(inner["aspect"]).all() and (inner["slope"] == 0).all()
    assert (inner["northness"] == 0).all() and (inner["curvature_profile"] == 0).all()


def test_quadratic_surface_curvatures_equal_the_analytic_ones():
    """Central differences are exact on quadratics: compare with the analytic derivatives."""
    a, b, c, d, e = 2e-5, -1e-5, 1.5e-5, 0.03, -0.02
    n = 61
    x = RES * (np.arange(n) - n // 2)
    y = -RES * (np.arange(n)[:, None] - n // 2)
    dem = grid(100 + a * x**2 + b * y**2 + c * x * y + d * x + e * y)
    got = compute(dem, derivatives=("curvature",)).isel(y=slice(1, -1), x=slice(1, -1))
    xx, yy = np.broadcast_arrays(x[1:-1], y[1:-1])
    zx, zy = 2 * a * xx + c * yy + d, 2 * b * yy + c * xx + e
    zxx, zyy, zxy = 2 * a, 2 * b, c
    g2 = zx**2 + zy**2
    profile = -(zxx * zx**2 + 2 * zxy * zx * zy + zyy * zy**2) / g2
    plan = (zxx * zy**2 - 2 * zxy * zx * zy + zyy * zx**2) / g2
    scale = 1e-5
    np.testing.assert_allclose(got["curvature_total"], -(zxx + zyy), atol=scale * 1e-2)
    np.testing.assert_allclose(got["curvature_profile"], profile, atol=scale * 1e-2)
    np.testing.assert_allclose(got["curvature_plan"], plan, atol=scale * 1e-2)


def test_paraboloid_bowl():
    k = 1e-4
    n = 41
    x = RES * (np.arange(n) - n // 2)
    dem = grid(k * (x**2 + x[:, None] ** 2))
    got = compute(dem, derivatives=("curvature",)).isel(y=slice(1, -1), x=slice(1, -1))
    np.testing.assert_allclose(got["curvature_total"], -4 * k, rtol=1e-3)
    off_apex = np.ones(got["curvature_profile"].shape, bool)
    off_apex[n // 2 - 1, n // 2 - 1] = False
    np.testing.assert_allclose(got["curvature_profile"].to_numpy()[off_apex], -2 * k, rtol=1e-3)
    np.testing.assert_allclose(got["curvature_plan"].to_numpy()[off_apex], 2 * k, rtol=1e-3)


@pytest.mark.parametrize("chunk", [64, 100, 250])
def test_tiled_equals_untiled_exactly(chunk):
    dem = grid(rough_dem(250, seed=3))
    config = {"tpi_radii_m": (96.0, 480.0), "vrm_windows": (3, 9), "strip_rows": 7}
    whole = compute(dem, chunk=250, **config)
    tiled = compute(dem, chunk=chunk, **{**config, "strip_rows": 64})
    for name in whole.data_vars:
        np.testing.assert_array_equal(tiled[name], whole[name], err_msg=name)


def test_all_nodata_tiles_give_nan_and_leave_the_rest_unchanged():
    z = rough_dem(256, seed=1)
    z[:128, :128] = np.nan
    got = compute(grid(z), chunk=128)
    assert all(np.isnan(got[v][:120, :120]).all() for v in got.data_vars)
    alone = compute(grid(z[:, 128:]), chunk=128)
    inner = got.isel(x=slice(128 + 40, None))  # beyond the halo of the cut
    for name in got.data_vars:
        np.testing.assert_array_equal(inner[name], alone[name].isel(x=slice(40, None)))
    empty = compute(grid(np.full((70, 70), np.nan)), chunk=64)
    assert all(np.isnan(empty[v]).all() for v in empty.data_vars)


def test_south_up_rasters_give_the_same_derivatives():
    dem = grid(rough_dem(100))
    flipped = dem.isel(y=slice(None, None, -1))
    a, b = compute(dem), compute(flipped).isel(y=slice(None, None, -1))
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name], b[name])


def test_dem_without_crs_or_in_degrees_is_refused():
    with pytest.raises(ValueError, match=r"no CRS.*write_crs"):
        terrain_derivatives(grid(rough_dem(20), crs=None))
    with pytest.raises(ValueError, match="reproject"):
        terrain_derivatives(grid(rough_dem(20), res=0.001, crs="EPSG:4326"))
    with pytest.raises(ValueError, match="odd"):
        TerrainConfig(vrm_windows=(4,))


def test_water_is_masked_before_the_derivatives():
    dem = grid(rough_dem(128))
    lake = shapely.box(2e5 + 32 * 20, 1e5 - 32 * 60, 2e5 + 32 * 50, 1e5 - 32 * 30)
    water = gpd.GeoDataFrame(geometry=[lake], crs="EPSG:3413").to_crs(4326)
    mask = water_raster(water, dem.chunk(50)).to_numpy()
    projected = water.to_crs(3413).geometry.iloc[0]
    expected = rasterio.features.geometry_mask(
        [projected], dem.shape, dem.rio.transform(), invert=True
    )
    assert (mask != expected).sum() <= 4 and mask.sum() > 800  # a reprojected box: edges may wobble
    got = terrain_derivatives(dem, TerrainConfig(), water=xr.DataArray(mask, dims=dem.dims))
    got = got.compute()
    assert np.isnan(got["slope"].to_numpy()[mask]).all()
    assert np.isnan(got["tpi_160m"].to_numpy()[mask]).all()
    assert np.isfinite(got["slope"].to_numpy()[100, 100])


def test_cupy_backend_gives_the_same_numbers():
    pytest.importorskip("cupy")
    dem = grid(rough_dem(200))
    cpu = compute(dem, chunk=128)
    gpu = compute(dem, chunk=128, backend="cupy")
    for name in cpu.data_vars:
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-5, atol=1e-5, equal_nan=True)


def test_the_array_code_of_the_gpu_path_equals_the_cpu_kernels():
    z = rough_dem(120, seed=5)
    config = TerrainConfig(tpi_radii_m=(96.0,), vrm_windows=(3,))
    halo = config.halo(RES, RES)
    padded = np.pad(z, halo, constant_values=np.nan)
    kernels = derivatives_array(padded, halo, RES, RES, config)
    array = _block(padded, halo, RES, RES, config, np)
    # both float32, the kernels take neighbour differences first: rounding differs
    np.testing.assert_allclose(array, kernels, rtol=1e-4, atol=2e-3, equal_nan=True)


def test_backends_use_the_project_vocabulary():
    from entropice_core.config import resolve_backend

    assert TerrainConfig().backend == resolve_backend("cpu") == "numpy"
    assert TerrainConfig(backend=resolve_backend("cuda")).backend == "cupy"
    for name in ("torch", "cuda", "gpu"):  # a device name is not a backend
        with pytest.raises(ValueError, match="numpy, cupy"):
            TerrainConfig(backend=name)


def test_the_water_polygons_are_one_task_and_not_copied_into_every_chunk():
    # a lake of 20,000 vertices: copied into each chunk's task, every spec on a worker would
    # carry its 300 KB (at 16x the sample's area 1.6 MB, times 2,401 chunks)
    dem = grid(rough_dem(128))
    centre = shapely.Point(2e5 + 32 * 64, 1e5 - 32 * 64)
    lake = centre.buffer(32 * 30, quad_segs=5000)
    water = gpd.GeoDataFrame(geometry=[lake], crs="EPSG:3413").to_crs(4326)
    mask = water_raster(water, dem.chunk(32)).data
    polygons = len(pickle.dumps(shapely.get_coordinates(lake)))
    graph = dict(mask.__dask_graph__())
    chunks = [graph[key] for row in mask.__dask_keys__() for key in row]
    assert len(chunks) == 16
    assert all(len(pickle.dumps(task)) < polygons / 20 for task in chunks)
    assert sum(len(pickle.dumps(task)) > polygons / 2 for task in graph.values()) == 1
    assert mask.compute().sum() == pytest.approx(np.pi * 30**2, rel=0.02)
