"""No orphans: worker processes (the process pools of ingest, the phantom generator and the
closing stages, grain's input workers) end when their parent is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from petseg_jax.bench.common import _descendants
from petseg_jax.workers import ORPHAN_EXIT_STATUS
from store_fixtures import make_tiny_store

REPO = Path(__file__).resolve().parents[2]
POOL_DRIVER = """
import time
from petseg_jax.workers import process_pool
pool = process_pool(2)
futures = [pool.submit(time.sleep, 600) for _ in range(2)]
time.sleep(1.0)  # both workers started
print("ready", flush=True)
time.sleep(600)
"""
GRAIN_DRIVER = """
import sys
from petseg_jax.data.pipeline import make_train_iterator
it = make_train_iterator(sys.argv[1], None, data_cfg={"patch_size": (8, 8, 8)},
                         local_batch_size=2, seed=0, workers=2)
next(it)
print("ready", flush=True)
while True:
    next(it)
"""


def _workers_die_with(driver: str, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    parent = subprocess.Popen([sys.executable, "-c", driver, *args], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "ready"
        workers = [p for p in _descendants(parent.pid) if p != parent.pid]
        assert len(workers) >= 2, "the driver started no worker processes"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [p for p in workers if _alive(p)]
        assert not alive, f"workers {alive} outlived their parent by 10 s"
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def test_pool_workers_exit_when_the_parent_is_killed():
    _workers_die_with(POOL_DRIVER)


def test_grain_workers_exit_when_the_parent_is_killed(tmp_path):
    store = make_tiny_store(tmp_path / "store", cases=2)
    _workers_die_with(GRAIN_DRIVER, str(store))


def test_a_worker_whose_parent_is_gone_exits_at_once():
    """A worker that starts after its parent died (re-parented already) exits at start-up."""
    code = ("import os\nfrom petseg_jax.workers import exit_with_parent\n"
            "exit_with_parent(os.getppid() + 100000)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(
        os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert out.returncode == ORPHAN_EXIT_STATUS
