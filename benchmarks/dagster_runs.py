"""Run overhead: what a one-partition run of a light asset costs beyond its work.

``rts_labels`` of one coarse grid level (a few seconds of work on the sample region) four
ways, in one run of this script:

1. the work alone: ``dg.materialize`` in this process, definitions and the asset's own lazy
   imports already loaded (a second materialisation);
2. ``import entropice_dagster.definitions`` in a fresh interpreter (every run process pays it);
3. ``dagster asset materialize`` with the multiprocess executor (Dagster's default: the run
   process imports the definitions, then each step process imports them again);
4. the same with the code location's executor (in-process: one import per run);
5. launched through the instance as the UI does (``dagster job launch`` of the one-asset job the
   UI builds: the run launcher starts a run worker process, which imports the definitions and
   executes the step), timed from the run's creation to its end as the instance records them
   (the CLI's own start and code-location load are left out: the webserver keeps it loaded).

Run: ``.venv/bin/python benchmarks/dagster_runs.py [--data-dir DIR] [--partition h3_4]``.
Without ``--data-dir`` the sample region is generated and the asset's inputs materialised first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UPSTREAM = ["watermask", "grid_cells", "darts_polygons", "darts_coverage"]
MULTIPROCESS = """\
import dagster as dg
from entropice_dagster.definitions import defs
defs = dg.Definitions(assets=defs.assets, jobs=defs.jobs, resources=defs.resources,
                      executor=dg.multiprocess_executor)
"""
#: The job the UI builds when one asset is materialised (its asset selection, nothing else).
ONE_ASSET = """\
import dagster as dg
from entropice_dagster.definitions import defs
job = dg.define_asset_job("rts_labels_only", selection=["rts_labels"])
defs = dg.Definitions(assets=defs.assets, jobs=[job], resources=defs.resources,
                      executor=defs.executor)
"""


def _environment(home: Path, data_dir: Path) -> dict[str, str]:
    return os.environ | {
        "DAGSTER_HOME": str(home),
        "ENTROPICE_DATA_DIR": str(data_dir),
        "ENTROPICE_AUTOMATION": "off",
    }


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def _home(root: Path, name: str) -> Path:
    home = root / name
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def _launched(root: Path, data_dir: Path, partition: str) -> float:
    """`dagster job launch` with the default run coordinator (no daemon queue in between),
    until the instance records the run's success."""
    home = root / "launch"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n"
        "  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    env = _environment(home, data_dir)
    (root / "one_asset_defs.py").write_text(ONE_ASSET)
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "dagster"), "job", "launch", "-f", str(root / "one_asset_defs.py"),
         "-j", "rts_labels_only", "--tags", json.dumps({"dagster/partition": partition})],
        cwd=REPO, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        while time.perf_counter() - started < 600:
            (record,) = instance.get_run_records(limit=1)
            if record.dagster_run.is_finished:
                assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS, record
                # from the run's creation (the UI's click; the CLI first loads the code
                # location, which the webserver keeps loaded) to its end
                assert record.end_time is not None
                return record.end_time - record.create_timestamp.timestamp()
            time.sleep(0.2)
        raise TimeoutError("the launched run did not end within 600 s")
    finally:
        instance.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="a data dir with the inputs materialised")
    parser.add_argument("--partition", default="h3_4")
    args = parser.parse_args()
    from entropice_dagster.assets import all_assets
    from entropice_dagster.resources import project_resources

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = args.data_dir
        if data_dir is None:
            from entropice_core.sample import generate_sample_region

            data_dir = root / "data"
            generate_sample_region(data_dir, seed=42)
        resources = project_resources(data_dir, "sample")
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

        def materialise(selection: list[str], partition: str | None) -> None:
            result = dg.materialize(
                all_assets, selection=selection, partition_key=partition,
                resources=resources, run_config=quiet,
            )  # fmt: skip
            assert result.success

        if args.data_dir is None:
            materialise(["watermask", "darts_polygons", "darts_coverage"], None)
            materialise(["grid_cells"], args.partition)
        materialise(["rts_labels"], args.partition)  # warm: the asset's own lazy imports
        started = time.perf_counter()
        materialise(["rts_labels"], args.partition)
        work = time.perf_counter() - started

        env = _environment(_home(root, "cli"), data_dir)
        imports = _timed([sys.executable, "-c", "import entropice_dagster.definitions"], env)
        (root / "multiprocess_defs.py").write_text(MULTIPROCESS)
        cli = [str(BIN / "dagster"), "asset", "materialize", "--select", "rts_labels"]
        cli += ["--partition", args.partition]
        multiprocess = _timed([*cli, "-f", str(root / "multiprocess_defs.py")], env)
        in_process = _timed([*cli, "-m", "entropice_dagster.definitions"], env)
        launched = _launched(root, data_dir, args.partition)

    table = Table(title=f"One run of rts_labels {args.partition} (sample region)")
    for column in ("how", "seconds", "overhead s"):
        table.add_column(column, justify="left" if column == "how" else "right")
    rows = [
        ("the work alone (dg.materialize, warm process)", work),
        ("import entropice_dagster.definitions (fresh interpreter)", imports),
        ("dagster asset materialize, multiprocess executor", multiprocess),
        ("dagster asset materialize, the code location's executor", in_process),
        ("launched through the instance: run created -> run ended", launched),
    ]
    for how, seconds in rows:
        overhead = "" if how.startswith(("the work", "import")) else f"{seconds - work:.1f}"
        table.add_row(how, f"{seconds:.1f}", overhead)
    Console().print(table)


if __name__ == "__main__":
    main()
