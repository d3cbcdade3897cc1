"""Memory and time of the running process: the budget a job may still allocate, peak host and
device memory, seconds per named stage (Linux ``/proc`` and cgroups; NumPy-free), and atomic
JSON files.

The memory budget is ``min(cgroup limit - cgroup usage, MemAvailable)``: the cgroup's own
limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) less what the group already uses
without its reclaimable page cache (``inactive_file``), and the kernel's estimate of memory
available without swapping. Work that needs more raises :class:`MemoryBudgetError` before it
allocates, instead of being killed by the OOM killer.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

GIB = 2**30
_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")


class MemoryBudgetError(MemoryError):
    """A computation needs more memory than the budget (:func:`available_memory`) allows."""


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def _inactive_file(stat: Path, key: str) -> int:
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except OSError:
        pass
    return 0


def cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit (``None`` when there is no limit)."""
    for limit_file, usage_file, stat_key in (
            (_CGROUP_V2 / "memory.max", _CGROUP_V2 / "memory.current", "inactive_file"),
            (_CGROUP_V1 / "memory.limit_in_bytes", _CGROUP_V1 / "memory.usage_in_bytes",
             "total_inactive_file")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 2**60:  # v1 "no limit" is ~2^63
            usage -= _inactive_file(limit_file.parent / "memory.stat", stat_key)
            return max(limit - max(usage, 0), 0)
    return None


def mem_available() -> int | None:
    """The kernel's ``MemAvailable`` in bytes (``None`` off Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def available_memory() -> int | None:
    """Bytes this process may still allocate: min(cgroup headroom, MemAvailable); ``None``
    when neither is known."""
    known = [b for b in (cgroup_headroom(), mem_available()) if b is not None]
    return min(known) if known else None


def check_budget(needed: int, what: str, budget: int | None = None) -> None:
    """Raise :class:`MemoryBudgetError` naming ``what`` and the bytes it needs when ``needed``
    exceeds ``budget`` (default: :func:`available_memory`)."""
    budget = available_memory() if budget is None else budget
    if budget is not None and needed > budget:
        raise MemoryBudgetError(
            f"{what} needs {format_bytes(needed)} of memory but only {format_bytes(budget)} is "
            "available (min of the cgroup limit's headroom and MemAvailable)")


def format_bytes(n: int) -> str:
    """``n`` bytes as GiB (from 1 GiB on) or MiB, two decimals."""
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.2f} MiB"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def peak_device_bytes() -> int | None:
    """Peak memory in use on the first JAX device, where the backend reports it (GPU/TPU;
    ``None`` on the CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a hidden temporary file beside ``path`` (same name ending, so
    writers that go by the suffix, like ``.nii.gz`` or ``.png``, still work), then rename it into
    place: readers never see half a file, and a failed write leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{os.getpid()}.tmp.{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON atomically (:func:`write_atomic`); indented for people to read,
    ``indent=None`` for large machine files (C encoder, ~8x faster than indented output)."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=indent) + "\n"))


class Stages:
    """Seconds per named stage, summed over repeated entries: ``with stages("read"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def report(self) -> dict[str, Any]:
        """Seconds per stage, peak RSS and peak device memory (MiB) as one JSON-able dict."""
        device = peak_device_bytes()
        return {"seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
                "peak_device_mb": None if device is None else round(device / 2**20, 1)}
