"""Run the dashboard as a server process on a loopback port (the browser test, the benchmark)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

APP = Path(__file__).with_name("app.py")


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1.

    Returns
    -------
    int
        The port.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(
    data_dir: Path, log: Path, port: int | None = None, timeout_s: float = 180.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``streamlit run`` on 127.0.0.1 until the block ends.

    Parameters
    ----------
    data_dir : Path
        ENTROPICE_DATA_DIR of the server.
    log : Path
        File for the server's output.
    port : int, optional
        Port (default: a free one).
    timeout_s : float, optional
        How long to wait for the health endpoint.

    Yields
    ------
    tuple of (str, subprocess.Popen)
        The base URL and the server process.

    Raises
    ------
    RuntimeError
        If the server exits or does not answer within ``timeout_s``.
    """
    port = port or free_port()
    env = os.environ | {"ENTROPICE_DATA_DIR": str(data_dir)}
    streamlit = Path(sys.executable).with_name("streamlit")
    command = [
        str(streamlit), "run", str(APP),
        "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def peak_rss_mb(pid: int) -> float:
    """Return a process's peak resident memory (``VmHWM``, Linux) in MiB.

    Parameters
    ----------
    pid : int
        Process id.

    Returns
    -------
    float
        MiB; NaN where /proc has no such field.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
