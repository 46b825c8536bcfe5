"""The local worker loop: no message is lost and the loop survives whatever a message does."""

from __future__ import annotations

import threading

from local_receiver.queue_runner import QueueRunner
from local_receiver.sqlite_store import Database, SQLiteQueue


class _Exploding:
    """A worker whose processing fails with an error that is not one of core's (the steps
    `QueueRunner` calls: `core.worker.Worker.prepare_batch`, `begin_prepared`, `run_handlers`, `finish_batch`)."""

    def __init__(self, fail_times: int):
        self.fail_times, self.calls = fail_times, 0

    def delivery_failed(self, dead_lettered: bool) -> None:  # core.worker.Worker's metrics hook
        pass

    def begin(self, message):
        self.calls += 1
        if self.calls <= self.fail_times:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return message

    def prepare_batch(self, messages):  # core's contract: per message, what `begin_prepared` takes
        return list(messages)

    def begin_prepared(self, prepared):  # per message, what `begin` returned or raised
        from core.worker import _outcome_of

        return [_outcome_of(self.begin, message) for message in prepared]

    def trace(self, message):
        import contextlib

        return contextlib.nullcontext()

    def run_handlers(self, job) -> None:
        pass

    def finish(self, job) -> None:
        pass


def _runner(tmp_path, worker, max_attempts=3):
    queue = SQLiteQueue(Database(tmp_path / "q.db"))
    return QueueRunner(worker, queue, max_attempts=max_attempts, lease_s=60, retry_base_s=0.0), queue


def test_an_unexpected_error_is_a_failed_attempt_not_a_lost_message(tmp_path):
    runner, queue = _runner(tmp_path, _Exploding(fail_times=2))
    queue.enqueue("{}", event_id="e1")
    runner.drain()
    assert queue.depth() == 0 and queue.dead_letters() == []
    assert runner.worker.calls == 3


def test_an_error_every_time_ends_in_the_dead_letters(tmp_path):
    runner, queue = _runner(tmp_path, _Exploding(fail_times=99))
    queue.enqueue("{}", event_id="e1")
    runner.drain()
    [dead] = queue.dead_letters()
    assert dead["eventId"] == "e1" and dead["error"].startswith("OverflowError")


def test_the_loop_keeps_running_after_a_bad_message(tmp_path):
    runner, queue = _runner(tmp_path, _Exploding(fail_times=1))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run_forever, args=(stop, 0.05), daemon=True)
    thread.start()
    queue.enqueue("{}", event_id="bad")
    queue.enqueue("{}", event_id="good")
    for _ in range(200):
        if queue.depth() == 0:
            break
        stop.wait(0.02)
    stop.set()
    thread.join(5)
    assert queue.depth() == 0 and queue.dead_letters() == []


class _RecordedStop(threading.Event):
    """The stop event `run_forever` is given, noting each pause it takes on it."""

    def __init__(self):
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout=None):
        self.pauses.append(timeout)
        return self.is_set()


def test_after_a_batch_that_was_not_full_the_runner_gathers_before_the_next(tmp_path):
    """Full batch: the next at once. Partial batch: `gather_s` for more to arrive (under
    load they share the next batch's commits). Nothing visible: the idle wait."""
    queue = SQLiteQueue(Database(tmp_path / "q.db"))
    runner = QueueRunner(_Exploding(fail_times=0), queue, max_attempts=3, lease_s=60, batch_size=2, gather_s=0.25)
    for n in range(3):
        queue.enqueue("{}", event_id=f"e{n}")
    stop = _RecordedStop()
    idle: list[float] = []

    def idle_wait(seconds: float) -> None:
        idle.append(seconds)
        stop.set()

    try:
        runner.run_forever(stop, idle_wait_s=0.5, wait=idle_wait)
    finally:
        queue.db.close()
    assert stop.pauses == [0.25]  # after the batch of 1, not after the batch of 2
    assert idle == [0.5]
