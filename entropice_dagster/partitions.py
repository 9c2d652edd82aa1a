"""Partition definitions shared by the asset graph.

One ``grid_level`` key is one (grid, level) pair such as ``h3_5``; ``GridSpec.from_key`` parses it.
A new grid or level is a new key here, never a new asset.
"""

import argparse
import datetime as dt
from collections.abc import Sequence
from typing import Any

import dagster as dg
from dagster._core.errors import DagsterUnknownPartitionError

from entropice_core.config import DEFAULT_GRID_LEVELS, config_dir_from_env
from entropice_core.ingest.era5 import latest_published_arctic_year
from entropice_core.ml.training import experiment_keys

grid_partitions = dg.StaticPartitionsDefinition(list(DEFAULT_GRID_LEVELS))

#: Experiment and dataset configs (<model>-<task>.toml, dataset.toml): ENTROPICE_CONFIG_DIR, or
#: the ones shipped in the package (the repository's configs/ links to them).
CONFIG_DIR = config_dir_from_env()
#: One key per experiment file: a new configs/<model>-<task>.toml is a new partition.
experiment_partitions = dg.StaticPartitionsDefinition(experiment_keys(CONFIG_DIR))
#: Trained models and predictions: one per grid level and experiment (key "espa-binary|h3_5").
model_partitions = dg.MultiPartitionsDefinition(
    {"grid_level": grid_partitions, "experiment": experiment_partitions}
)

#: The name of the dynamic partitions of Arctic years on the instance.
ARCTIC_YEAR = "arctic_year"
#: The first Arctic year ERA5 holds whole (October 1940 - September 1941).
FIRST_ERA5_ARCTIC_YEAR = 1941
#: The command that adds Arctic years to the instance in $DAGSTER_HOME.
ADD_YEARS = "python -m entropice_dagster.partitions add-years"


def unknown_year_message(key: str) -> str:
    """Say that an Arctic year is not a partition yet, and how to add it.

    Parameters
    ----------
    key : str
        The partition key asked for.

    Returns
    -------
    str
        One line naming the command to type.
    """
    latest = latest_published_arctic_year(dt.datetime.now(dt.UTC))
    if not key.isdigit() or not FIRST_ERA5_ARCTIC_YEAR <= int(key) <= latest:
        return (
            f"{key!r} is not an Arctic year ERA5 has published: arctic_year keys are the year "
            f"in which an Arctic year (1 October - 30 September) ends, {FIRST_ERA5_ARCTIC_YEAR}"
            f"-{latest} now, e.g. 2023"
        )
    return (
        f"Arctic year {key} is not a partition of {ARCTIC_YEAR} on this Dagster instance "
        f"($DAGSTER_HOME) yet: add it with `{ADD_YEARS} {key}` (or in the UI: an era5 asset, "
        "Materialize, 'Add partition'), or switch on the era5_arctic_years sensor, which adds "
        "every published year; then run again"
    )


class ArcticYearPartitions(dg.DynamicPartitionsDefinition):
    """Dynamic partitions whose unknown keys fail with :func:`unknown_year_message`."""

    def validate_partition_key(self, partition_key: str, context: Any) -> None:
        """Refuse a key the instance lacks, naming the command that adds it."""
        try:
            super().validate_partition_key(partition_key, context)
        except DagsterUnknownPartitionError:
            raise DagsterUnknownPartitionError(unknown_year_message(partition_key)) from None


arctic_year_partitions = ArcticYearPartitions(name=ARCTIC_YEAR)
"""Arctic years (1 Oct Y-1 .. 30 Sep Y) keyed ``"Y"``, the year in which they end.

Dynamic because a year becomes a partition only once it has ended and ERA5 has published it:
the ``era5_arctic_years`` sensor adds the keys (time-window partitions would key a year by its
start). Add keys by hand with ``python -m entropice_dagster.partitions add-years 2023``, in the
UI, or with ``instance.add_dynamic_partitions``.
"""


def add_years(instance: dg.DagsterInstance, years: Sequence[int]) -> list[str]:
    """Add Arctic years as ``arctic_year`` partitions; return the keys that were new.

    Parameters
    ----------
    instance : dagster.DagsterInstance
        The instance.
    years : sequence of int
        Arctic years (the year each ends).

    Returns
    -------
    list of str
        The keys added (those already there are left alone).

    Raises
    ------
    ValueError
        If a year is not one ERA5 has published (:func:`unknown_year_message`).
    """
    latest = latest_published_arctic_year(dt.datetime.now(dt.UTC))
    for year in years:
        if not FIRST_ERA5_ARCTIC_YEAR <= year <= latest:
            raise ValueError(unknown_year_message(str(year)))
    known = set(instance.get_dynamic_partitions(ARCTIC_YEAR))
    new = sorted({str(y) for y in years} - known)
    if new:
        instance.add_dynamic_partitions(ARCTIC_YEAR, new)
    return new


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m entropice_dagster.partitions add-years 2022 2023`` (or ``list-years``)."""
    parser = argparse.ArgumentParser(
        prog="python -m entropice_dagster.partitions",
        description="Arctic-year partitions of the Dagster instance in $DAGSTER_HOME.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-years", help="add Arctic years (the year each ends)")
    add.add_argument("years", nargs="+", type=int, metavar="YEAR")
    commands.add_parser("list-years", help="print the Arctic years the instance has")
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        if args.command == "list-years":
            print(" ".join(sorted(instance.get_dynamic_partitions(ARCTIC_YEAR))))
            return
        try:
            new = add_years(instance, args.years)
        except ValueError as err:
            parser.error(str(err))
    print(f"added {' '.join(new) or 'nothing (all there already)'} to {ARCTIC_YEAR}")


if __name__ == "__main__":
    main()
