"""Every stage runs without Dagster (issue 22): the `entropice` stage commands write the same
files as the Dagster assets, fail on bad input in one line (exit 2) before any work, and the
run-all scripts stop at the first failing grid level and name it.

The commands run in-process (``entropice_core.cli.main``); the comparison reuses the
``sample_graph`` materialisation (h3_5) and runs the CLI into a second data directory whose
``sources`` is a link to the sample region's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
import xarray as xr
from conftest import GRAPH_SAMPLE

from entropice_core.cli import main
from entropice_core.io.geoparquet import write_geoparquet
from entropice_core.layout import Layout

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
KEY = "h3_5"
#: The terrain statistics of the sample graph (conftest.GRAPH_SAMPLE pixels per cell).
SAMPLED = ("--min-pixels-per-cell", str(GRAPH_SAMPLE))


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``entropice ARGS`` in-process; return the exit code, stdout and stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ok(capsys: pytest.CaptureFixture[str], *args: str) -> None:
    code, _, err = cli(capsys, *args)
    assert code == 0, f"entropice {' '.join(args)} exited {code}: {err}"


def open_store(path: Path) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False, zarr_format=3).load()


def relative_manifest(path: Path, root: Path) -> dict[str, object]:
    """A manifest with its file paths relative to the data directory."""
    manifest = json.loads(path.read_text())
    for key, value in manifest.items():
        if isinstance(value, list):
            manifest[key] = [
                str(Path(v).relative_to(root)) if str(v).startswith(str(root)) else v for v in value
            ]
    return manifest


@pytest.mark.slow
def test_stage_commands_write_what_the_assets_write(sample_graph, tmp_path, capsys):
    """For h3_5: every stage command into a second data directory; each file equals the one
    the Dagster materialisation wrote (terrain derivatives: the same repository, linked)."""
    dagster, ours = Layout(sample_graph.data_dir), Layout(tmp_path / "data")
    ours.root.mkdir()
    ours.sources.symlink_to(dagster.sources)
    years = [str(y) for y in sample_graph.years]
    data = ("--data-dir", str(ours.root))

    ok(capsys, "watermask", "sample", *data)
    ok(capsys, "grids", "--grid-level", KEY, *data)
    for asset, key in (("watermask", None), ("grid_cells", KEY)):
        expected = gpd.read_parquet(dagster.asset_path(asset, key))
        pd.testing.assert_frame_equal(gpd.read_parquet(ours.asset_path(asset, key)), expected)

    ok(capsys, "labels", "--grid-level", KEY, *data)
    footprints = gpd.read_parquet(ours.asset_path("darts_polygons"))
    pd.testing.assert_frame_equal(
        footprints, gpd.read_parquet(dagster.asset_path("darts_polygons"))
    )
    xr.testing.assert_identical(
        open_store(ours.rts_labels(KEY)), open_store(dagster.rts_labels(KEY))
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(ours.table_path("rts_labels", KEY)),
        pd.read_parquet(dagster.table_path("rts_labels", KEY)),
    )

    ok(capsys, "era5", "download", "--year", *years, *data)
    ok(capsys, "era5", "daily", "--year", *years, *data)
    ok(capsys, "era5", "yearly", *data)  # default: every daily store
    for year in years:
        hourly = dagster.asset_path("era5_hourly", year)
        assert relative_manifest(ours.asset_path("era5_hourly", year), ours.root) == (
            relative_manifest(hourly, dagster.root)
        )
        for asset in ("era5_daily", "era5_yearly"):
            xr.testing.assert_identical(
                open_store(ours.asset_path(asset, year)),
                open_store(dagster.asset_path(asset, year)),
            )
    ok(capsys, "era5", "features", "--grid-level", KEY, *data)

    ok(capsys, "terrain", "tiles", *data)
    assert relative_manifest(ours.asset_path("arcticdem_tiles"), ours.root) == (
        relative_manifest(dagster.asset_path("arcticdem_tiles"), dagster.root)
    )
    # the whole region's derivatives take minutes: the features read the Dagster commit,
    # with the graph's pixel sample (conftest.GRAPH_SAMPLE)
    ours.terrain_derivatives.symlink_to(dagster.terrain_derivatives)
    ok(capsys, "terrain", "features", "--grid-level", KEY, *SAMPLED, *data)

    cache = tmp_path / "alphaearth-requests"  # not into the linked sources
    ok(capsys, "alphaearth", "--grid-level", KEY, "--cache-dir", str(cache), *data)
    ok(capsys, "dataset", "--grid-level", KEY, *data)

    for asset in ("climate_features", "terrain_features", "alphaearth_features"):
        xr.testing.assert_identical(
            open_store(ours.asset_path(asset, KEY)), open_store(dagster.asset_path(asset, KEY))
        )
    xr.testing.assert_identical(
        open_store(ours.training_dataset(KEY)), open_store(dagster.training_dataset(KEY))
    )
    check_area_restriction(ours, capsys, cache)


def check_area_restriction(ours: Layout, capsys, cache: Path) -> None:
    """``--aoi`` on the commands below the grid: each keeps the cells, grid points or rows of
    the area, and what it keeps equals the unrestricted output."""
    data = ("--data-dir", str(ours.root))
    cells = gpd.read_parquet(ours.asset_path("grid_cells", KEY))
    west_half = cells.loc[cells.intersects(shapely.box(-138.5, 66.5, -135.0, 69.2)), "cell_id"]
    whole = open_store(ours.training_dataset(KEY))
    ok(capsys, "dataset", "--grid-level", KEY, "--aoi", "-138.5,66.5,-135,69.2", *data)
    part = open_store(ours.training_dataset(KEY))
    kept = sorted(set(whole["cell_ids"].to_numpy()) & set(west_half))
    assert sorted(part["cell_ids"].to_numpy()) == kept and 0 < len(kept) < whole.sizes["cell_ids"]
    xr.testing.assert_equal(part["features"], whole["features"].sel(cell_ids=kept))

    box = ("--aoi", "-135.5,67.6,-134.5,68.1")
    inside = set(cells.loc[cells.intersects(shapely.box(-135.5, 67.6, -134.5, 68.1)), "cell_id"])
    for asset, command in (
        ("climate_features", ("era5", "features")),
        ("terrain_features", ("terrain", "features", *SAMPLED)),
        ("alphaearth_features", ("alphaearth", "--cache-dir", str(cache))),
    ):
        whole = open_store(ours.asset_path(asset, KEY))
        ok(capsys, *command, "--grid-level", KEY, *box, *data)
        part = open_store(ours.asset_path(asset, KEY))
        assert set(part["cell_ids"].to_numpy()) == inside, asset
        # equal up to the order of summation (the area's raster window is another one)
        xr.testing.assert_allclose(part, whole.sel(cell_ids=part["cell_ids"]), rtol=1e-9)

    # ERA5: the 0.25 degree points of the box widened outward, as a CDS request returns them
    year = ours.asset_path("era5_daily", "0").parent
    first = sorted(p.stem for p in year.glob("*.zarr"))[0]
    whole_daily = open_store(ours.asset_path("era5_daily", first))
    whole_yearly = open_store(ours.asset_path("era5_yearly", first))
    ok(capsys, "era5", "daily", "--year", first, *box, *data)
    ok(capsys, "era5", "yearly", "--year", first, *box, *data)
    lat, lon = [67.5, 67.75, 68.0, 68.25], [-135.5, -135.25, -135.0, -134.75, -134.5]
    for asset, whole in (("era5_daily", whole_daily), ("era5_yearly", whole_yearly)):
        part = open_store(ours.asset_path(asset, first))
        assert sorted(part["latitude"].to_numpy()) == lat, asset
        assert sorted(part["longitude"].to_numpy()) == lon, asset
        xr.testing.assert_equal(
            part, whole.sel(latitude=part["latitude"], longitude=part["longitude"])
        )

    code, _, err = cli(
        capsys, "terrain", "features", "--grid-level", KEY, "--aoi", "10,60,11,61", *data
    )
    assert code == 2 and "no h3_5 cell intersects --aoi" in " ".join(err.split())


#: A box inside one tile of the sample region (as in test_dagster_terrain).
ONE_TILE_AOI = "-136.4,67.5,-135.9,67.75"


@pytest.mark.slow
def test_terrain_derivatives_command_commits_what_the_asset_commits(
    region, make_resources, tmp_path, capsys
):
    """One tile and two neighbourhoods (fewer derivatives: cheaper), through Dagster's run
    config and through the CLI's options: equal rasters and equal overviews."""
    import dagster as dg

    from entropice_core.io.icechunk import read_dataset_version
    from entropice_core.terrain.overviews import GROUP
    from entropice_dagster.assets import all_assets

    sources, _, _ = region
    dagster, ours = Layout(tmp_path / "dagster"), Layout(tmp_path / "cli")
    for layout in (dagster, ours):
        layout.root.mkdir()
        layout.sources.symlink_to(sources / "sources")
    neighbourhoods = {"tpi_radii_m": [160.0], "vrm_windows": [3]}
    result = dg.materialize(
        all_assets,
        selection=["watermask", "arcticdem_tiles", "terrain_derivatives"],
        resources=make_resources(dagster.root, aoi=ONE_TILE_AOI),
        run_config={"ops": {"terrain_derivatives": {"config": neighbourhoods}}},
    )
    assert result.success
    # the water mask command is compared in the test above; here its file is shared
    ours.watermask.parent.mkdir()
    shutil.copy(dagster.watermask, ours.watermask)
    data = ("--data-dir", str(ours.root))
    ok(capsys, "terrain", "tiles", "--aoi", ONE_TILE_AOI, "--client", "offline", *data)
    options = ("--tpi-radii-m", "160", "--vrm-windows", "3")
    ok(capsys, "terrain", "derivatives", *options, "--aoi", ONE_TILE_AOI, *data)
    for group in (None, GROUP):
        xr.testing.assert_identical(
            read_dataset_version(ours.terrain_derivatives, group).load(),
            read_dataset_version(dagster.terrain_derivatives, group).load(),
        )
    assert "tpi_960m" not in read_dataset_version(ours.terrain_derivatives, None)
    code, _, err = cli(capsys, "terrain", "derivatives", "--aoi", "10,60,11,61", *data)
    assert code == 2 and "covers --aoi" in " ".join(err.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["labels", "--grid-level", "h3_16"], "h3 levels run 0-15"),
        (["labels"], "give --grid-level h3_5 (or --grid and --level), or --all-levels"),
        (["era5", "features", "--grid-level", "h3_5", "--all-levels"], "or --all-levels"),
        (["labels", "--grid-level", "h3_5", "--aoi", "-130,69,-120,68"], "minlat < maxlat"),
        (["terrain", "tiles", "--aoi", "Sample"], "sample"),
        (["grids", "--all-levels", "--out", "x.parquet"], "names one output"),
        (["alphaearth", "--all-levels", "--out", "x.zarr"], "names one output"),
        (
            ["labels", "--grid-level", "h3_5"],
            "grids/h3_5.parquet does not exist: run `entropice grids --grid-level h3_5` first",
        ),
        (
            ["era5", "features", "--all-levels"],
            "grids/h3_3.parquet does not exist: run `entropice grids --grid-level h3_3` first",
        ),
        (
            ["terrain", "features", "--grid-level", "h3_5,healpix_9"],
            "grids/h3_5.parquet does not exist: run `entropice grids --grid-level h3_5` first",
        ),
        (["terrain", "features", "--grid-level", "h3_5,h3_66"], "h3 level 66 does not exist"),
        (
            ["terrain", "derivatives"],
            "arcticdem/tiles.json does not exist: run `entropice terrain tiles` first",
        ),
        (["era5", "daily"], "no Arctic year to aggregate: run `entropice era5 download` first"),
        (
            ["era5", "daily", "--year", "2022"],
            "are absent): run `entropice era5 download --year 2022` first",
        ),
        (
            ["era5", "yearly", "--year", "2022"],
            "era5/daily/2022.zarr does not exist: run `entropice era5 daily --year 2022` first",
        ),
        (
            ["dataset", "--grid-level", "healpix_7"],
            "darts/labels_healpix_7.zarr does not exist: run `entropice labels --grid-level "
            "healpix_7` first",
        ),
        (["era5", "download", "--year", "2022"], "run `entropice sample` for the sample region"),
        (["terrain", "tiles"], "run `entropice sample` for the sample region"),
    ],
)
def test_bad_input_fails_in_one_line_before_any_work(tmp_path, capsys, args, message):
    """Exit 2 and one line naming the value or file and the fix; nothing written."""
    data_dir = tmp_path / "data"
    code, _, err = cli(capsys, *args, "--data-dir", str(data_dir))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err
    assert "Traceback" not in err
    written = [p for p in data_dir.rglob("*") if p.is_file()] if data_dir.exists() else []
    assert written == []


def test_labels_without_the_darts_release_names_the_fix(tmp_path, capsys):
    """Cells present, no DARTS files: the offline client's one line, exit 2."""
    frame = gpd.GeoDataFrame({"cell_id": [1]}, geometry=[None], crs="EPSG:4326")
    layout = Layout(tmp_path)
    write_geoparquet(frame, layout.grid_cells("h3_4"))
    code, _, err = cli(capsys, "labels", "--grid-level", "h3_4", "--data-dir", str(tmp_path))
    assert code == 2
    assert "DARTS release" in err and "entropice sample" in err
    assert not layout.asset_path("darts_polygons").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["labels"],
        ["era5", "download"],
        ["era5", "daily"],
        ["era5", "yearly"],
        ["era5", "features"],
        ["terrain", "tiles"],
        ["terrain", "derivatives"],
        ["terrain", "features"],
        ["dataset"],
        ["sample"],
    ],
)
def test_help_gives_an_example_and_the_data_dir(capsys, command):
    code, out, _ = cli(capsys, *command, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert f"Example: entropice {' '.join(command)}" in text
    assert "--data-dir" in text


def _fake_entropice(tmp_path: Path, failing: str) -> Path:
    """A stand-in for `entropice` that logs its arguments and fails on one grid level."""
    log = tmp_path / "calls.log"
    fake = tmp_path / "entropice"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {log}\n'
        f'if [[ " $* " == *" {failing} "* ]]; then echo "error: bad {failing}" >&2; exit 2; fi\n'
    )
    fake.chmod(0o755)
    return fake


#: Scripts whose last stage serves all grid levels in one command (terrain features).
ONE_PASS_SCRIPTS = ("04arcticdem.sh",)


@pytest.mark.parametrize(
    "script", sorted(p.name for p in SCRIPTS.glob("0*.sh") if p.name not in ONE_PASS_SCRIPTS)
)
def test_run_all_scripts_stop_at_the_first_failing_level_and_name_it(tmp_path, script):
    fake = _fake_entropice(tmp_path, "h3_4")
    env = os.environ | {"ENTROPICE": str(fake), "ENTROPICE_LEVELS": "h3_3 h3_4 h3_5"}
    done = subprocess.run(
        ["bash", str(SCRIPTS / script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert f"{script}: failed at grid level h3_4" in done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert any("--grid-level h3_3" in c for c in calls)
    assert "--grid-level h3_4" in calls[-1]
    assert not any("h3_5" in c for c in calls)


def test_the_terrain_script_runs_all_levels_in_one_command_and_names_them(tmp_path):
    fake = _fake_entropice(tmp_path, "features")  # the one-pass command fails
    env = os.environ | {"ENTROPICE": str(fake), "ENTROPICE_LEVELS": "h3_3 h3_4 h3_5"}
    done = subprocess.run(
        ["bash", str(SCRIPTS / "04arcticdem.sh")], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "04arcticdem.sh: failed at terrain features of grid levels h3_3,h3_4,h3_5" in (
        done.stderr
    )
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[-1].startswith("terrain features --grid-level h3_3,h3_4,h3_5")
    assert sum("terrain features" in c for c in calls) == 1


def test_a_script_with_the_real_command_names_the_level_and_the_fix(tmp_path):
    """01darts.sh on an empty data directory: the first level has no cells."""
    entropice = Path(sys.executable).with_name("entropice")
    env = os.environ | {
        "ENTROPICE": str(entropice),
        "ENTROPICE_LEVELS": "h3_3 h3_4",
        "ENTROPICE_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        ["bash", str(SCRIPTS / "01darts.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = " ".join(done.stderr.split())
    assert done.returncode == 1
    assert "run `entropice grids --grid-level h3_3` first" in text
    assert "01darts.sh: failed at grid level h3_3" in text
    assert "h3_4" not in text


def test_scripts_parse_and_are_executable():
    for script in SCRIPTS.glob("*.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    for script in SCRIPTS.glob("0*.sh"):
        assert os.access(script, os.X_OK), script
    assert shutil.which("bash")


def test_scripts_default_to_every_grid_level_of_the_cli():
    from entropice_core.config import DEFAULT_GRID_LEVELS

    env = {k: v for k, v in os.environ.items() if k != "ENTROPICE_LEVELS"}
    env["ENTROPICE"] = str(Path(sys.executable).with_name("entropice"))
    done = subprocess.run(
        ["bash", "-c", f'source {SCRIPTS / "_common.sh"}; echo "$ENTROPICE_LEVELS"'],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == list(DEFAULT_GRID_LEVELS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["grids", "--grid-level", "h3_3"],
            "data is a file, not a folder; give --data-dir a folder",
        ),
        (["watermask"], "data is a file, not a folder; give --data-dir a folder"),
        (["sample"], "data is a file, not a folder; give --data-dir a folder"),
        (["labels", "--grid-level", "h3_3"], "data is a file, not a folder"),
    ],
)
def test_a_file_as_data_dir_fails_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    import entropice_core.cli as cli_module

    def no_work(*_, **__):
        raise AssertionError("the computation started")

    monkeypatch.setattr(cli_module, "water_polygons", no_work)
    monkeypatch.setattr(cli_module, "_upstream", lambda layout, asset, key=None: Path("x"))
    data = tmp_path / "data"
    data.write_text("not a folder")
    code, _, err = cli(capsys, *args, "--data-dir", str(data))
    assert code == 2
    assert "cannot write" in err and message in " ".join(err.split())


def test_output_paths_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    import entropice_core.cli as cli_module
    from entropice_core.io import writable

    def no_work(*_, **__):
        raise AssertionError("the computation started")

    monkeypatch.setattr(cli_module, "water_polygons", no_work)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    out = blocker / "cells.parquet"
    code, _, err = cli(capsys, "grids", "--grid-level", "h3_3", "--out", str(out))
    text = " ".join(err.split())
    assert (
        code == 2 and f"cannot write {out}: {blocker} is a file, not a folder; give --out" in text
    )
    (tmp_path / "folder.parquet").mkdir()
    code, _, err = cli(capsys, "watermask", "--out", str(tmp_path / "folder.parquet"))
    assert code == 2 and "it is a folder, and a file goes there; give --out" in " ".join(
        err.split()
    )

    def read_only(*_, **__):  # what a read-only mount or folder answers (root ignores chmod)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(writable.tempfile, "mkstemp", read_only)
    data = tmp_path / "ro"
    data.mkdir()
    code, _, err = cli(capsys, "grids", "--grid-level", "h3_3", "--data-dir", str(data))
    text = " ".join(err.split())
    assert code == 2
    assert f"{data} is not writable (Permission denied); make it writable" in text
    assert "or give --data-dir another folder" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_data_dir_fails_before_any_work(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o555)
    try:
        code, _, err = cli(capsys, "watermask", "--data-dir", str(data))
    finally:
        data.chmod(0o755)
    assert code == 2 and f"{data} is not writable" in " ".join(err.split())


@pytest.mark.parametrize(
    ("aoi", "reason"),
    [
        ("north-of:abc", "'abc' is not a latitude in degrees (e.g. north-of:60)"),
        ("region.kml", ".kml is not a vector format read here (use .parquet, .gpkg"),
    ],
)
def test_aoi_near_misses_name_the_valid_forms(tmp_path, capsys, aoi, reason):
    code, _, err = cli(capsys, "grids", "--grid-level", "h3_3", "--aoi", aoi)
    text = " ".join(err.split())
    assert code == 2 and f"area of interest {aoi!r}: {reason}" in text
    assert "Valid forms: 'sample' (the embedded sample region), 'arctic'" in text
    assert "'north-of:LAT'" in text and "minlon,minlat,maxlon,maxlat" in text
