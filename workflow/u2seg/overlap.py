"""Overlapping CPU stages with the main thread's work: a bounded, ordered producer / consumer pool.

The main thread produces named items (for instance: reads a feature batch and runs the accelerator
part of MaskCut on it) and hands each to ``fn`` in a pool of worker threads or processes; the results
come back in input order while the main thread already produces the next items. At most
``max_pending`` items are submitted and not yet consumed, so memory stays bounded and a slow CPU
stage throttles the producer instead of queueing the whole shard.

* ``workers=0``: no pool; ``fn`` runs inline in the calling thread (the sequential path, same results).
* threads suit stages that release the GIL (PIL decoding and resizing, torch); processes suit pure
  Python / Cython code that holds it (pydensecrf's mean-field inference). Processes are started with
  ``spawn`` (safe beside CUDA and OpenMP threads of the parent) when the pool is entered, import ``fn``'s
  module at once (so that their start-up overlaps the producer's first items), ignore SIGINT (the
  parent alone handles Ctrl-C and shuts the pool down) and need a picklable, module-level ``fn``.
* An exception of ``fn`` is re-raised in the consumer with the name of the item that failed (a
  :class:`~u2seg.errors.UserError` keeps its no-traceback handling: the name is prefixed to its
  message; other exceptions get a note). On any exception or KeyboardInterrupt in the consumer the
  pool cancels what has not started and waits for the running items (at most ``max_pending``).
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing
import signal
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from u2seg.errors import UserError

log = logging.getLogger(__name__)

R = TypeVar("R")


def _start_process_worker(module: str, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
    """Process-worker start: Ctrl-C goes to the parent only; ``fn``'s module is imported now (while the parent
    produces the first items); then the caller's initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    importlib.import_module(module)
    if initializer is not None:
        initializer(*initargs)


def _noop() -> None:
    """Submitted once per process worker at start: the pool spawns its workers right away."""


def with_item(exc: BaseException, name: str) -> BaseException:
    """``exc`` labelled with the item that raised it (a new UserError with the name prefixed, else a note)."""
    if isinstance(exc, UserError):
        if name in str(exc):
            return exc
        labelled = UserError(f"{name}: {exc}")
        labelled.__cause__ = exc
        return labelled
    if isinstance(exc, Exception):
        exc.add_note(f"while processing item {name!r} in a worker")
    return exc


class OrderedPool(Generic[R]):
    """Runs ``fn(*args)`` for named items in ``workers`` threads or processes; results in input order.

    Use as a context manager; :meth:`map` takes an iterable of ``(name, args)`` and yields
    ``(name, fn(*args))``. The iterable is consumed lazily in the calling thread, so the work done
    to produce item i + 1 overlaps ``fn`` on the items before it.
    """

    def __init__(self, fn: Callable[..., R], workers: int = 0, *, processes: bool = False,
                 max_pending: int | None = None, initializer: Callable[..., Any] | None = None,
                 initargs: tuple[Any, ...] = ()) -> None:
        if workers < 0:
            raise UserError(f"the number of CPU workers must be >= 0, got {workers}")
        if max_pending is not None and max_pending < 1:
            raise UserError(f"max_pending must be >= 1, got {max_pending}")
        self.fn, self.workers, self.processes = fn, workers, processes
        self.max_pending = max_pending if max_pending is not None else max(1, 2 * workers)
        self._initializer, self._initargs = initializer, initargs
        self._executor: Executor | None = None
        #: seconds the consumer's thread spent in ``fn`` (workers=0) or blocked on a worker's result:
        #: the time the producer (e.g. the accelerator) stood idle because of the CPU stage
        self.wait_seconds = 0.0

    def __enter__(self) -> "OrderedPool[R]":
        if self.workers > 0:
            if self.processes:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_process_worker,
                    initargs=(self.fn.__module__, self._initializer, self._initargs))
                for _ in range(self.workers):  # spawned lazily otherwise: after the first item is produced
                    self._executor.submit(_noop)
            else:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="u2seg-cpu",
                                                    initializer=self._initializer, initargs=self._initargs)
        elif self._initializer is not None:
            self._initializer(*self._initargs)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(cancel=exc_type is not None)

    def close(self, cancel: bool = False) -> None:
        """Shut the pool down (``cancel``: drop the items not yet started); waits for running ones."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True, cancel_futures=cancel)

    def map(self, items: Iterable[tuple[str, tuple[Any, ...]]]) -> Iterator[tuple[str, R]]:
        """Yield ``(name, fn(*args))`` for each ``(name, args)`` of ``items``, in order."""
        if self._executor is None:
            if self.workers > 0:
                raise RuntimeError("OrderedPool.map with workers > 0 must run inside `with OrderedPool(...)`")
            for name, args in items:
                t0 = time.perf_counter()
                try:
                    result = self.fn(*args)
                except Exception as exc:
                    raise with_item(exc, name)
                finally:
                    self.wait_seconds += time.perf_counter() - t0
                yield name, result
            return
        pending: deque[tuple[str, Future[R]]] = deque()
        source = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.max_pending:
                    try:
                        name, args = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append((name, self._executor.submit(self.fn, *args)))
                if not pending:
                    return
                name, future = pending.popleft()
                t0 = time.perf_counter()
                try:
                    result = future.result()
                except Exception as exc:
                    raise with_item(exc, name)
                finally:
                    self.wait_seconds += time.perf_counter() - t0
                yield name, result
        finally:
            for _, future in pending:
                future.cancel()
