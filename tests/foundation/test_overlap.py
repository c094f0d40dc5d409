"""The ordered, bounded CPU-worker pool (u2seg.overlap): order, bound, errors with the item, shutdown."""
from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest

from u2seg.errors import UserError
from u2seg.overlap import OrderedPool


def _square(x: int, delay: float = 0.0) -> int:
    time.sleep(delay)
    return x * x


def _fail_on_three(x: int) -> tuple[int, int]:
    if x == 3:
        raise ValueError("bad value 3")
    return x, os.getpid()


def _user_error_on_two(x: int) -> int:
    if x == 2:
        raise UserError("size changed since ingestion")
    return x


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_results_in_input_order_and_bounded(workers):
    produced, seen = [], []

    def items():
        for i in range(12):
            produced.append(i)
            yield f"item{i}", (i, 0.02 * ((7 * i) % 5))  # later items often finish first

    with OrderedPool(_square, workers, max_pending=2) as pool:
        for k, (name, value) in enumerate(pool.map(items())):
            seen.append((name, value))
            # item k and at most max_pending - 1 after it are in flight (inline: none ahead)
            assert len(produced) <= (k + 2 if workers else k + 1)
    assert seen == [(f"item{i}", i * i) for i in range(12)]


def test_worker_error_names_the_item_and_stops_the_pool():
    before = threading.active_count()
    with pytest.raises(ValueError, match="bad value 3") as info:
        with OrderedPool(_fail_on_three, 2) as pool:
            for _ in pool.map((f"img_{i}.jpg", (i,)) for i in range(10)):
                pass
    assert any("img_3.jpg" in note for note in info.value.__notes__)
    assert threading.active_count() == before  # the worker threads are gone


@pytest.mark.parametrize("workers", [0, 2])
def test_user_error_keeps_its_type_with_the_item_name(workers):
    with pytest.raises(UserError, match=r"^img_2\.png: size changed"):
        with OrderedPool(_user_error_on_two, workers) as pool:
            list(pool.map((f"img_{i}.png", (i,)) for i in range(5)))


def test_process_workers_order_and_error():
    with OrderedPool(_fail_on_three, 2, processes=True) as pool:
        out = list(pool.map((str(i), (i,)) for i in range(3)))
    assert [v for _, (v, _) in out] == [0, 1, 2] and all(pid != os.getpid() for _, (_, pid) in out)
    with pytest.raises(ValueError, match="bad value 3") as info:
        with OrderedPool(_fail_on_three, 2, processes=True) as pool:
            list(pool.map((f"n{i}", (i,)) for i in range(6)))
    assert any("'n3'" in note for note in info.value.__notes__)


def test_interrupt_in_the_producer_shuts_the_pool_down():
    before = threading.active_count()
    started = []

    def items():
        for i in range(100):
            if i == 5:
                raise KeyboardInterrupt
            yield str(i), (i, 0.05)
            started.append(i)

    with pytest.raises(KeyboardInterrupt):
        with OrderedPool(_square, 2, max_pending=3) as pool:
            for _ in pool.map(items()):
                pass
    assert threading.active_count() == before
    assert len(started) <= 5


def test_bad_arguments():
    with pytest.raises(UserError):
        OrderedPool(_square, -1)
    with pytest.raises(UserError):
        OrderedPool(_square, 1, max_pending=0)


def test_interrupt_with_process_workers_leaves_no_child_process():
    def items():
        for i in range(50):
            if i == 4:
                raise KeyboardInterrupt
            yield str(i), (i, 0.2)

    with pytest.raises(KeyboardInterrupt):
        with OrderedPool(_square, 2, processes=True, max_pending=2) as pool:
            for _ in pool.map(items()):
                pass
    assert multiprocessing.active_children() == []
