"""Console logging for the command-line stages."""

from __future__ import annotations

import logging


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped INFO lines on stderr; replaces handlers that imported libraries installed."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", force=True)
    for noisy in ("absl", "jax._src.xla_bridge"):  # Orbax's per-save chatter, backend probing
        logging.getLogger(noisy).setLevel(logging.WARNING)
