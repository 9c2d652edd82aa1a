"""The climate assets of the end-to-end run on the sample region (``sample_graph``), the
climate_features automation, and the command-line backfill of
every Arctic year."""

from pathlib import Path

import dagster as dg
import geopandas as gpd
import numpy as np
import pytest
import shapely
import xarray as xr
import xdggs
from conftest import GRAPH_LEVELS, GRAPH_YEARS

from entropice_core.io.zarr import read_dataset
from entropice_core.spatial.overlay import overlay_cells

KEY = GRAPH_LEVELS[1]  # HEALPix
YEARS = GRAPH_YEARS


@pytest.mark.slow
def test_arctic_years_materialise_with_gaps_reported(sample_graph):
    work = sample_graph.data_dir
    assert YEARS == ("2021", "2022", "2023")
    for year in YEARS:
        assert sample_graph.run("era5_daily", year).success
        assert sample_graph.run("era5_yearly", year).success
    hourly = sample_graph.metadata("era5_hourly", "2022")
    assert hourly["already_complete"] == 25 and hourly["downloaded"] == 0  # + closing hour
    assert hourly["missing"] == []  # October 2022 of the sample holds the closing hour
    assert sample_graph.metadata("era5_daily", "2022")["gap_days"] == []
    # the sample ends 30 Sep 2023 23 UTC: that day's precipitation is a reported gap
    assert sample_graph.metadata("era5_daily", "2023")["gap_days"] == ["2023-09-30"]
    daily = xr.open_zarr(work / "era5" / "daily" / "2023.zarr")
    assert daily.sizes["time"] == 365 and daily["precipitation"].isel(time=-1).isnull().all()
    assert sample_graph.metadata("era5_yearly", "2022")["thaw_season_complete"]
    assert not sample_graph.metadata("era5_yearly", "2023")["thaw_season_complete"]


@pytest.mark.slow
def test_climate_features_are_area_weighted_cell_means(sample_graph):
    work = sample_graph.data_dir
    checks = sample_graph.checks("climate_features", KEY)
    assert {name: e.passed for name, e in checks.items()} == {"degree_days_plausible": True}
    features = xdggs.decode(read_dataset(work / "era5" / f"features_{KEY}.zarr"))
    assert features["thawing_degree_days"].dims == ("cell_ids", "year")
    assert features["year"].to_numpy().tolist() == [2021, 2022, 2023]
    cells = gpd.read_parquet(work / "grids" / f"{KEY}.parquet")
    assert set(features["cell_ids"].to_numpy()) == set(cells["cell_id"])

    # Independent: 0.25 degree pixel boxes overlaid with the cells in an equal-area CRS.
    yearly = xr.open_zarr(work / "era5" / "yearly" / "2022.zarr").isel(year=0)
    tdd = yearly["thawing_degree_days"].to_numpy()
    lat, lon = yearly["latitude"].to_numpy(), yearly["longitude"].to_numpy()
    boxes = shapely.box(
        *np.broadcast_arrays(
            lon[None, :] - 0.125, lat[:, None] - 0.125, lon[None, :] + 0.125, lat[:, None] + 0.125
        )
    )
    pixels = gpd.GeoSeries(boxes.ravel(), crs=4326).segmentize(0.05)
    overlay = overlay_cells(pixels, cells.geometry, workers=1)
    n = len(cells)
    weight = np.bincount(overlay.cell, overlay.area_km2, minlength=n)
    expected = np.bincount(overlay.cell, overlay.area_km2 * tdd.ravel()[overlay.polygon], n)
    got = features["thawing_degree_days"].sel(year=2022, cell_ids=cells["cell_id"].to_numpy())
    inside = weight > 0
    assert inside.sum() >= 3
    np.testing.assert_allclose(got.to_numpy()[inside], expected[inside] / weight[inside], rtol=1e-4)


def _report(instance: dg.DagsterInstance, asset: str, partition: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))


def test_climate_features_follow_updated_arctic_years() -> None:
    from entropice_dagster.definitions import defs

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("arctic_year", ["2022", "2023"])
        _report(instance, "grid_cells", "h3_3")
        _report(instance, "grid_cells", "healpix_7")
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        _report(instance, "era5_yearly", "2023")  # 2022 stays missing: not a blocker
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor
        )
        requested = result.get_requested_partitions(dg.AssetKey("climate_features"))
        assert requested == {"h3_3", "healpix_7"}  # the levels whose grid cells exist


@pytest.mark.slow  # a `dagster` subprocess loads the code location
def test_cli_backfill_queues_every_arctic_year(tmp_path: Path, cli_backfill) -> None:
    years = [str(y) for y in range(2018, 2024)]
    runs, backfill = cli_backfill(tmp_path, "era5_arctic_year", {"arctic_year": years})
    assert sorted(r.tags["dagster/partition"] for r in runs) == years
    assert {r.status for r in runs} == {dg.DagsterRunStatus.QUEUED}
    assert sorted(backfill.partition_names) == years


def test_an_unknown_arctic_year_says_how_to_add_it(tmp_path: Path, monkeypatch) -> None:
    from entropice_dagster.partitions import arctic_year_partitions, main

    @dg.asset(partitions_def=arctic_year_partitions)
    def yearly() -> int:
        return 1

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        with pytest.raises(dg.DagsterUnknownPartitionError) as err:
            dg.materialize([yearly], partition_key="2019", instance=instance)
        text = str(err.value)
        assert "Arctic year 2019 is not a partition of arctic_year" in text
        assert "add it with `python -m entropice_dagster.partitions add-years 2019`" in text
        unpublished = "not an Arctic year ERA5 has published"
        with pytest.raises(dg.DagsterUnknownPartitionError, match=unpublished):
            dg.materialize([yearly], partition_key="19", instance=instance)
        main(["add-years", "2019", "2020"])  # the command the message names
        assert sorted(instance.get_dynamic_partitions("arctic_year")) == ["2019", "2020"]
        assert dg.materialize([yearly], partition_key="2019", instance=instance).success
    with pytest.raises(SystemExit) as exit_info:
        main(["add-years", "1900"])
    assert exit_info.value.code == 2


@pytest.mark.slow  # a `dagster` subprocess loads the code location
def test_cli_backfill_of_a_range_of_arctic_years(tmp_path: Path, cli_backfill) -> None:
    years = [str(y) for y in range(2018, 2024)]
    runs, backfill = cli_backfill(
        tmp_path, "era5_arctic_year", {"arctic_year": years}, ("--from", "2019", "--to", "2021")
    )
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["2019", "2020", "2021"]
    assert sorted(backfill.partition_names) == ["2019", "2020", "2021"]
