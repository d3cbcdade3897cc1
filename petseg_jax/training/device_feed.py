"""Thread prefetch to the device: local numpy batches -> global ``jax.Array``s, with exact state.

:class:`DevicePrefetcher` wraps any iterator with ``get_state``/``set_state`` (the training
iterator of :mod:`petseg_jax.data.pipeline`, or a grain iterator). A background thread pulls
batches ahead of time and places them with ``jax.make_array_from_process_local_data`` (each
process gives its local slice; the result is the global batch sharded over the mesh). Each
prefetched batch travels with the iterator state taken right after it, so :meth:`get_state`
is the state after the last batch the *consumer* took, not after what the thread read ahead:
a checkpoint resumes exactly at the next unconsumed batch.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import jax

_POLL_S = 0.1
_DONE = object()


class DevicePrefetcher(Iterator[Any]):
    """Prefetch ``size`` batches from ``iterator`` onto ``sharding`` in a background thread.

    ``sharding``: one ``jax.sharding.Sharding`` for every array of a batch (e.g. a
    ``NamedSharding(mesh, P("data"))``), or a mapping from batch key to sharding.
    """

    def __init__(self, iterator: Any, sharding: jax.sharding.Sharding | Mapping[str, Any],
                 size: int = 2):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, got {size}")
        self._iterator = iterator
        self._sharding = sharding
        self._size = size
        self._state = copy.deepcopy(iterator.get_state())
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue(size)
        self._stop = threading.Event()
        self._finished = False

    def _place(self, batch: Mapping[str, Any]) -> dict[str, jax.Array]:
        def sharding_of(key):
            return self._sharding[key] if isinstance(self._sharding, Mapping) else self._sharding
        return {k: jax.make_array_from_process_local_data(sharding_of(k), v)
                for k, v in batch.items()}

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    batch = next(self._iterator)
                except StopIteration:
                    self._put((_DONE, None))
                    return
                state = copy.deepcopy(self._iterator.get_state())
                if not self._put((self._place(batch), state)):
                    return
        except Exception as e:  # noqa: BLE001 -- handed to the consumer, raised there
            self._put((e, None))

    def _ensure_started(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="device-prefetch",
                                            daemon=True)
            self._thread.start()

    def __next__(self) -> dict[str, jax.Array]:
        if self._finished:
            raise StopIteration
        self._ensure_started()
        item, state = self._queue.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, Exception):
            self._finished = True
            raise item
        self._state = state
        return item

    def get_state(self) -> Any:
        """State of the wrapped iterator after the last batch returned by ``next``."""
        return copy.deepcopy(self._state)

    def set_state(self, state: Any) -> None:
        """Drop what was prefetched and continue from ``state``."""
        self._halt()
        self._iterator.set_state(state)
        self._state = copy.deepcopy(state)
        self._finished = False

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def close(self) -> None:
        """Stop the thread and close the wrapped iterator (when it can be closed)."""
        self._halt()
        if hasattr(self._iterator, "close"):
            self._iterator.close()

    def __enter__(self) -> "DevicePrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
