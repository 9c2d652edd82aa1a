"""A team deployment: deploy/dagster-postgres.yaml against a real PostgreSQL server.

The test starts its own cluster (Debian's ``postgresql`` binaries: ``initdb``, ``pg_ctl``) in a
temporary folder on a loopback port, runs ``dagster-daemon`` and ``dagster-webserver`` with that
file as the instance, materialises a partition and a two-partition backfill through the GraphQL
API (as the UI does), and reads the runs, the backfill and the materialisations back through it.

``initdb`` refuses to run as root: as root the cluster runs as the ``postgres`` user that the
Debian package creates (``.ci/run`` installs the package where ``initdb`` is missing). Without
the binaries the test skips, and under ``CI`` it fails.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.dagster_stack import REPO, DagsterStack, dagster_stack, free_port

POSTGRES_YAML = REPO / "deploy" / "dagster-postgres.yaml"
#: The cluster's superuser and the database Dagster stores into.
USER, PASSWORD, DATABASE = "entropice", "not-a-secret", "dagster"

LAUNCH_RUN = """mutation ($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } }
} }"""
LAUNCH_BACKFILL = """mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest
    /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return versions[-1].parent if versions else None


@dataclass(frozen=True)
class Cluster:
    """A running PostgreSQL cluster: the environment deploy/dagster-postgres.yaml reads."""

    port: int
    env: dict[str, str]


@contextlib.contextmanager
def postgres_cluster(bin_dir: Path) -> Iterator[Cluster]:
    """initdb a cluster into a temporary folder, start it on 127.0.0.1 (its socket in that
    folder), create DATABASE, and stop and remove it when the block ends."""
    # initdb and postgres refuse root: run them as the package's unprivileged user
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs the 'postgres' user (apt-get install postgresql)")
    # not under pytest's tmp_path: its parents are private to root, the server must enter it
    root = Path(tempfile.mkdtemp(prefix="entropice-pg-"))
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    uid, gid = (user.pw_uid, user.pw_gid) if user is not None else (None, None)
    data, log, port = root / "data", root / "postgres.log", free_port()
    (root / "password").write_text(PASSWORD)

    def run(*command: str | Path) -> None:
        done = subprocess.run(
            [str(c) for c in command], cwd=root, capture_output=True, text=True,
            timeout=180, check=False,
            user=uid, group=gid, extra_groups=None if uid is None else [],
        )  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"

    try:
        run(
            bin_dir / "initdb", "-D", data, "-U", USER, "--pwfile", root / "password",
            "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C", "--no-sync",
        )  # fmt: skip
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        try:
            run(
                bin_dir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "120", "start"
            )
        except AssertionError:
            pytest.fail(log.read_text() if log.exists() else "pg_ctl start failed")
        env = {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_USER": USER,
            "DAGSTER_PG_PASSWORD": PASSWORD,
            "DAGSTER_PG_DB": DATABASE,
        }
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres"
        )
        connection.autocommit = True  # CREATE DATABASE runs outside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            connection.close()
        yield Cluster(port, env)
    finally:
        if (data / "postmaster.pid").exists():
            run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        message = "PostgreSQL missing: apt-get install -y postgresql (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with postgres_cluster(bin_dir) as running:
        yield running


@pytest.fixture(scope="module")
def stack(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterStack]:
    root = tmp_path_factory.mktemp("postgres-stack")
    with dagster_stack(root, POSTGRES_YAML, cluster.env) as running:
        yield running


def test_postgres_yaml_matches_dagster_yaml_but_for_storage() -> None:
    """One person's dagster.yaml and the team's file differ only in where they store."""
    single = yaml.safe_load((REPO / "dagster.yaml").read_text())
    team = yaml.safe_load(POSTGRES_YAML.read_text())
    postgres_db = team.pop("storage")["postgres"]["postgres_db"]
    assert team == single
    assert "storage" not in single  # SQLite under $DAGSTER_HOME
    assert postgres_db.pop("scheme") == "postgresql+psycopg2"  # the installed driver
    assert postgres_db == {
        field: {"env": f"DAGSTER_PG_{name}"}
        for field, name in [
            ("hostname", "HOST"),
            ("port", "PORT"),
            ("username", "USER"),
            ("password", "PASSWORD"),
            ("db_name", "DB"),
        ]
    }


@pytest.mark.slow  # a PostgreSQL cluster, the daemon, the webserver and three runs
def test_daemon_and_webserver_store_runs_in_postgres(stack: DagsterStack, cluster: Cluster):
    # one partition (with the water mask it needs), launched as the UI's Materialize does
    params = {
        "selector": {
            "repositoryLocationName": "entropice",
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["watermask"]}, {"path": ["grid_cells"]}],
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "h3_3"}]},
    }
    launched = stack.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    stack.wait_for_runs(lambda run: run["runId"] == run_id, 1)

    # two partitions as one backfill, run by the daemon
    backfill = {"partitionNames": ["h3_4", "h3_5"], "assetSelection": [{"path": ["grid_cells"]}]}
    launched = stack.graphql(LAUNCH_BACKFILL, {"params": backfill})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    backfill_runs = stack.wait_for_backfill(backfill_id)

    # read back through GraphQL: the runs, their status and the materialisations
    runs = stack.runs()
    assert {run["status"] for run in runs} == {"SUCCESS"}
    # one run per partition, or one for both (a single-run backfill policy)
    assert {run["partition"] for run in backfill_runs} <= {"h3_4", "h3_5", None}
    assert sorted(stack.backfill(backfill_id)["partitionNames"]) == ["h3_4", "h3_5"]
    partitions = stack.materialised_partitions("grid_cells")
    assert set(partitions) == {"h3_3", "h3_4", "h3_5"}
    assert partitions["h3_3"] == run_id
    assert set(stack.materialised_partitions("watermask")) == {None}
    for key in ("h3_3", "h3_4", "h3_5"):
        assert (stack.data_dir / "grids" / f"{key}.parquet").is_file()

    # ... and they live in PostgreSQL, not in SQLite files under DAGSTER_HOME
    assert not list(stack.home.rglob("*.db"))
    import psycopg2

    with (
        psycopg2.connect(
            host="127.0.0.1", port=cluster.port, user=USER, password=PASSWORD, dbname=DATABASE
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT run_id, status FROM runs")
        stored = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM bulk_actions")
        (backfills,) = cursor.fetchone()
    assert stored == {run["runId"]: "SUCCESS" for run in runs}
    assert backfills == 1
