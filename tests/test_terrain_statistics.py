"""Terrain statistics of several grid levels as one stored tree (the ``terrain_statistics``
asset): the one-pass features of each level stored, read back and taken out unchanged; the
grid cells it reads; what it says when a level or its cells are missing."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr
from test_levels import cells_of, terrain_like

from entropice_core.config import GridSpec
from entropice_core.features.levels import level_features, statistics_tree
from entropice_core.features.terrain import TERRAIN_STATISTICS, terrain_features_levels
from entropice_core.io.assets import load_dataset, load_grid_levels, store_dataset
from entropice_core.io.geoparquet import write_geoparquet
from entropice_core.io.versions import content_version
from entropice_core.layout import Layout
from entropice_core.spatial.aggregators import aggregate_raster

KEYS = ("h3_4", "healpix_7")


@pytest.fixture(scope="module")
def features():
    raster = terrain_like(seed=7)
    levels = {key: cells_of(key, raster) for key in KEYS}
    return raster, levels, terrain_features_levels(raster, levels)


def test_the_tree_stores_and_loads_every_level_unchanged(features, tmp_path):
    raster, levels, found = features
    layout = Layout(tmp_path)
    stored = store_dataset(statistics_tree(found), layout, "terrain_statistics")
    assert stored.path == tmp_path / "arcticdem" / "statistics.zarr"
    loaded = load_dataset(layout, "terrain_statistics")
    assert isinstance(loaded, xr.DataTree)
    assert list(loaded.attrs["grid_levels"]) == list(KEYS)
    for key in KEYS:
        level = level_features(loaded, key, "terrain_statistics").load()
        xr.testing.assert_identical(level, found[key])
        assert level["cell_ids"].attrs == found[key]["cell_ids"].attrs  # xdggs grid attrs
    # one level alone through the per-level engine (independent of the one pass)
    spec = GridSpec.from_key("h3_4")
    engine = aggregate_raster(raster, levels["h3_4"], spec, TERRAIN_STATISTICS)
    np.testing.assert_array_equal(
        found["h3_4"]["elevation_median"], engine["elevation_median"].to_numpy()
    )


def test_one_level_opens_only_its_group_and_still_names_the_levels_held(features, tmp_path):
    """What a per-level run reads (the Zarr IO manager passes its grid level)."""
    _, _, found = features
    layout = Layout(tmp_path)
    store_dataset(statistics_tree(found), layout, "terrain_statistics")
    one = load_dataset(layout, "terrain_statistics", groups=["healpix_7"])
    assert isinstance(one, xr.DataTree) and set(one.children) == {"healpix_7"}
    level = level_features(one, "healpix_7", "terrain_statistics").load()
    xr.testing.assert_identical(level, found["healpix_7"])
    with pytest.raises(KeyError, match=r"holds the grid levels h3_4, healpix_7, not h3_6"):
        level_features(load_dataset(layout, "terrain_statistics", groups=["h3_6"]), "h3_6", "x")


def test_a_missing_level_names_the_levels_held_and_the_fix(features):
    _, _, found = features
    match = r"terrain_statistics holds the grid levels h3_4, healpix_7, not h3_6: materialise"
    with pytest.raises(KeyError, match=match):
        level_features(statistics_tree(found), "h3_6", "terrain_statistics")


def test_the_tree_version_follows_every_level(features):
    _, _, found = features
    version = content_version(statistics_tree(found))
    assert version is not None and version == content_version(statistics_tree(dict(found)))
    changed = dict(found)
    changed["healpix_7"] = found["healpix_7"].copy(deep=True)
    changed["healpix_7"]["elevation_mean"][0] += 1.0
    assert content_version(statistics_tree(changed)) != version


def test_grid_levels_are_read_as_given_or_every_one_that_exists(features, tmp_path):
    _, levels, _ = features
    layout = Layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="materialise grid_cells for these grid levels"):
        load_grid_levels(layout)
    for key in KEYS:
        path = layout.asset_path("grid_cells", key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_geoparquet(levels[key], path)
    found = load_grid_levels(layout)
    assert list(found) == ["h3_4", "healpix_7"]  # the default order, only those that exist
    assert isinstance(found["h3_4"], gpd.GeoDataFrame) and len(found["h3_4"]) == len(levels["h3_4"])
    assert list(load_grid_levels(layout, ["healpix_7"])) == ["healpix_7"]
    with pytest.raises(FileNotFoundError, match="grid_cells missing for h3_6"):
        load_grid_levels(layout, ["h3_4", "h3_6"])
