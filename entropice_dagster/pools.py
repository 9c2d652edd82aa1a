"""The concurrency pools the assets declare, and the limits an instance starts with.

- ``dask``: the assets that write Icechunk or Zarr stores from the Dask cluster
  (terrain_derivatives, terrain_statistics). Its limit of one (dagster.yaml's
  ``default_limit``) serialises commits to the local repositories and keeps one memory-heavy
  raster pass on the cluster at a time.
- ``gpu``: the assets that run on a GPU when their experiment's ``device`` is ``cuda``
  (trained_model, predictions). Its limit is the number of GPUs, so that no two model steps
  share one; on a machine without a GPU the steps run on the CPU and the limit is the
  instance's ``max_concurrent_runs`` (the pool then holds nothing back).

Dagster OSS keeps per-pool limits in the instance's storage, not in dagster.yaml:
:func:`ensure_pool_limits` gives ``gpu`` its limit where nobody has set one (``make demo``
and ``make ui`` call it; ``dagster instance concurrency set gpu N`` overrides it for good).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import dagster as dg

#: Pool of the assets that write stores from the Dask cluster.
DASK_POOL = "dask"
#: Pool of the assets that may run on a GPU.
GPU_POOL = "gpu"


def visible_gpus() -> int:
    """Count the CUDA GPUs this machine offers: ``CUDA_VISIBLE_DEVICES`` where set, else
    ``nvidia-smi -L``; 0 without a driver."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def gpu_pool_limit(instance: dg.DagsterInstance) -> int:
    """The ``gpu`` pool's default limit: one step per GPU, or, without a GPU, as many as
    runs may run at once (one per core where the runs are not limited)."""
    gpus = visible_gpus()
    if gpus:
        return gpus
    runs = instance.get_concurrency_config().run_queue_config
    limit = runs.max_concurrent_runs if runs else 0
    return limit if limit > 0 else os.cpu_count() or 1


def ensure_pool_limits(instance: dg.DagsterInstance) -> dict[str, int]:
    """Give the ``gpu`` pool its default limit unless one was set explicitly; return the
    explicit limits afterwards (``dask`` keeps dagster.yaml's default of one)."""
    storage = instance.event_log_storage
    explicit = {
        pool.name: pool.limit for pool in storage.get_pool_limits() if not pool.from_default
    }
    if GPU_POOL not in explicit:
        explicit[GPU_POOL] = gpu_pool_limit(instance)
        storage.set_concurrency_slots(GPU_POOL, explicit[GPU_POOL])
    return explicit


if __name__ == "__main__":  # make ui: before `dagster dev` starts on $DAGSTER_HOME
    limits = ensure_pool_limits(dg.DagsterInstance.get())
    print("pool limits: " + ", ".join(f"{name} {limit}" for name, limit in sorted(limits.items())))
