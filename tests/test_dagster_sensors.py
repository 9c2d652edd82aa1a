"""Sensors (new ERA5 years, DARTS files, AlphaEarth years), the automation of the model stage,
and the refusal to build on outdated inputs: each against a scratch instance."""

import datetime as dt
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from entropice_core.ingest.era5 import OfflineEra5Client, arctic_year_files
from entropice_dagster.provenance import outdated_inputs, refuse_outdated
from entropice_dagster.resources import (
    CdsResource,
    DartsSourceResource,
    DataDirResource,
    EarthEngineResource,
)
from entropice_dagster.sensors import (
    alphaearth_years,
    arctic_year_requests,
    darts_release,
    era5_arctic_years,
)


def _report(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition))


def _era5_year_files(root: Path, year: int) -> None:
    for path in arctic_year_files(root, year):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def test_offline_years_are_those_with_all_24_month_files(tmp_path: Path) -> None:
    _era5_year_files(tmp_path, 2021)
    _era5_year_files(tmp_path, 2022)
    next(p for p in arctic_year_files(tmp_path, 2022) if "/2022/03/" in str(p)).unlink()
    now = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)
    assert OfflineEra5Client().published_years(tmp_path, now) == [2021]
    # ... and none newer than ERA5 has published: 2027 ends in September 2027
    _era5_year_files(tmp_path, 2027)
    assert OfflineEra5Client().published_years(tmp_path, now) == [2021]


def test_a_new_year_is_added_and_run_newest_first_then_the_year_before_completed() -> None:
    with dg.instance_for_test() as instance:
        result = arctic_year_requests(instance, [2020, 2021, 2022])
        assert isinstance(result, dg.SensorResult)
        (adding,) = result.dynamic_partitions_requests
        assert adding.partitions_def_name == "arctic_year"
        assert list(adding.partition_keys) == ["2020", "2021", "2022"]
        (run,) = result.run_requests
        assert run.partition_key == "2022"
        assert {k.to_user_string() for k in run.asset_selection} == {
            "era5_hourly", "era5_daily", "era5_yearly"
        }  # fmt: skip
        # the result is a request: the instance is unchanged until the daemon applies it
        assert instance.get_dynamic_partitions("arctic_year") == []

        instance.add_dynamic_partitions("arctic_year", ["2020", "2021", "2022"])
        _report(instance, "era5_yearly", "2021")
        _report(instance, "era5_daily", "2022")
        _report(instance, "era5_yearly", "2022")
        result = arctic_year_requests(instance, [2020, 2021, 2022])
        assert result.dynamic_partitions_requests == []
        (run,) = result.run_requests  # 2021's thaw season reaches into Oct-Dec of 2022
        assert (run.partition_key, [k.to_user_string() for k in run.asset_selection]) == (
            "2021",
            ["era5_yearly"],
        )
        _report(instance, "era5_yearly", "2021")
        assert isinstance(arctic_year_requests(instance, [2020, 2021, 2022]), dg.SkipReason)
        assert isinstance(arctic_year_requests(instance, []), dg.SkipReason)


def test_era5_sensor_offers_only_the_years_in_the_offline_folder(tmp_path: Path) -> None:
    _era5_year_files(tmp_path / "sources" / "era5", 2022)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            resources={
                "cds": CdsResource(client="offline"),
                "data_dir": DataDirResource(path=str(tmp_path)),
            },
        )
        result = era5_arctic_years(context)
        (adding,) = result.dynamic_partitions_requests
        assert list(adding.partition_keys) == ["2022"]  # not 2000..2026: offline has one year
        assert [r.partition_key for r in result.run_requests] == ["2022"]
        assert instance.get_dynamic_partitions("arctic_year") == []  # a preview changes nothing


def test_darts_sensor_runs_once_per_new_state_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "sources" / "darts"
    resources = {
        "darts_source": DartsSourceResource(client="offline"),
        "data_dir": DataDirResource(path=str(tmp_path)),
    }
    with dg.instance_for_test() as instance:
        folder.mkdir(parents=True)
        empty = darts_release(dg.build_sensor_context(instance=instance, resources=resources))
        assert "no DARTS file" in empty.skip_message

        release = folder / "DARTS_NitzeEtAl_v1_level2.parquet"
        release.write_bytes(b"first")
        (folder / ".DARTS_x.parquet.tmp").write_bytes(b"a writer's temp file is not a release")
        first = darts_release(dg.build_sensor_context(instance=instance, resources=resources))
        (run,) = first.run_requests
        assert first.cursor

        same = darts_release(
            dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
        )
        assert isinstance(same, dg.SkipReason) and "unchanged" in same.skip_message

        release.write_bytes(b"second version")
        os.utime(release, ns=(1, 2))
        changed = darts_release(
            dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
        )
        (again,) = changed.run_requests
        assert again.run_key != run.run_key and changed.cursor != first.cursor


def test_alphaearth_sensor_updates_the_materialised_statistics_when_a_year_appears(
    tmp_path: Path,
) -> None:
    root = tmp_path / "sources" / "alphaearth"
    (root / "2022").mkdir(parents=True)
    resources = {
        "earth_engine": EarthEngineResource(client="offline"),
        "data_dir": DataDirResource(path=str(tmp_path)),
    }
    with dg.instance_for_test() as instance:
        first = alphaearth_years(dg.build_sensor_context(instance=instance, resources=resources))
        assert not first.run_requests and json.loads(first.cursor) == [2022]

        (root / "2023").mkdir()
        never = alphaearth_years(
            dg.build_sensor_context(instance=instance, resources=resources, cursor=first.cursor)
        )
        assert not never.run_requests and "never materialised" in str(never.skip_reason)
        assert json.loads(never.cursor) == [2022, 2023]

        _report(instance, "alphaearth_statistics")
        (root / "2024").mkdir()
        context = dg.build_sensor_context(
            instance=instance, resources=resources, cursor=never.cursor
        )
        result = alphaearth_years(context)
        (run,) = result.run_requests
        assert run.partition_key is None and run.run_key == "alphaearth-2024-3"
        assert json.loads(result.cursor) == [2022, 2023, 2024]


def test_models_follow_updated_inputs_and_missing_ones_are_not_trained() -> None:
    from entropice_dagster.definitions import defs

    key = dg.MultiPartitionKey({"grid_level": "h3_5", "experiment": "espa-binary"})
    with dg.instance_for_test() as instance:
        for asset in ("rts_labels", "terrain_features", "climate_features", "alphaearth_features"):
            for level in ("h3_5", "h3_6"):
                _report(instance, asset, level)
        _report(instance, "grid_cells", "h3_5")
        _report(instance, "training_dataset", "h3_5")
        _report(instance, "trained_model", key)
        _report(instance, "predictions", key)
        _report(instance, "experiment_summary")
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # nothing changed; h3_6 and 179 models stay missing

        # new labels: the dataset first, then (once it is rebuilt) the model with its
        # predictions in one run, then the leaderboard: one stage per tick
        _report(instance, "rts_labels", "h3_5")
        cursor = first.cursor
        stages = []
        for rebuilt in ("training_dataset", "trained_model", "experiment_summary", None):
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            stages.append(
                {
                    asset: result.get_requested_partitions(dg.AssetKey(asset))
                    for asset in (
                        "training_dataset", "trained_model", "predictions", "experiment_summary"
                    )
                    if result.get_requested_partitions(dg.AssetKey(asset))
                }
            )  # fmt: skip
            if rebuilt is not None:
                for partition in stages[-1][rebuilt]:
                    _report(instance, rebuilt, partition)
                if rebuilt == "trained_model":
                    _report(instance, "predictions", key)
        assert stages == [
            {"training_dataset": {"h3_5"}},  # not h3_6: its labels did not change
            {"trained_model": {key}, "predictions": {key}},
            {"experiment_summary": {None}},
            {},
        ]


@dg.asset(
    partitions_def=dg.StaticPartitionsDefinition(["a", "b"]),
    config_schema=dg.Field(str, default_value="v1"),
)
def labels_like(context: dg.AssetExecutionContext) -> dg.Output[int]:
    return dg.Output(1, data_version=dg.DataVersion(context.op_execution_context.op_config))


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b"]))
def dataset_like(labels_like: int) -> dg.Output[int]:
    return dg.Output(labels_like + 1, data_version=dg.DataVersion("d"))


@dg.asset(partitions_def=dg.StaticPartitionsDefinition(["a", "b"]))
def model_like(context: dg.AssetExecutionContext, dataset_like: int) -> int:
    refuse_outdated(context, {"dataset_like": context.partition_key})
    return dataset_like * 10


@pytest.mark.parametrize("content", ["v1", "v2"])
def test_a_model_is_refused_on_a_dataset_older_than_its_labels(content: str) -> None:
    graph = [labels_like, dataset_like, model_like]
    with dg.instance_for_test() as instance:
        assert dg.materialize(graph, partition_key="a", instance=instance).success
        # the labels are rebuilt: same content (v1) or new content (v2)
        dg.materialize(
            [labels_like],
            partition_key="a",
            instance=instance,
            run_config={"ops": {"labels_like": {"config": content}}},
        )
        alone = dg.materialize(
            graph, selection=["model_like"], partition_key="a", instance=instance,
            raise_on_error=False,
        )  # fmt: skip
        if content == "v1":  # the same data: nothing is outdated
            assert alone.success
            assert outdated_inputs(instance, "dataset_like", "a") == []
            return
        assert not alone.success
        assert outdated_inputs(instance, "dataset_like", "a") == ["labels_like a"]
        (failure,) = [e for e in alone.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.message
        assert "dataset_like a was built before labels_like a changed" in message
        assert "Materialise dataset_like a first" in message
        # partition b never read the new labels: untouched
        assert outdated_inputs(instance, "dataset_like", "b") == []
        # rebuilding the dataset clears it
        dg.materialize(graph, selection=["dataset_like", "model_like"], partition_key="a",
                       instance=instance)  # fmt: skip
        assert outdated_inputs(instance, "dataset_like", "a") == []
