"""Training logs: ``metrics.jsonl`` and TensorBoard event files in the workdir, process 0 only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from petseg_jax.training.distributed import is_main


class MetricsWriter:
    """Appends one JSON object per record to ``W/metrics.jsonl`` and mirrors scalars to TB."""

    def __init__(self, workdir: str | Path):
        self.enabled = is_main()
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            Path(workdir).mkdir(parents=True, exist_ok=True)
            self._jsonl = open(Path(workdir) / "metrics.jsonl", "a")
            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, kind: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, "time": time.time(), **values}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for key, value in values.items():
            if isinstance(value, int | float):
                self._tb.add_scalar(f"{kind}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
