"""Console logging for the command-line stages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any


def setup_logging(level: int = logging.INFO) -> None:
    """Timestamped INFO lines on stderr; replaces handlers that imported libraries installed."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", force=True)
    for noisy in ("absl", "jax._src.xla_bridge"):  # Orbax's per-save chatter, backend probing
        logging.getLogger(noisy).setLevel(logging.WARNING)


def entry_point(main: Callable[[], Any]) -> Callable[[], None]:
    """A console script for ``main()``: its int result is the exit status, anything else is 0."""

    def cli() -> None:
        status = main()
        raise SystemExit(status if isinstance(status, int) else 0)

    cli.__doc__ = f"Console entry point of {main.__module__}."
    return cli
