"""Several processes on JAX's distributed runtime (gloo CPU collectives), via the launch script.

Two processes x 2 virtual CPU devices train a tiny config for a few steps: both report the same
loss each step, the losses equal a 1-process 4-device run, one checkpoint is written, and a
1-process run resumes from it. A missing or dead process makes the others fail, not hang.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store_fixtures import make_tiny_store
from train_helpers import tiny_train_args

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "local_multiprocess.sh"
STEPS = 3
LOSS_LINE = re.compile(r"step (\d+)/\d+\s+loss ([0-9.eE+-]+)")


def tiny_overrides(store: Path, workdir: Path, total_steps: int = STEPS) -> list[str]:
    return tiny_train_args(store, workdir, total_steps)


def _env(devices: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PETSEG_LOG_ALL_PROCESSES="1", PYTHONPATH=str(REPO), **extra)
    return env


def _losses(text: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in LOSS_LINE.findall(text)}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_tiny_store(tmp_path_factory.mktemp("mp") / "store", cases=4)


@pytest.fixture(scope="module")
def two_process_run(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("mp_run")
    logs = root / "logs"
    proc = subprocess.run(  # with the demo's closing stages (evaluation, export) on
        ["bash", str(LAUNCH), "2", "--", *tiny_overrides(store, root / "w2"),
         "--config.evaluation.split=val", "--config.evaluation.mip_cases=0",
         "--config.export.enabled=True"],
        cwd=REPO, env=_env(2, PETSEG_LOG_DIR=str(logs)), capture_output=True, text=True,
        timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr + "".join(
        p.read_text() for p in sorted(logs.glob("*.log")))
    return root, logs


def test_processes_agree_and_match_single_process(two_process_run, store):
    root, logs = two_process_run
    per_process = [_losses((logs / f"process_{i}.log").read_text()) for i in range(2)]
    assert sorted(per_process[0]) == list(range(1, STEPS + 1))
    assert per_process[0] == per_process[1]  # replicated loss: bitwise the same on both

    runs = {}
    for devices in (4, 1):  # 1 process x 4 devices, and the unsharded 1-device step
        single = subprocess.run(
            [sys.executable, "-m", "petseg_jax.train", *tiny_overrides(store, root / f"d{devices}")],
            cwd=REPO, env=_env(devices), capture_output=True, text=True, timeout=600)
        assert single.returncode == 0, single.stdout + single.stderr
        runs[devices] = _losses(single.stdout + single.stderr)
    for reference in runs.values():
        assert sorted(reference) == sorted(per_process[0])
        for step, loss in reference.items():
            assert per_process[0][step] == pytest.approx(loss, rel=1e-4, abs=1e-5)


def test_closing_stages_run_and_every_process_exits_0(two_process_run):
    """After training, process 0 evaluates and exports alone: no process waits on another
    (the launcher's status 0 is every process's), and the evaluation summary is written."""
    root, logs = two_process_run
    assert (root / "w2" / "eval" / "summary.json").exists()
    assert (root / "w2" / "export" / "meta.json").exists()
    for i in range(2):
        assert "timed out" not in (logs / f"process_{i}.log").read_text().lower()


def test_one_checkpoint_and_resume_with_fewer_processes(two_process_run, store):
    root, _ = two_process_run
    ckpts = sorted(p.name for p in (root / "w2" / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpts == [str(STEPS)]
    resumed = subprocess.run(
        [sys.executable, "-m", "petseg_jax.train",
         *tiny_overrides(store, root / "w2", total_steps=STEPS + 1)],
        cwd=REPO, env=_env(1), capture_output=True, text=True, timeout=600)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out
    assert f"at step {STEPS}" in out
    assert list(_losses(out)) == [STEPS + 1]


def test_missing_process_fails_instead_of_hanging(store, tmp_path):
    """Process 0 of 2 alone: the coordinator never sees process 1 and gives up with an error."""
    env = _env(1, JAX_COORDINATOR_ADDRESS="127.0.0.1:29731", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID="0", PETSEG_INIT_TIMEOUT_S="10")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "petseg_jax.train", *tiny_overrides(store, tmp_path / "w")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert time.monotonic() - start < 240


def test_dead_process_stops_the_job(store, tmp_path):
    """Kill process 1 once the job runs: the launcher stops process 0 and exits non-zero, in
    bounded time (process 0 is then inside the distributed runtime, waiting on process 1)."""
    logs = tmp_path / "logs"
    launcher = subprocess.Popen(
        ["bash", str(LAUNCH), "2", "--", *tiny_overrides(store, tmp_path / "w", total_steps=10_000)],
        cwd=REPO, env=_env(1, PETSEG_LOG_DIR=str(logs)), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline:
            log1 = logs / "process_1.log"
            if log1.exists() and "cases:" in log1.read_text():
                victim = _find_process(launcher.pid, "JAX_PROCESS_ID=1")
            time.sleep(0.5)
        assert victim is not None, "process 1 never got past the distributed start-up"
        os.kill(victim, signal.SIGKILL)
        out, _ = launcher.communicate(timeout=180)
        assert launcher.returncode != 0, out
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)


def _find_process(session_leader: int, env_marker: str) -> int | None:
    """A python process of the launcher's session whose environment holds ``env_marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session_leader:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        if env_marker.encode() in environ and b"petseg_jax.train" in cmdline:
            return int(entry.name)
    return None
