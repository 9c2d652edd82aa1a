"""AlphaEarth embeddings at the client boundary: a fake ``ee`` module answers reduceRegions from
the sample COGs (pixel-centre rule, as Earth Engine's reducers sample pixels), the COG path is
checked against exactextract on the dequantised rasters, and the batching, retries and cache
are checked through the fake's call log."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from exactextract import exact_extract

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.ingest import alphaearth as ae
from entropice_core.sample import alphaearth as sample_ae
from entropice_core.sample.world import build_world
from entropice_core.spatial.grids import grid_cells

#: A small box across the border of UTM zones 8 and 9 (132 W), so cells span two files.
BBOX = (-133.2, 67.7, -131.0, 68.3)
YEARS = [2019, 2023]
ALL_LAND = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)
SECRET = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC-not-a-real-key\n"


@pytest.fixture(scope="module")
def cog_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alphaearth")
    sample_ae.write_embeddings(build_world(7, BBOX), root)
    return root


@pytest.fixture(scope="module", params=["healpix_9", "h3_5"])
def cells(request) -> tuple[GridSpec, gpd.GeoDataFrame]:
    spec = GridSpec.from_key(request.param)
    box = AreaOfInterest.from_bbox(",".join(str(v) for v in BBOX))
    return spec, grid_cells(spec, box, ALL_LAND)


@pytest.fixture(scope="module")
def h3_cells() -> tuple[GridSpec, gpd.GeoDataFrame]:
    """One level for the batching, retry and cache tests."""
    spec = GridSpec.from_key("h3_5")
    box = AreaOfInterest.from_bbox(",".join(str(v) for v in BBOX))
    return spec, grid_cells(spec, box, ALL_LAND)


# ----------------------------------------------------------------------------- the fake ee


class HttpError(Exception):
    """Like googleapiclient's HttpError: the status sits on ``resp.status``."""

    def __init__(self, status: int) -> None:
        super().__init__(f"<HttpError {status} when requesting ...>")
        self.resp = type("Resp", (), {"status": status})()


class FakeEE:
    """The slice of the ``ee`` API the client uses, answering from the COGs under ``root``.

    ``fail(n)`` is asked before the n-th reduceRegions answer (from 0) and may return an
    exception to raise instead.
    """

    def __init__(self, root: Path, fail=None) -> None:
        self.root = root
        self.fail = fail or (lambda n: None)
        self.calls: list[tuple[int, int, dict]] = []
        self.credentials: dict | None = None
        self.init: dict | None = None
        fake = self

        class ServiceAccountCredentials:
            def __init__(self, email, key_file=None, key_data=None):
                fake.credentials = {"email": email, "key_file": key_file, "key_data": key_data}

        class Geometry:
            def __init__(self, geojson, proj=None, geodesic=True):
                assert geodesic is False  # cells are planar in lon/lat, as the engine uses them
                self.shape = shapely.geometry.shape(geojson)

        class Feature:
            def __init__(self, geometry, properties):
                self.geometry, self.properties = geometry, properties

        class FeatureCollection:
            def __init__(self, features):
                self.features = features

            def geometry(self):
                return shapely.union_all([f.geometry.shape for f in self.features])

        class Reducer:
            @staticmethod
            def mean():
                return "mean"

        class Image:
            def __init__(self, year, ops=()):
                self.year, self.ops = year, ops

            def __getattr__(self, name):
                return lambda *a, **k: Image(self.year, (*self.ops, name))

            def reduceRegions(self, collection, reducer, scale, crs, tileScale):
                assert reducer == "mean" and scale == 10 and crs.startswith("EPSG:326")
                return Answer(self.year, collection, {"scale": scale, "crs": crs})

        class Answer:
            def __init__(self, year, collection, kwargs):
                self.year, self.collection, self.kwargs = year, collection, kwargs

            def getInfo(self):
                n = len(fake.calls)
                fake.calls.append((self.year, len(self.collection.features), self.kwargs))
                error = fake.fail(n)
                if error is not None:
                    raise error
                return fake.answer(self.year, self.collection.features)

        class ImageCollection:
            def __init__(self, name, year=None):
                assert name == ae.COLLECTION
                self.year = year

            def filterDate(self, start, end):
                assert end[:4] == str(int(start[:4]) + 1)
                return ImageCollection(ae.COLLECTION, int(start[:4]))

            def filterBounds(self, region):
                return self

            def mosaic(self):
                return Image(self.year)

        def initialize(creds, project=None, opt_url=None):
            fake.init = {"project": project, "opt_url": opt_url}

        self.module = type(
            "ee",
            (),
            {
                "ServiceAccountCredentials": ServiceAccountCredentials,
                "Initialize": staticmethod(initialize),
                "Geometry": Geometry,
                "Feature": Feature,
                "FeatureCollection": FeatureCollection,
                "Reducer": Reducer,
                "ImageCollection": ImageCollection,
            },
        )

    def answer(self, year: int, features) -> dict:
        """Pixel-centre means over the valid pixels of all files; valid fraction = valid pixel
        area / cell area, both in each file's CRS."""
        geoms = gpd.GeoSeries([f.geometry.shape for f in features], crs="EPSG:4326")
        n = len(features)
        total, count, valid = np.zeros((n, 64)), np.zeros(n), np.zeros(n)
        for path in ae.find_cogs(self.root, year):
            with rasterio.open(path) as src:
                values = ae.dequantize(src.read(), np.float64)
                transform, crs, shape = src.transform, src.crs, (src.height, src.width)
            projected = geoms.segmentize(0.01).to_crs(crs)
            label = rasterio.features.rasterize(
                ((g, i + 1) for i, g in enumerate(projected)),
                out_shape=shape,
                transform=transform,
                fill=0,
                dtype="int32",
            ).ravel()
            ok = (label > 0) & ~np.isnan(values[0].ravel())
            idx = label[ok] - 1
            for b in range(64):
                total[:, b] += np.bincount(idx, values[b].ravel()[ok], minlength=n)
            hits = np.bincount(idx, minlength=n)
            count += hits
            valid += hits * abs(transform.a * transform.e) / projected.area.to_numpy()
        out = []
        for i, f in enumerate(features):
            props = dict(f.properties, valid_fraction=float(min(valid[i], 1.0)))
            if count[i] > 0:
                props.update({b: total[i, j] / count[i] for j, b in enumerate(ae.BANDS)})
            out.append({"type": "Feature", "properties": props})
        return {"type": "FeatureCollection", "features": out}


def ee_client(fake: FakeEE, cache_dir: Path | None, **kw) -> ae.EarthEngineClient:
    requests = kw.pop("requests", ae.RequestConfig(concurrency=4, initial_backoff_s=1.0))
    return ae.EarthEngineClient(
        "svc@project.iam.gserviceaccount.com",
        "my-project",
        key_data=SECRET,
        cache=ae.ClusterCache(cache_dir) if cache_dir else None,
        batch=kw.pop("batch", ae.BatchConfig(max_cells=40, max_extent_km=150)),
        requests=requests,
        ee_module=fake.module,  # type: ignore[arg-type]
        sleep=kw.pop("sleep", lambda s: None),
    )


# ----------------------------------------------------------------------------- tests


def test_quantisation_round_trip():
    q = np.arange(-128, 128, dtype=np.int8)
    v = ae.dequantize(q, np.float64)
    assert np.isnan(v[0]) and np.all(np.isfinite(v[1:]))
    assert np.array_equal(ae.quantize(v), q)
    assert v[-1] == pytest.approx((127 / 127.5) ** 2) and v[1] == -v[-1]


def test_sample_cogs_follow_the_layout(cog_root: Path):
    zones = ae.utm_zones_for(BBOX)
    assert zones == [8, 9]
    for year in sample_ae.YEARS:
        paths = ae.find_cogs(cog_root, year)
        assert [p.parent.name for p in paths] == ["8N", "9N"]
        with rasterio.open(paths[0]) as src:
            assert src.count == 64 and src.dtypes[0] == "int8" and src.nodata == -128
            assert src.descriptions == ae.BANDS and src.crs.to_epsg() == 32608
            q = src.read(window=((0, 40), (0, src.width)))
    masked = q == -128
    assert np.array_equal(masked, np.broadcast_to(masked[0], masked.shape))  # all bands at once
    v = ae.dequantize(q[:, ~masked[0]], np.float64)
    # unit vectors up to the int8 rounding
    assert np.allclose(np.linalg.norm(v, axis=0), 1.0, atol=0.03)


def _exactextract_means(frame: gpd.GeoDataFrame, root: Path, year: int, tmp_path: Path):
    """Per-cell means of the dequantised COGs of ``year`` by exactextract, and whether each
    cell has a valid pixel."""
    total, count = np.zeros((len(frame), 64)), np.zeros(len(frame))
    polys = frame[["geometry"]].assign(i=np.arange(len(frame)))
    for path in ae.find_cogs(root, year):
        # the dequantised raster as float32 GeoTIFF, read by exactextract's own GDAL source
        with rasterio.open(path) as src:
            v = ae.dequantize(src.read(), np.float32)
            profile = src.profile | {"driver": "GTiff", "dtype": "float32", "nodata": -9999.0}
        flat = tmp_path / f"{path.stem}.tif"
        with rasterio.open(flat, "w", **{k: profile[k] for k in ("driver", "dtype", "nodata",
                           "width", "height", "count", "crs", "transform")}) as dst:  # fmt: skip
            dst.write(np.nan_to_num(v, nan=-9999.0))
        projected = polys.assign(geometry=polys.geometry.segmentize(0.01).to_crs(profile["crs"]))
        out = exact_extract(str(flat), projected, ["sum", "count"], output="pandas",
                            include_cols=["i"])  # fmt: skip
        i = out["i"].to_numpy()
        for b in range(64):
            total[i, b] += np.nan_to_num(out[f"band_{b + 1}_sum"].to_numpy())
        count[i] += out["band_1_count"].to_numpy()
    has = count > 0
    return total[has] / count[has, None], has


def test_cog_path_equals_exactextract(cog_root: Path, cells, tmp_path: Path):
    spec, frame = cells
    result = ae.CogClient(cog_root).embeddings(frame, spec, YEARS)
    ds = result.dataset
    assert ds["A00"].dims == ("cell_ids", "year") and list(ds.year.values) == YEARS
    assert ds.cell_ids.attrs == spec.xdggs_attrs
    year = YEARS[1]
    expected, has = _exactextract_means(frame, cog_root, year, tmp_path)
    assert has.sum() > 10
    mine = np.stack([ds[b].sel(year=year).to_numpy() for b in ae.BANDS], axis=1)
    np.testing.assert_allclose(mine[has], expected, atol=1e-6, rtol=0)
    assert np.isnan(mine[~has]).all()
    vf = ds["valid_fraction"].sel(year=year).to_numpy()
    assert np.all((vf >= 0) & (vf <= 1)) and np.all(vf[~has] == 0)
    # a mean of unit vectors is shorter than one, and not renormalised
    norms = np.linalg.norm(mine[has], axis=1)
    assert np.all(norms < 1.0) and np.all(norms > 0.3)


@pytest.mark.parametrize("window_bytes", [ae.WINDOW_BYTES, 2**18], ids=["whole-files", "strips"])
def test_one_pass_over_several_levels_equals_exactextract(cog_root: Path, tmp_path, window_bytes):
    """Two levels of two grids from one pass over each file, the files whole or cut into
    strips of 256 KiB (sums, counts and valid fractions add up over strips), each equal to
    exactextract; the atoms are found once per file grid, not once per year."""
    box = AreaOfInterest.from_bbox(",".join(str(v) for v in BBOX))
    levels = {
        key: grid_cells(GridSpec.from_key(key), box, ALL_LAND) for key in ("h3_5", "healpix_8")
    }
    client = ae.CogClient(cog_root, window_bytes=window_bytes)
    found = client.embeddings_levels(levels, YEARS)
    files = len(ae.find_cogs(cog_root, YEARS[0]))
    if window_bytes == ae.WINDOW_BYTES:
        assert client.maps_built == files  # once per file grid, whatever the number of years
    else:
        assert client.maps_built > 2 * files  # every file cut into strips
    for key, frame in levels.items():
        ds = found[key].dataset
        assert found[key].stats.requests == len(YEARS) and found[key].stats.cached == 0
        assert ds.cell_ids.attrs == GridSpec.from_key(key).xdggs_attrs
        expected, has = _exactextract_means(frame, cog_root, YEARS[1], tmp_path)
        assert has.sum() > 3
        mine = np.stack([ds[b].sel(year=YEARS[1]).to_numpy() for b in ae.BANDS], axis=1)
        np.testing.assert_allclose(mine[has], expected, atol=1e-6, rtol=0)
        assert np.isnan(mine[~has]).all()
        vf = ds["valid_fraction"].to_numpy()
        assert np.all((vf >= 0) & (vf <= 1)) and (vf > 0.9).any()


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed")
def test_the_gpu_pass_without_cupy_names_the_extra(cog_root: Path):
    box = AreaOfInterest.from_bbox(",".join(str(v) for v in BBOX))
    levels = {"h3_5": grid_cells(GridSpec.from_key("h3_5"), box, ALL_LAND)}
    with pytest.raises(ImportError, match="uv sync --extra gpu"):
        ae.CogClient(cog_root, device="cuda").embeddings_levels(levels, YEARS[:1])


def test_levels_cache_answers_each_level_and_year_once(cog_root: Path, tmp_path: Path):
    box = AreaOfInterest.from_bbox(",".join(str(v) for v in BBOX))
    levels = {
        key: grid_cells(GridSpec.from_key(key), box, ALL_LAND) for key in ("h3_5", "healpix_8")
    }
    cache = ae.ClusterCache(tmp_path)
    first = ae.CogClient(cog_root, cache=cache).embeddings_levels(levels, [2019])
    again = ae.CogClient(cog_root, cache=cache).embeddings_levels(levels, [2023, 2019])
    for key in levels:
        assert (first[key].stats.requests, first[key].stats.cached) == (1, 0)
        assert (again[key].stats.requests, again[key].stats.cached) == (1, 1)
        for band in ("A00", "A63", "valid_fraction"):
            np.testing.assert_array_equal(
                again[key].dataset[band].sel(year=2019), first[key].dataset[band].sel(year=2019)
            )


def test_cell_maps_built_once_per_file_grid(cog_root: Path, cells):
    spec, frame = cells
    client = ae.CogClient(cog_root)
    client.embeddings(frame, spec, [2018, 2020, 2022])
    assert client.maps_built == 2  # two zones, three years


def test_earth_engine_path_agrees_with_cog_path(cog_root: Path, cells, tmp_path: Path):
    spec, frame = cells
    fake = FakeEE(cog_root)
    ee_ds = ee_client(fake, tmp_path).embeddings(frame, spec, YEARS).dataset
    cog_ds = ae.CogClient(cog_root).embeddings(frame, spec, YEARS).dataset
    assert fake.init == {"project": "my-project", "opt_url": ae.HIGH_VOLUME_URL}
    assert fake.credentials["key_data"] == SECRET
    full = (cog_ds["valid_fraction"] > 0.9).to_numpy()
    assert full.sum() > 5
    a = np.stack([ee_ds[b].to_numpy()[full] for b in ae.BANDS])
    b = np.stack([cog_ds[b].to_numpy()[full] for b in ae.BANDS])
    # Pixel-centre sampling (EE) vs exact coverage (COG) differ only in the cells' edge pixels:
    # about the int8 quantisation step near typical values (|v| ~ 0.12: step ~ 0.005).
    assert np.abs(a - b).max() < 0.01
    vf_ee = ee_ds["valid_fraction"].to_numpy()[full]
    assert np.abs(vf_ee - cog_ds["valid_fraction"].to_numpy()[full]).max() < 0.05


def test_clusters_partition_cells_within_limits():
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(-180, 180, 3000), np.degrees(np.arcsin(rng.uniform(0.77, 0.99, 3000)))
    frame = gpd.GeoDataFrame(
        {"cell_id": np.arange(3000, dtype=np.uint64) * 7 + 1},
        geometry=shapely.box(lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01),
        crs="EPSG:4326",
    )
    config = ae.BatchConfig(max_cells=150, max_extent_km=800)
    labels = ae.cluster_cells(frame, config)
    assert labels.shape == (3000,)
    k = labels.max() + 1
    assert set(np.unique(labels)) == set(range(k))  # every cell in exactly one cluster
    xy = np.column_stack(
        __import__("pyproj")
        .Transformer.from_crs("EPSG:4326", "EPSG:6931", always_xy=True)
        .transform(lon, lat)
    )
    for j in range(k):
        members = xy[labels == j]
        assert len(members) <= config.max_cells
        assert np.ptp(members, axis=0).max() / 1000 <= config.max_extent_km
    # deterministic
    assert np.array_equal(labels, ae.cluster_cells(frame, config))


@pytest.mark.parametrize("status", [429, 503])
def test_transient_errors_are_retried_then_fail_with_cluster_year_attempts(
    cog_root: Path, h3_cells, status: int
):
    spec, frame = h3_cells
    delays: list[float] = []
    fake = FakeEE(cog_root, fail=lambda n: HttpError(status))
    requests = ae.RequestConfig(concurrency=1, max_attempts=4, initial_backoff_s=2.0)
    client = ee_client(fake, None, requests=requests, sleep=delays.append,
                       batch=ae.BatchConfig(max_cells=4000))  # fmt: skip
    with pytest.raises(ae.RequestFailed) as info:
        client.embeddings(frame, spec, [2021])
    message = str(info.value)
    assert "cluster 0" in message and "year 2021" in message and "4 attempts" in message
    assert f"HTTP {status}" in message
    assert len(fake.calls) == 4 and len(delays) == 3
    # exponential backoff with jitter in [0.5, 1] of 2, 4, 8 s
    for d, base in zip(delays, [2.0, 4.0, 8.0], strict=True):
        assert 0.5 * base <= d <= base


def test_transient_errors_then_success(cog_root: Path, h3_cells):
    spec, frame = h3_cells
    fake = FakeEE(cog_root, fail=lambda n: HttpError(429) if n < 2 else None)
    requests = ae.RequestConfig(concurrency=1, max_attempts=5)
    result = ee_client(fake, None, requests=requests).embeddings(frame, spec, [2021])
    assert result.stats.attempts == result.stats.requests + 2
    assert np.isfinite(result.dataset["A00"].to_numpy()).any()


def test_other_errors_are_not_retried(cog_root: Path, h3_cells):
    spec, frame = h3_cells
    fake = FakeEE(cog_root, fail=lambda n: ValueError("User memory limit exceeded"))
    with pytest.raises(ae.RequestFailed, match="after 1 attempts"):
        ee_client(fake, None).embeddings(frame, spec, [2021])


def test_time_bound_stops_retries(cog_root: Path, h3_cells):
    spec, frame = h3_cells
    fake = FakeEE(cog_root, fail=lambda n: HttpError(429))
    requests = ae.RequestConfig(
        concurrency=1, max_attempts=100, initial_backoff_s=10.0, total_timeout_s=30.0
    )
    with pytest.raises(ae.RequestFailed, match="30 s bound"):
        ee_client(fake, None, requests=requests).embeddings(frame, spec, [2021])
    assert len(fake.calls) < 100


BATCH = ae.BatchConfig(max_cells=5, max_extent_km=150)


def n_clusters_of(frame: gpd.GeoDataFrame) -> int:
    return int(ae.cluster_cells(frame, BATCH).max()) + 1


def test_killed_run_resumes_from_cache(cog_root: Path, h3_cells, tmp_path: Path):
    spec, frame = h3_cells
    assert n_clusters_of(frame) >= 4
    boom = RuntimeError("killed")
    first = FakeEE(cog_root, fail=lambda n: boom if n == 3 else None)
    with pytest.raises(ae.RequestFailed, match="killed"):
        ee_client(first, tmp_path, batch=BATCH).embeddings(frame, spec, YEARS)
    n_clusters = ae.cluster_cells(frame, BATCH).max() + 1
    cached = len(list(tmp_path.rglob("*.npz")))
    assert 3 <= cached < 2 * n_clusters

    second = FakeEE(cog_root)
    resumed = ee_client(second, tmp_path, batch=BATCH).embeddings(frame, spec, YEARS)
    assert len(second.calls) == 2 * n_clusters - cached  # only the missing clusters
    assert resumed.stats.cached == cached

    third = FakeEE(cog_root)
    again = ee_client(third, tmp_path, batch=BATCH).embeddings(frame, spec, YEARS)
    assert third.calls == [] and again.stats.requests == 0  # a finished year costs nothing
    for band in ("A00", "A63", "valid_fraction"):
        np.testing.assert_array_equal(again.dataset[band], resumed.dataset[band])
    fresh = ee_client(FakeEE(cog_root), None, batch=BATCH).embeddings(frame, spec, YEARS).dataset
    np.testing.assert_allclose(again.dataset["A17"], fresh["A17"], rtol=0, atol=0)


def test_missing_credentials_one_line():
    with pytest.raises(ae.CredentialsMissing) as info:
        ae.EarthEngineClient(None, "proj")
    message = str(info.value)
    assert "\n" not in message
    assert ae.ENV_SERVICE_ACCOUNT in message and ae.ENV_KEY_FILE in message
    assert ae.ENV_PROJECT not in message


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ee", None)
    client = ae.EarthEngineClient("svc@x", "proj", key_file="/nonexistent.json")
    with pytest.raises(ImportError, match="'earthengine' extra"):
        _ = client.ee


def test_no_key_material_in_logs_or_output(cog_root: Path, h3_cells, caplog, tmp_path: Path):
    spec, frame = h3_cells
    caplog.set_level(logging.DEBUG)
    calls = iter([HttpError(429)])
    fake = FakeEE(cog_root, fail=lambda n: next(calls, None))
    client = ee_client(fake, tmp_path)
    result = client.embeddings(frame, spec, [2020])
    assert "my-project" in caplog.text  # it did log
    secret_parts = ["PRIVATE KEY", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"]
    for text in (caplog.text, repr(client), str(result.dataset.attrs), str(result.stats)):
        assert not any(part in text for part in secret_parts)


# ----------------------------------------------------------------------------- offline, cached


def test_cached_cog_client_equals_one_pass_and_counts_requests(cog_root: Path, h3_cells, tmp_path):
    """The offline client of the Dagster resource: per (cluster, year) requests answered from
    the files, each cropped to its cluster, give exactly the one-pass result; a second run is
    all cache; a new year costs only its own requests."""
    spec, frame = h3_cells
    whole = ae.CogClient(cog_root).embeddings(frame, spec, YEARS).dataset
    k = n_clusters_of(frame)
    client = ae.CogClient(cog_root, cache=ae.ClusterCache(tmp_path), batch=BATCH)
    first = client.embeddings(frame, spec, YEARS[:1])
    assert (first.stats.requests, first.stats.cached, first.stats.clusters) == (k, 0, k)
    both = ae.CogClient(cog_root, cache=ae.ClusterCache(tmp_path), batch=BATCH).embeddings(
        frame, spec, YEARS
    )
    assert (both.stats.requests, both.stats.cached) == (k, k)  # only the added year
    for band in ("A00", "A31", "A63", "valid_fraction"):
        np.testing.assert_allclose(both.dataset[band], whole[band], rtol=0, atol=1e-6)
    again = ae.CogClient(cog_root, cache=ae.ClusterCache(tmp_path), batch=BATCH).embeddings(
        frame, spec, YEARS
    )
    assert (again.stats.requests, again.stats.cached) == (0, 2 * k)


def test_cached_cog_answers_follow_the_files(cog_root: Path, h3_cells, tmp_path):
    """Files replaced (regenerated with another seed, a new mirror) are not answered from an
    old cache: the cache of a year is keyed by its files' names, sizes and times."""
    spec, frame = h3_cells
    root = tmp_path / "cogs"
    for path in ae.find_cogs(cog_root, 2019):
        target = root / path.relative_to(cog_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    cache = ae.ClusterCache(tmp_path / "cache")
    ae.CogClient(root, cache=cache).embeddings(frame, spec, [2019])
    assert ae.CogClient(root, cache=cache).embeddings(frame, spec, [2019]).stats.requests == 0
    other = ae.find_cogs(cog_root, 2023)[0]  # another year's content under 2019's name
    ae.find_cogs(root, 2019)[0].write_bytes(other.read_bytes())
    redone = ae.CogClient(root, cache=cache).embeddings(frame, spec, [2019])
    assert redone.stats.requests > 0 and redone.stats.cached == 0


def test_missing_year_names_the_folder(cog_root: Path, h3_cells, tmp_path):
    spec, frame = h3_cells
    client = ae.CogClient(cog_root, cache=ae.ClusterCache(tmp_path))
    with pytest.raises(FileNotFoundError, match="2030"):
        client.embeddings(frame, spec, [2030])


def test_first_component_is_the_principal_axis(cog_root: Path, h3_cells):
    """Scores agree with scikit-learn's PCA up to its arbitrary sign; NaN where no data."""
    from sklearn.decomposition import PCA

    from entropice_core.features.alphaearth import first_component

    spec, frame = h3_cells
    ds = ae.CogClient(cog_root).embeddings(frame, spec, YEARS).dataset
    pc1 = first_component(ds)
    assert pc1.dims == ("cell_ids", "year")
    x = np.stack([ds[b].to_numpy() for b in ae.BANDS], axis=-1).reshape(-1, 64)
    ok = np.isfinite(x).all(axis=1)
    expected = PCA(n_components=1).fit_transform(x[ok])[:, 0]
    mine = pc1.to_numpy().ravel()
    assert np.isnan(mine[~ok]).all()
    sign = np.sign(np.dot(mine[ok], expected))
    np.testing.assert_allclose(mine[ok], sign * expected, atol=1e-4)
