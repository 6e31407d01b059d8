"""The readers-writer lock that lets a supernet host evaluate concurrently."""

from __future__ import annotations

import threading
import time

from raynas.supernet.rwlock import ReadWriteLock


def _start(target: object) -> threading.Thread:
    thread = threading.Thread(target=target)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_readers_share_the_lock() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=5)  # passes only if all three hold it at once

    def reader() -> None:
        with lock.reading():
            inside.wait()

    threads = [_start(reader) for _ in range(3)]
    for t in threads:
        t.join(5)
    assert not inside.broken and lock.readers == 0


def test_writer_waits_for_readers_and_blocks_new_ones() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    reading = threading.Event()
    release = threading.Event()

    def first_reader() -> None:
        with lock.reading():
            reading.set()
            release.wait(5)
            events.append("reader 1 done")

    def writer() -> None:
        with lock.writing():
            events.append("writer")

    def late_reader() -> None:
        with lock.reading():
            events.append("reader 2")

    threads = [_start(first_reader)]
    assert reading.wait(5)
    threads.append(_start(writer))
    while not lock._waiting_writers:  # the writer is queued behind reader 1
        time.sleep(0.001)
    threads.append(_start(late_reader))
    time.sleep(0.05)
    assert events == []  # the writer waits for reader 1; reader 2 waits for the writer
    release.set()
    for t in threads:
        t.join(5)
    assert events == ["reader 1 done", "writer", "reader 2"]


def test_writers_exclude_each_other() -> None:
    lock = ReadWriteLock()
    held = 0
    most = 0
    guard = threading.Lock()

    def writer() -> None:
        nonlocal held, most
        for _ in range(50):
            with lock.writing():
                with guard:
                    held += 1
                    most = max(most, held)
                time.sleep(0.0002)
                with guard:
                    held -= 1

    threads = [_start(writer) for _ in range(4)]
    for t in threads:
        t.join(10)
    assert most == 1
