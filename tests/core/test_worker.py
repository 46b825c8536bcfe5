"""Worker dispatch: by event type, once per event, progress kept across failures."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from core import on
from core.claims import Outcome
from core.config import Settings
from core.handlers import HandlerRegistry, registry
from core.worker import EventInFlight, HandlerFailed, PoisonMessage, Worker
from tests.dt import event_body


@pytest.fixture
def worker(claim_store, state_store, clock):
    return Worker(Settings(), claim_store, state_store, clock=clock)


def test_dispatch_by_type_and_star(worker):
    calls = []
    on("temperature")(lambda e: calls.append(("temp", e.event_type)))

    @on("*")
    def every(event):
        calls.append(("any", event.event_type))

    worker.process(event_body("temperature"))
    worker.process(event_body("co2", data={"co2": {"ppm": 1}}))
    assert calls == [("temp", "temperature"), ("any", "temperature"), ("any", "co2")]


def test_a_function_registered_for_its_type_and_star_runs_once(worker):
    calls = []

    def both(event):
        calls.append(event.event_id)

    on("temperature")(both)
    on("*")(both)
    worker.process(event_body())
    assert len(calls) == 1


def test_redelivery_of_a_completed_event_is_a_duplicate(worker):
    calls = []
    on("*")(lambda e: calls.append(1))
    body = event_body()
    assert worker.process(body) is Outcome.CLAIMED
    assert worker.process(body) is Outcome.DUPLICATE
    assert calls == [1]


def test_handler_failure_raises_and_keeps_progress(worker):
    calls = {"a": 0, "b": 0}

    @on("*")
    def a(event):
        calls["a"] += 1

    @on("*")
    def b(event):
        calls["b"] += 1
        if calls["b"] == 1:
            raise RuntimeError("boom")

    body = event_body()
    with pytest.raises(HandlerFailed) as err:
        worker.process(body)
    assert err.value.handler.endswith(".b")
    worker.process(body)
    assert calls == {"a": 1, "b": 2}


def test_concurrent_delivery_to_another_worker_is_in_flight(claim_store, state_store, clock):
    started = []
    second = Worker(Settings(), claim_store, state_store, clock=clock)
    body = event_body()

    @on("*")
    def reenter(event):
        if not started:
            started.append(1)
            with pytest.raises(EventInFlight):
                second.process(body)  # SQS delivering the same message twice at once

    Worker(Settings(), claim_store, state_store, clock=clock).process(body)
    assert started == [1]


def test_poison_message_is_reported_as_such(worker):
    with pytest.raises(PoisonMessage):
        worker.process("this is not an event")
    with pytest.raises(PoisonMessage):
        worker.process(b"\xff\xfe")


def test_a_batch_prepares_each_message_alone_and_one_that_fails_fails_alone(worker, monkeypatch):
    """`prepare_batch` (what a batch needs before it writes) gives each message its own
    outcome: the event and its device state, a `PoisonMessage`, or the error building its
    state raised; `begin_prepared` then begins the rest, and hands back those failures."""
    import core.worker as core_worker
    from tests.dt import event_id_of

    bodies = [event_body(device=f"dev-{i}") for i in range(3)]
    unlucky = event_id_of(bodies[1])
    real = core_worker.state_of

    def state_of(event):
        if event.event_id == unlucky:
            raise KeyError("timestamp")
        return real(event)

    monkeypatch.setattr(core_worker, "state_of", state_of)
    prepared = worker.prepare_batch([bodies[0], "not an event", bodies[1], bodies[2]])
    assert [type(item).__name__ for item in prepared] == ["Prepared", "PoisonMessage", "KeyError", "Prepared"]
    begun = worker.begin_prepared(prepared)
    assert begun[1] is prepared[1] and begun[2] is prepared[2]
    assert [job.event.event_id for job in (begun[0], begun[3])] == [event_id_of(bodies[0]), event_id_of(bodies[2])]


def test_dt_handlers_modules_are_imported(tmp_path, monkeypatch, claim_store, state_store):
    (tmp_path / "my_handlers.py").write_text(
        textwrap.dedent(
            """
            from core import on
            SEEN = []

            @on("temperature")
            def keep(event):
                SEEN.append(event.event_id)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_handlers", raising=False)
    worker = Worker(Settings.from_env({"DT_HANDLERS": " my_handlers , "}), claim_store, state_store)
    worker.process(event_body(event_id="from-module"))
    assert sys.modules["my_handlers"].SEEN == ["from-module"]


def test_missing_handler_module_fails_loudly_at_start(claim_store, state_store):
    from core.config import ConfigError
    from core.handlers import HandlerModuleError

    with pytest.raises(HandlerModuleError) as caught:
        Worker(Settings.from_env({"DT_HANDLERS": "no_such_module_xyz"}), claim_store, state_store)
    assert isinstance(caught.value, ConfigError)  # every entry point's "bad setting" path
    assert str(caught.value) == (
        "cannot load handler module 'no_such_module_xyz' (DT_HANDLERS): "
        "ModuleNotFoundError: No module named 'no_such_module_xyz' "
        f"(no no_such_module_xyz.py in {os.getcwd()} or the installed packages)"
    )
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_registry_summary_names_each_handler_and_its_event_types():
    registry = HandlerRegistry()

    @registry.on("temperature")
    @registry.on("humidity")
    def climate(event):
        pass

    @registry.on("*")
    def audit(event):
        pass

    assert registry.summary() == {
        f"{__name__}.test_registry_summary_names_each_handler_and_its_event_types.<locals>.climate": ["humidity", "temperature"],
        f"{__name__}.test_registry_summary_names_each_handler_and_its_event_types.<locals>.audit": ["*"],
    }


def test_registry_rejects_bad_event_type():
    with pytest.raises(ValueError):
        HandlerRegistry().on("")


def test_global_registry_is_what_on_writes_to():
    @on("touch")
    def t(event):
        pass

    assert [r.func for r in registry.handlers_for("touch")] == [t]
    assert registry.handlers_for("co2") == []


class _Vanish(BaseException):
    """The runtime stopping a handler (a timeout signal, SystemExit)."""


def test_a_handler_stopped_by_the_runtime_releases_its_lease(worker):
    calls = []

    @on("*")
    def stopped_once(event):
        calls.append(1)
        if len(calls) == 1:
            raise _Vanish()

    body = event_body()
    with pytest.raises(_Vanish):
        worker.process(body)
    # The redelivery is processed at once, not refused as "in flight" for the whole lease.
    assert worker.process(body) is Outcome.CLAIMED
    assert len(calls) == 2
