"""The built wheel works outside the checkout: configs and the dagster.yaml template are package
data, and the definitions load from an installed copy (not the repository)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _uv() -> str:
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.fail("uv is missing: `make test` installs it into .tools/bin")
    return uv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    env = os.environ | {"UV_PYTHON_DOWNLOADS": "never"}
    done = subprocess.run(
        [_uv(), "build", "--offline", "--wheel", "-o", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("entropice-*.whl")
    return path


def test_the_wheel_carries_the_configs_and_the_instance_template(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (REPO / "entropice_core" / "configs").glob("*.toml")}
    assert {"dataset.toml", "espa-binary.toml"} <= shipped
    assert {f"entropice_core/configs/{name}" for name in shipped} <= names
    assert "entropice_dagster/dagster.yaml" in names


def test_the_installed_wheel_loads_the_definitions(wheel: Path, tmp_path: Path) -> None:
    # A fresh venv whose only entropice is the wheel; the dependencies come from this
    # environment's site-packages through a .pth line (which does not run this environment's
    # own .pth files, so the editable install of the checkout stays invisible).
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [_uv(), "pip", "install", "--offline", "--no-deps", "--python", str(python), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    script = (
        "import entropice_dagster, entropice_dagster.definitions as d\n"
        "from importlib.resources import files\n"
        "from entropice_dagster.partitions import experiment_partitions\n"
        "print(entropice_dagster.__file__)\n"
        "print(len(d.defs.resolve_asset_graph().get_all_asset_keys()))\n"
        "print(','.join(experiment_partitions.get_partition_keys()))\n"
        "print('concurrency' in files('entropice_dagster').joinpath('dagster.yaml').read_text())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "ENTROPICE_CONFIG_DIR"}}
    done = subprocess.run(
        [str(python), "-c", script],
        cwd=tmp_path, env=env | {"ENTROPICE_DATA_DIR": str(tmp_path / "data")},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    module, assets, experiments, template = done.stdout.split()
    assert Path(module).is_relative_to(venv), module
    assert int(assets) >= 10
    expected = sorted(p.stem for p in (REPO / "configs").glob("*-*.toml"))
    assert experiments.split(",") == expected
    assert template == "True"
