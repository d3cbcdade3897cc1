"""Worker processes that end with their parent, even when the parent is killed by SIGKILL.

A pool's workers would otherwise outlive a parent killed without a chance to clean up (an OOM
kill, ``kill -9``, a scheduler's hard stop): they are re-parented to init and keep their memory
and CPUs. Each worker runs :func:`exit_with_parent` first: a daemon thread that ends the worker
(``os._exit``) as soon as its parent pid is no longer the one it started under. A watchdog
thread is used rather than Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``), which
fires when the *thread* that started the worker ends: pools start workers from helper threads.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

WATCH_INTERVAL_S = 0.5
ORPHAN_EXIT_STATUS = 70


def exit_with_parent(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid`` is no longer its parent (checked now, then
    every :data:`WATCH_INTERVAL_S` by a daemon thread)."""
    if os.getppid() != parent_pid:
        os._exit(ORPHAN_EXIT_STATUS)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(WATCH_INTERVAL_S)
        os._exit(ORPHAN_EXIT_STATUS)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of spawned workers (never forked: JAX must not be forked once started)
    that exit when this process dies (:func:`exit_with_parent`)."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))
