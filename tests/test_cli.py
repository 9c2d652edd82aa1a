"""The `entropice` command as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import h3
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
