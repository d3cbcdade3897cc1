"""``mesh.cpu_devices``: the host CPU split into several JAX devices, before JAX starts."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from petseg_jax.training import mesh
mesh.configure_cpu_devices(int(sys.argv[1]))
import jax
print("devices", jax.device_count())
mesh.configure_cpu_devices(int(sys.argv[1]) + 1)  # too late: JAX has started
"""


def _run(count: int, xla_flags: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    return subprocess.run([sys.executable, "-c", SCRIPT, str(count)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.parametrize("count", [1, 2])
def test_cpu_devices_split_the_host_and_a_late_change_is_a_warning(count):
    out = _run(count, None)
    assert f"devices {count}" in out.stdout
    assert f"already started with {count} CPU device(s); mesh.cpu_devices={count + 1}" in out.stderr


def test_xla_flags_take_precedence_with_a_warning():
    out = _run(2, "--xla_force_host_platform_device_count=3")
    assert "devices 3" in out.stdout
    assert "XLA_FLAGS sets the CPU device count; mesh.cpu_devices=2 is not applied" in out.stderr
