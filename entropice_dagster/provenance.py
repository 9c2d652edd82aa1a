"""Stale inputs: a model is never trained on a dataset older than the data it was built from.

Every materialisation records which materialisation of each input it read (Dagster's
``dagster/input_event_pointer/<asset>`` tags) and its own data version (the content hash that
``checks.checked_output`` gives). An input is *outdated* when its asset has been materialised
since with other content. Materialising ``trained_model`` alone after ``rts_labels`` changed
would train on the old ``training_dataset``; ``refuse_outdated`` stops such a run before any
work, with the asset to materialise first. With the automation sensor on, the intermediate
assets are rebuilt by their automation conditions instead.
"""

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"
INPUT_POINTER_PREFIX = "dagster/input_event_pointer/"


def _latest(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None
) -> dg.EventLogRecord | None:
    partitions = [partition] if partition is not None else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=1
    ).records
    return records[0] if records else None


def _version(record: dg.EventLogRecord) -> str | None:
    materialization = record.asset_materialization
    return (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization else None


def outdated_inputs(instance: dg.DagsterInstance, asset: str, partition: str | None) -> list[str]:
    """The inputs of the latest materialisation of ``asset`` (``partition``) whose asset has
    been materialised since with other content, as "asset partition" strings."""
    record = _latest(instance, dg.AssetKey.from_user_string(asset), partition)
    if record is None or record.asset_materialization is None:
        return []
    outdated = []
    for tag, pointer in (record.asset_materialization.tags or {}).items():
        if not tag.startswith(INPUT_POINTER_PREFIX):
            continue
        key = dg.AssetKey.from_user_string(tag.removeprefix(INPUT_POINTER_PREFIX))
        read = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=[int(pointer)]), limit=1
        ).records
        if not read:  # wiped from the instance: nothing to compare with
            continue
        latest = _latest(instance, key, read[0].partition_key)
        if latest is None or latest.storage_id == read[0].storage_id:
            continue
        if _version(latest) is None or _version(latest) != _version(read[0]):
            outdated.append(" ".join(filter(None, (key.to_user_string(), read[0].partition_key))))
    return outdated


def refuse_outdated(context: dg.AssetExecutionContext, inputs: dict[str, str | None]) -> None:
    """Fail before any work if an input (asset -> partition read) was built from outdated data.

    Raises
    ------
    dagster.Failure
        Naming each outdated input, what changed under it, and what to materialise first.
    """
    problems = {
        " ".join(filter(None, (asset, partition))): changed
        for asset, partition in inputs.items()
        if (changed := outdated_inputs(context.instance, asset, partition))
    }
    if problems:
        lines = [f"{what} was built before {', '.join(c)} changed" for what, c in problems.items()]
        raise dg.Failure(
            description="; ".join(lines)
            + ". Materialise "
            + " and ".join(problems)
            + " first (the entropice_automation sensor does it when on), then this asset.",
            metadata={"outdated_inputs": dg.MetadataValue.json(problems)},
        )
