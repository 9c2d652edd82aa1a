"""alphaearth_statistics and alphaearth_features in Dagster: the assets on a small box (two
levels in one pass, years added cost only their requests), the resource's clients and
credentials, and the store the end-to-end run wrote, compared with exactextract on the
dequantised sample COGs."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import dagster as dg
import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from exactextract import exact_extract

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.ingest import alphaearth as ae
from entropice_core.io.geoparquet import write_geoparquet
from entropice_core.layout import Layout
from entropice_core.sample import alphaearth as sample_ae
from entropice_core.sample.world import build_world
from entropice_core.spatial.grids import grid_cells
from entropice_dagster.assets.alphaearth import (
    AlphaEarthConfig,
    alphaearth_features,
    alphaearth_statistics,
)
from entropice_dagster.io_managers import ZARR_IO_MANAGER_KEY, ZarrIOManager
from entropice_dagster.resources import DataDirResource, EarthEngineResource, project_resources

#: The small box of test_alphaearth.py (across UTM zones 8 and 9).
BBOX = (-133.2, 67.7, -131.0, 68.3)
ALL_LAND = gpd.GeoDataFrame(
    {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
    geometry=[shapely.Polygon()],
    crs="EPSG:4326",
)
SECRET = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC-not-a-real-key\n"
ENV = (ae.ENV_SERVICE_ACCOUNT, ae.ENV_KEY_FILE, ae.ENV_KEY_DATA, ae.ENV_PROJECT)
#: Two levels of different grids, served by one pass over the files.
LEVELS = ("h3_5", "healpix_8")


@pytest.fixture(scope="module")
def cog_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("alphaearth")
    sample_ae.write_embeddings(build_world(7, BBOX), root)
    return root


@pytest.fixture(scope="module")
def levels() -> dict[str, gpd.GeoDataFrame]:
    box = AreaOfInterest.from_bbox(",".join(str(v) for v in BBOX))
    return {key: grid_cells(GridSpec.from_key(key), box, ALL_LAND) for key in LEVELS}


@pytest.fixture(scope="module")
def cells(levels) -> gpd.GeoDataFrame:
    return levels["h3_5"]


@pytest.fixture
def no_ee_env(monkeypatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _png(markdown: str) -> np.ndarray:
    """The image of a markdown data-URI preview."""
    import matplotlib.image

    prefix = "data:image/png;base64,"
    encoded = markdown[markdown.index(prefix) + len(prefix) : markdown.rindex(")")]
    return matplotlib.image.imread(io.BytesIO(base64.b64decode(encoded)), format="png")


def _invoke(levels, root: Path, tmp_path: Path, years: list[int]):
    """alphaearth_statistics on the levels' cells (as grid_cells wrote them), then
    alphaearth_features of h3_5 from it: the statistics' output, the level's output and its
    checks."""
    layout = Layout(tmp_path)
    for key, frame in levels.items():
        write_geoparquet(frame, layout.grid_cells(key))
    resource = EarthEngineResource(folder=str(root), cache_folder=str(tmp_path / "cache"))
    (statistics,) = alphaearth_statistics(
        config=AlphaEarthConfig(years=years),
        earth_engine=resource,
        data_dir=DataDirResource(path=str(tmp_path)),
    )
    events = list(
        alphaearth_features(
            context=dg.build_asset_context(partition_key="h3_5"),
            alphaearth_statistics=statistics.value,
            grid_cells=levels["h3_5"],
        )
    )
    checks = [e for e in events if isinstance(e, dg.AssetCheckResult)]
    (output,) = [e for e in events if isinstance(e, dg.Output)]
    return statistics, output, checks


def _values(output: dg.Output) -> dict:
    return {k: getattr(v, "value", v) for k, v in output.metadata.items()}


def test_one_pass_serves_every_level_and_a_year_added_costs_only_its_pass(
    levels, cog_root: Path, tmp_path: Path
) -> None:
    statistics, _, checks = _invoke(levels, cog_root, tmp_path, [2019])
    cost = _values(statistics)
    # one answer per (level, year), each level's from the same pass over the files
    assert (cost["requests"], cost["requests_from_cache"], cost["clusters"]) == (2, 0, 2)
    assert set(cost["grid_levels"]) == set(LEVELS)
    assert [c.check_name for c in checks] == ["embeddings_valid"] and checks[0].passed
    statistics, second, _ = _invoke(levels, cog_root, tmp_path, [2023, 2019])
    cost = _values(statistics)
    assert cost["years"] == [2019, 2023]
    assert (cost["requests"], cost["requests_from_cache"]) == (2, 2)  # only 2023 computed
    meta = _values(second)
    assert meta["years"] == [2019, 2023] and meta["cells"] == len(levels["h3_5"])
    ds = second.value
    assert ds["A00"].dims == ("cell_ids", "year") and set(ae.BANDS) < set(ds.data_vars)
    # each level equals the per-level engine on that level alone (aggregate_raster, no cache)
    for key, frame in levels.items():
        alone = ae.CogClient(cog_root).embeddings(frame, GridSpec.from_key(key), [2019, 2023])
        level = statistics.value.children[key].to_dataset(inherit=False)
        for band in ("A05", "A40", "valid_fraction"):
            np.testing.assert_allclose(level[band], alone.dataset[band], rtol=0, atol=1e-6)
    image = _png(meta["pc1_map"])
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0


def test_missing_credentials_are_one_line_naming_the_variables(tmp_path, no_ee_env) -> None:
    resource = project_resources(tmp_path, "arctic")["earth_engine"]
    assert resource.client == "earthengine" and resource.service_account == ""
    with pytest.raises(ae.CredentialsMissing) as info:
        resource.embedding_client(tmp_path)
    text = str(info.value)
    assert "\n" not in text
    assert all(name in text for name in ENV)


def test_the_offline_client_is_used_on_the_sample_region(tmp_path) -> None:
    resource = project_resources(tmp_path, "sample")["earth_engine"]
    client = resource.embedding_client(tmp_path)
    assert isinstance(client, ae.CogClient) and client.cache is not None
    assert client.root == Layout(tmp_path).source("alphaearth")


def test_credentials_come_from_env_vars_and_never_reach_logs_or_metadata(
    monkeypatch, cells, cog_root: Path, tmp_path: Path, no_ee_env, dagster_instance
) -> None:
    """Earth Engine through the resource, answered by the fake ``ee`` of test_alphaearth.py."""
    from test_alphaearth import FakeEE

    fake = FakeEE(cog_root)
    monkeypatch.setitem(__import__("sys").modules, "ee", fake.module)
    monkeypatch.setenv(ae.ENV_SERVICE_ACCOUNT, "svc@my-project.iam.gserviceaccount.com")
    monkeypatch.setenv(ae.ENV_KEY_DATA, SECRET)
    monkeypatch.setenv(ae.ENV_PROJECT, "my-project")
    resource = project_resources(tmp_path, "arctic")["earth_engine"]
    assert isinstance(resource.key_data, dg.EnvVar) and resource.key_data == ae.ENV_KEY_DATA
    assert resource.key_file == ""  # unset: left empty, not an EnvVar failing at run time
    assert SECRET not in repr(resource)

    write_geoparquet(cells, Layout(tmp_path).grid_cells("h3_5"))
    result = dg.materialize(
        [alphaearth_statistics],
        instance=dagster_instance,
        resources={
            "earth_engine": resource.model_copy(update={"max_cells": 40, "max_extent_km": 150}),
            "data_dir": DataDirResource(path=str(tmp_path)),
            ZARR_IO_MANAGER_KEY: ZarrIOManager(data_dir=str(tmp_path)),
        },
        run_config={"ops": {"alphaearth_statistics": {"config": {"years": [2021]}}}},
    )
    assert result.success
    assert fake.credentials["key_data"] == SECRET  # the key reached ee, resolved at run time
    assert fake.init["project"] == "my-project"
    (materialization,) = result.asset_materializations_for_node("alphaearth_statistics")
    assert materialization.metadata["requests"].value == len(fake.calls) > 0
    secret_parts = ["PRIVATE KEY", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"]
    texts = [str(record) for record in dagster_instance.all_logs(result.run_id)]
    texts.append(json.dumps({k: str(v) for k, v in materialization.metadata.items()}))
    texts.append(json.dumps(dagster_instance.get_run_by_id(result.run_id).run_config, default=str))
    assert not any(part in text for text in texts for part in secret_parts)
    assert Layout(tmp_path).asset_path("alphaearth_statistics").exists()


# ----------------------------------------------------------------- the end-to-end run


def _exactextract_means(cells: gpd.GeoDataFrame, root: Path, year: int, tmp_path: Path):
    """Per-cell means and pixel counts of the dequantised COGs of ``year`` by exactextract."""
    total, count = np.zeros((len(cells), 64)), np.zeros(len(cells))
    polys = cells[["geometry"]].assign(i=np.arange(len(cells)))
    for path in ae.find_cogs(root, year):
        with rasterio.open(path) as src:
            values = ae.dequantize(src.read(), np.float32)
            profile = {k: src.profile[k] for k in ("width", "height", "count", "crs", "transform")}
        flat = tmp_path / f"{path.stem}.tif"
        profile |= {"driver": "GTiff", "dtype": "float32", "nodata": -9999.0}
        with rasterio.open(flat, "w", **profile) as dst:
            dst.write(np.nan_to_num(values, nan=-9999.0))
        projected = polys.assign(geometry=polys.geometry.segmentize(0.01).to_crs(profile["crs"]))
        out = exact_extract(
            str(flat), projected, ["sum", "count"], output="pandas", include_cols=["i"]
        )
        i = out["i"].to_numpy()
        for b in range(64):
            total[i, b] += np.nan_to_num(out[f"band_{b + 1}_sum"].to_numpy())
        count[i] += out["band_1_count"].to_numpy()
    with np.errstate(invalid="ignore"):
        return total / count[:, None], count


@pytest.mark.slow
@pytest.mark.parametrize("key", ["h3_5", "healpix_9"])
def test_the_materialised_store_matches_exactextract(sample_graph, key: str, tmp_path) -> None:
    import xarray as xr

    from entropice_core.io.geoparquet import read_geoparquet

    layout = Layout(sample_graph.data_dir)
    ds = xr.open_zarr(layout.asset_path("alphaearth_features", key), consolidated=False)
    cells = read_geoparquet(layout.grid_cells(key))
    years = [int(y) for y in ds["year"].to_numpy()]
    assert years == list(sample_ae.YEARS)
    assert ds["A00"].dims == ("cell_ids", "year")
    assert set(ds.data_vars) == {*ae.BANDS, "valid_fraction"}
    assert ds["cell_ids"].attrs["grid_name"] == GridSpec.from_key(key).grid
    assert np.array_equal(ds["cell_ids"].to_numpy(), cells["cell_id"].to_numpy())
    valid = ds["valid_fraction"].to_numpy()
    assert np.all((valid >= 0) & (valid <= 1)) and (valid > 0.9).mean() > 0.5
    # a few cells, full and partial, against exactextract on the dequantised COGs
    year = 2021
    column = years.index(year)
    full = np.flatnonzero(valid[:, column] > 0.99)[:4]
    partial = np.flatnonzero((valid[:, column] > 0.05) & (valid[:, column] < 0.9))[:2]
    picked = np.concatenate([full, partial])
    assert len(full) == 4
    expected, count = _exactextract_means(
        cells.iloc[picked], layout.source("alphaearth"), year, tmp_path
    )
    assert (count > 0).all()
    mine = np.stack([ds[b].isel(year=column).to_numpy()[picked] for b in ae.BANDS], axis=1)
    np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-6)

    meta = sample_graph.metadata("alphaearth_features", key)
    assert meta["cells"] == len(cells) and meta["years"] == years
    cost = sample_graph.metadata("alphaearth_statistics")
    # one pass per year for every level: one answer per (level, year), none from the cache
    assert cost["requests"] == len(sample_graph.levels) * len(years)
    assert cost["requests_from_cache"] == 0 and cost["grid_levels"][key]["cells"] == len(cells)
    assert sample_graph.checks("alphaearth_features", key)["embeddings_valid"].passed
    assert _png(meta["pc1_map"]).std() > 0


@pytest.mark.slow
def test_a_second_materialisation_is_all_from_the_cache(sample_graph, make_resources) -> None:
    import xarray as xr

    from entropice_dagster.assets import all_assets

    key = "h3_5"
    store = Layout(sample_graph.data_dir).asset_path("alphaearth_features", key)
    before = xr.open_zarr(store, consolidated=False).load()
    resources = make_resources(sample_graph.data_dir)
    levels = {"grid_levels": list(sample_graph.levels)}
    statistics = dg.materialize(
        all_assets,
        selection=["alphaearth_statistics"],
        resources=resources,
        run_config={"ops": {"alphaearth_statistics": {"config": levels}}},
    )
    assert statistics.success
    (event,) = statistics.asset_materializations_for_node("alphaearth_statistics")
    first = sample_graph.metadata("alphaearth_statistics")
    assert event.metadata["requests"].value == 0
    assert event.metadata["requests_from_cache"].value == first["requests"]
    result = dg.materialize(
        all_assets, selection=["alphaearth_features"], partition_key=key, resources=resources
    )
    assert result.success
    after = xr.open_zarr(store, consolidated=False)
    for band in ("A00", "A63", "valid_fraction"):
        np.testing.assert_array_equal(after[band], before[band])
