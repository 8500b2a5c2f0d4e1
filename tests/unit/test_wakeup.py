"""The worker loop's wake-up: a hint (a notification, a submission in this process, a stop)
or the poll tick asks for a claim; a handler's result only asks for a commit."""

from __future__ import annotations

import threading
import time

from app.worker.runner import Wakeup


def test_a_result_wakes_the_loop_without_asking_for_a_claim() -> None:
    wake = Wakeup()
    wake.result()
    started = time.monotonic()
    assert wake.wait(30) is False
    assert time.monotonic() - started < 5


def test_a_hint_asks_for_a_claim_even_beside_a_result() -> None:
    wake = Wakeup()
    wake.result()
    wake.set()
    assert wake.wait(30) is True


def test_the_poll_tick_asks_for_a_claim() -> None:
    assert Wakeup().wait(0.01) is True


def test_what_woke_the_loop_is_taken_once() -> None:
    wake = Wakeup()
    wake.set()
    wake.set()  # two hints before the loop looks are one
    assert wake.wait(30) is True
    wake.result()
    assert wake.wait(30) is False  # the hints were taken by the first wait


def test_a_hint_from_another_thread_ends_the_wait() -> None:
    wake = Wakeup()
    threading.Timer(0.05, wake.set).start()
    started = time.monotonic()
    assert wake.wait(30) is True
    assert time.monotonic() - started < 5
