"""Bounded handover: back-pressure by count and bytes, error propagation, cancellation."""

from __future__ import annotations

import threading

import pytest

from hodr.errors import RetryableCaptureError
from hodr.replicate.handover import Handover, HandoverClosed
from tests.conftest import wait_for


def run(target, *args):  # type: ignore[no-untyped-def]
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def test_fifo_and_end_of_stream() -> None:
    h: Handover[int] = Handover(10, 1000)
    for i in range(5):
        h.put(i)
    h.close()
    assert list(h) == [0, 1, 2, 3, 4]
    with pytest.raises(HandoverClosed):
        h.get(timeout=0)
    with pytest.raises(HandoverClosed):
        h.put(9)


def test_count_bound_blocks_the_producer() -> None:
    h: Handover[int] = Handover(3, 10**9)
    for i in range(3):
        h.put(i)
    with pytest.raises(TimeoutError):
        h.put(3, timeout=0.05)
    done = threading.Event()
    t = run(lambda: (h.put(3), done.set()))
    assert not done.wait(0.05)  # blocked while full
    assert h.get() == 0
    wait_for(done.is_set, 5, "the blocked producer to resume")
    t.join(5)
    assert [h.get(), h.get(), h.get()] == [1, 2, 3]


def test_byte_bound_blocks_the_producer_and_a_huge_item_still_passes() -> None:
    h: Handover[bytes] = Handover(100, 10, size_of=len)
    h.put(b"12345678")
    assert h.bytes == 8
    with pytest.raises(TimeoutError):
        h.put(b"abc", timeout=0.05)
    assert h.get() == b"12345678"
    h.put(b"x" * 50)  # larger than the bound, accepted because the handover is empty
    with pytest.raises(TimeoutError):
        h.put(b"y", timeout=0.05)
    assert h.get() == b"x" * 50 and len(h) == 0


def test_the_producers_first_error_reaches_the_consumer_after_earlier_items() -> None:
    h: Handover[int] = Handover(10, 1000)
    first = RetryableCaptureError("source connection lost at 0/16B3748")

    def produce() -> None:
        h.put(1)
        h.put(2)
        h.fail(first)
        h.fail(RuntimeError("a consequence"))

    run(produce).join(5)
    assert h.get(timeout=1) == 1
    assert h.get(timeout=1) == 2
    with pytest.raises(RetryableCaptureError) as info:
        h.get(timeout=1)
    assert info.value is first
    with pytest.raises(RetryableCaptureError):  # and again: the consumer cannot miss it
        list(h)
    with pytest.raises(HandoverClosed):
        h.put(3)


def test_a_blocked_consumer_wakes_on_failure() -> None:
    h: Handover[int] = Handover(10, 1000)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            h.get(timeout=10)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = run(consume)
    h.fail(ValueError("decoder: unknown type oid 99999 in public.t.c at 0/3000060"))
    t.join(5)
    assert not t.is_alive() and isinstance(errors[0], ValueError)


def test_cancel_releases_a_blocked_producer() -> None:
    h: Handover[int] = Handover(1, 1000)
    h.put(0)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            h.put(1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = run(produce)
    h.cancel()
    t.join(5)
    assert not t.is_alive() and isinstance(errors[0], HandoverClosed)


def test_get_timeout() -> None:
    h: Handover[int] = Handover(1, 1)
    with pytest.raises(TimeoutError):
        h.get(timeout=0.01)
    with pytest.raises(ValueError):
        Handover(0, 1)
