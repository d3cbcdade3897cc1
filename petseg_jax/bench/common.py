"""Shared benchmark output and process measurements (Linux /proc; ``None`` elsewhere)."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from "state" on (field 3)


def _descendants(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def tree_rss_mb(pid: int | None = None) -> float | None:
    """Resident memory of a process and its descendants (shared pages counted per process)."""
    pids = _descendants(pid or os.getpid())
    pages = [(_stat_fields(p) or [None] * 22)[21] for p in pids]
    pages = [int(p) for p in pages if p is not None]
    return round(sum(pages) * _PAGE / 2**20, 1) if pages else None


def tree_cpu_s(pid: int | None = None) -> float | None:
    """User + system CPU seconds of a process and its live descendants."""
    ticks = [f[11:13] for p in _descendants(pid or os.getpid()) if (f := _stat_fields(p))]
    return round(sum(int(u) + int(s) for u, s in ticks) / _TICK, 2) if ticks else None


def machine() -> dict[str, Any]:
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()}


def report(title: str, rows: Iterable[tuple[str, Any]], result: dict[str, Any]) -> None:
    """Print ``rows`` as a two-column table, then ``result`` as the one final JSON line."""
    rows = list(rows)
    width = max(len(k) for k, _ in rows) if rows else 0
    print(title)
    print("-" * max(len(title), width + 12))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result, sort_keys=True), flush=True)
