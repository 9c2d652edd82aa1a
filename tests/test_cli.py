"""The `entropice` command as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pytest

ENTROPICE = Path(sys.executable).with_name("entropice")


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ENTROPICE), *args],
        capture_output=True,
        text=True,
        env={"ENTROPICE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
        timeout=300,
        check=False,
    )


def test_grids_writes_geoparquet_with_the_h3_cells(tmp_path):
    out = tmp_path / "cells.parquet"
    result = run(
        "grids",
        "--grid",
        "h3",
        "--level",
        "4",
        "--aoi",
        "-138.5,66.5,-131.5,69.2",
        "--out",
        str(out),
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    cells = gpd.read_parquet(out)
    assert cells.crs.to_epsg() == 4326
    poly = h3.LatLngPoly([(66.5, -138.5), (66.5, -131.5), (69.2, -131.5), (69.2, -138.5)])
    expected = {h3.str_to_int(c) for c in h3.polygon_to_cells(poly, 4)}
    assert set(cells.cell_id.tolist()) <= expected
    assert len(expected) - len(cells) <= 3  # only ocean cells of the Beaufort corner dropped


def test_grids_default_output_follows_the_storage_layout(tmp_path):
    result = run("grids", "--grid-level", "healpix_6", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "grids" / "healpix_6.parquet").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grids", "--grid-level", "h3_16"], "h3 levels run 0-15"),
        (["grids", "--grid", "healpix", "--level", "31"], "healpix levels run 0-29"),
        (["grids", "--grid-level", "h3_5", "--aoi", "-130,69,-120,68"], "minlat < maxlat"),
        (["grids", "--grid-level", "h3_5", "--aoi", "missing.gpkg"], "does not exist"),
    ],
)
def test_bad_input_exits_with_a_message_that_names_the_fix(tmp_path, args, message):
    result = run(*args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())


def test_help_explains_every_option(tmp_path):
    result = run("grids", "--help", tmp_path=tmp_path)
    assert result.returncode == 0
    for option in (
        "--grid-level",
        "--grid",
        "--level",
        "--aoi",
        "--data-dir",
        "--out",
        "--min-land-fraction",
        "--water-file",
    ):
        assert option in result.stdout


def test_alphaearth_help_explains_every_option(tmp_path):
    result = run("alphaearth", "--help", tmp_path=tmp_path)
    assert result.returncode == 0
    for option in ("--grid-level", "--year", "--source", "--cog-dir", "--cache-dir", "--out"):
        assert option in result.stdout
    text = " ".join(result.stdout.split())
    assert "ENTROPICE_EE_SERVICE_ACCOUNT" in text and "Google DeepMind" in text


def test_alphaearth_writes_the_store_and_reuses_the_cache(tmp_path):
    """Cells and COGs of a small box; two years, then the same again: no request."""
    import shapely
    import xarray as xr

    from entropice_core.config import AreaOfInterest, GridSpec
    from entropice_core.ingest.alphaearth import BANDS, CogClient
    from entropice_core.io.geoparquet import write_geoparquet
    from entropice_core.layout import Layout
    from entropice_core.sample.alphaearth import write_embeddings
    from entropice_core.sample.world import build_world
    from entropice_core.spatial.grids import grid_cells

    bbox = (-133.2, 67.7, -131.0, 68.3)
    layout = Layout(tmp_path / "data")
    all_land = gpd.GeoDataFrame(
        {"west": [-180.0], "south": [-90.0], "east": [180.0], "north": [90.0]},
        geometry=[shapely.Polygon()],
        crs="EPSG:4326",
    )
    spec = GridSpec.from_key("h3_4")
    cells = grid_cells(spec, AreaOfInterest.from_bbox(",".join(map(str, bbox))), all_land)
    write_geoparquet(cells, layout.grid_cells("h3_4"))
    write_embeddings(build_world(7, bbox), layout.source("alphaearth"))
    args = ("alphaearth", "--grid-level", "h3_4", "--year", "2019", "--year", "2023")
    first = run(*args, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "0 from cache" in " ".join(first.stderr.split())
    ds = xr.open_zarr(layout.asset_path("alphaearth_features", "h3_4"), consolidated=False)
    assert ds["year"].to_numpy().tolist() == [2019, 2023]
    expected = CogClient(layout.source("alphaearth")).embeddings(cells, spec, [2019, 2023])
    for band in (BANDS[0], BANDS[-1], "valid_fraction"):
        np.testing.assert_allclose(ds[band], expected.dataset[band], rtol=0, atol=1e-6)
    again = run(*args, tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr
    assert " 0 requests" in " ".join(again.stderr.split())


@pytest.mark.parametrize(
    ("source", "names"),
    [
        (
            "earthengine",
            ("ENTROPICE_EE_SERVICE_ACCOUNT", "ENTROPICE_EE_KEY_FILE", "ENTROPICE_EE_PROJECT"),
        ),
        ("gcs", ("ENTROPICE_EE_PROJECT", "ENTROPICE_EE_KEY_FILE", "ENTROPICE_GCS_TOKEN")),
    ],
)
def test_alphaearth_from_google_without_credentials_names_the_variables(tmp_path, source, names):
    from entropice_core.io.geoparquet import write_geoparquet
    from entropice_core.layout import Layout

    frame = gpd.GeoDataFrame({"cell_id": [1]}, geometry=[None], crs="EPSG:4326")
    write_geoparquet(frame, Layout(tmp_path / "data").grid_cells("h3_4"))
    result = run("alphaearth", "--grid-level", "h3_4", "--source", source, tmp_path=tmp_path)
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    for name in names:
        assert name in text
    assert "Traceback" not in result.stderr


def test_alphaearth_without_grid_cells_says_how_to_build_them(tmp_path):
    result = run("alphaearth", "--grid-level", "h3_4", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "entropice grids --grid-level h3_4" in " ".join(result.stderr.split())
