"""The served-card buffer: off the request path, bounded delay, nothing dropped while it fits."""

from __future__ import annotations

import threading
import time

from cds_service.storage.served import ServedCardBuffer


class Writer:
    def __init__(self, fail_times: int = 0, delay_s: float = 0.0) -> None:
        self.batches: list[list[dict]] = []
        self.fail_times = fail_times
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def __call__(self, rows: list[dict]) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("database down")
        self.batches.append(list(rows))

    @property
    def rows(self) -> list[dict]:
        return [row for batch in self.batches for row in batch]


def _rows(n: int, prefix: str = "u") -> list[dict]:
    return [{"card_uuid": f"{prefix}{i}"} for i in range(n)]


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_add_returns_at_once_and_a_background_thread_writes_within_the_interval():
    writer = Writer(delay_s=0.2)  # a slow database
    buffer = ServedCardBuffer(writer, interval_s=0.1)
    buffer.add(_rows(3))
    assert writer.rows == []  # the caller never waits for the write (it takes 0.2 s)
    assert _wait(lambda: len(writer.rows) == 3)
    assert writer.threads == {"served-card-flusher"}
    buffer.close()


def test_rows_from_many_calls_are_written_as_few_batches():
    writer = Writer()
    buffer = ServedCardBuffer(writer, interval_s=0.3)
    for i in range(50):
        buffer.add(_rows(2, prefix=f"c{i}-"))
    assert _wait(lambda: len(writer.rows) == 100)
    assert len(writer.batches) <= 2
    buffer.close()


def test_a_failed_write_is_retried_and_nothing_is_lost():
    writer = Writer(fail_times=2)
    buffer = ServedCardBuffer(writer, interval_s=0.05)
    buffer.add(_rows(5))
    assert _wait(lambda: len(writer.rows) == 5)
    assert [r["card_uuid"] for r in writer.rows] == [f"u{i}" for i in range(5)]
    buffer.close()


def test_a_long_outage_drops_the_oldest_beyond_the_bound():
    writer = Writer(fail_times=10**6)
    buffer = ServedCardBuffer(writer, interval_s=3600, max_batch=10, max_pending=25)
    buffer.add(_rows(30))  # backlog > 4 x max_batch: the caller flushes, which fails
    assert buffer.flush() == 0
    assert buffer.pending() == 25
    writer.fail_times = 0
    assert buffer.flush() == 25
    assert [r["card_uuid"] for r in writer.rows] == [f"u{i}" for i in range(5, 30)]


def test_back_pressure_when_the_writer_falls_behind():
    writer = Writer()
    buffer = ServedCardBuffer(writer, interval_s=3600, max_batch=10)
    buffer.add(_rows(39))
    assert writer.rows == []
    buffer.add(_rows(1, prefix="x"))  # 40 pending = 4 batches: written by the caller
    assert len(writer.rows) == 40
    assert all(len(b) <= 10 for b in writer.batches)


def test_close_flushes_and_later_adds_are_synchronous():
    writer = Writer()
    buffer = ServedCardBuffer(writer, interval_s=3600)
    buffer.add(_rows(2))
    buffer.close()
    assert len(writer.rows) == 2
    buffer.add(_rows(1, prefix="late"))
    assert len(writer.rows) == 3
