"""Where `DT_HANDLERS` modules are found (the current folder first, as uvicorn's --app-dir
does), the one line a missing or broken one gives, and what a failed handler's error
carries into its dead letter (`HandlerFailed`)."""

from __future__ import annotations

import os
import sys

import pytest

from core.handlers import MAX_MESSAGE_CHARS, HandlerModuleError, HandlerRegistry, registry
from core.logs import JsonFormatter, start_failed
from core.worker import HandlerFailed
from tests.logcapture import dtconnector_log


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """The user's folder as the current one, and NOT on sys.path: how the `dtconnector`
    console script (whose own folder Python puts first) and `make run` start."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    names = {"fh_handlers", "fh_pkg", "fh_pkg.more"}
    yield tmp_path
    for name in names:
        sys.modules.pop(name, None)


def test_a_module_in_the_current_folder_is_found(user_folder):
    (user_folder / "fh_handlers.py").write_text("from core import on\n\n@on('touch')\ndef touched(event):\n    pass\n")
    registry.load(["fh_handlers"])  # the registry `@on` writes to
    assert registry.summary() == {"fh_handlers.touched": ["touch"]}
    assert sys.path[0] == str(user_folder)


def test_a_package_in_the_current_folder_is_found(user_folder):
    (user_folder / "fh_pkg").mkdir()
    (user_folder / "fh_pkg" / "__init__.py").write_text("")
    (user_folder / "fh_pkg" / "more.py").write_text("from core import on\n\n@on('*')\ndef every(event):\n    pass\n")
    registry.load(["fh_pkg.more"])
    assert registry.summary() == {"fh_pkg.more.every": ["*"]}


def test_the_folder_is_added_once(user_folder):
    (user_folder / "fh_handlers.py").write_text("")
    HandlerRegistry().load(["fh_handlers"])
    HandlerRegistry().load(["fh_handlers"])
    assert sys.path.count(str(user_folder)) == 1


def test_a_missing_module_says_where_it_was_looked_for(user_folder):
    with pytest.raises(HandlerModuleError) as caught:
        HandlerRegistry().load(["fh_handlers"])
    assert str(caught.value) == (
        "cannot load handler module 'fh_handlers' (DT_HANDLERS): ModuleNotFoundError: No module named "
        f"'fh_handlers' (no fh_handlers.py in {user_folder} or the installed packages)"
    )


def test_an_exception_at_import_is_named_with_its_line(user_folder):
    (user_folder / "fh_handlers.py").write_text("import os\n\n\nTOKEN = os.environ['FH_UNSET_TOKEN']\n")
    with pytest.raises(HandlerModuleError) as caught:
        HandlerRegistry().load(["fh_handlers"])
    assert str(caught.value) == (
        "cannot load handler module 'fh_handlers' (DT_HANDLERS): KeyError: 'FH_UNSET_TOKEN' (at fh_handlers.py:4)"
    )
    assert "\n" not in str(caught.value)


def _failure(source: str, *, event_id: str = "E1") -> HandlerFailed:
    namespace: dict = {}
    exec(compile(source, os.path.abspath("fh_user_handlers.py"), "exec"), namespace)
    func = namespace["handle"]
    try:
        func(None)
    except Exception as exc:
        return HandlerFailed(event_id, "handlers.handle", exc, func)
    raise AssertionError("the handler did not raise")


def test_handler_failed_carries_the_exception_type_message_and_line(user_folder):
    failure = _failure("def handle(event):\n    limits = {}\n    return limits['room-1']\n")
    assert str(failure) == "handler handlers.handle failed for event E1: KeyError: 'room-1' (at fh_user_handlers.py:3)"
    assert (failure.exception_type, failure.exception_message, failure.raised_at) == (
        "KeyError", "'room-1'", "fh_user_handlers.py:3")


def test_handler_failed_names_the_users_line_and_the_library_line_that_raised(user_folder):
    failure = _failure("import json\n\ndef handle(event):\n    return json.loads('{bad')\n")
    assert failure.exception_type == "json.decoder.JSONDecodeError"
    assert failure.raised_at.startswith("fh_user_handlers.py:4 (raised in json/decoder.py:")


def test_handler_failed_text_is_one_bounded_line(user_folder):
    failure = _failure("def handle(event):\n    raise ValueError('first line\\nsecond line ' + 'x' * 5000)\n")
    assert "\n" not in str(failure)
    assert failure.exception_message.startswith("first line second line xxx")
    assert len(failure.exception_message) == MAX_MESSAGE_CHARS and failure.exception_message.endswith("\u2026")
    assert len(str(failure)) < 500  # IBM keeps 500 characters of a dead letter's error: the location fits
    assert str(failure).endswith("(at fh_user_handlers.py:2)")


def test_handler_failed_text_reads_back_into_its_parts(user_folder):
    failure = _failure("def handle(event):\n    raise RuntimeError('limit (25.0) exceeded: (a) b')\n")
    for stored in (str(failure), f"HandlerFailed: {failure}"):  # as the queue runners store it
        assert HandlerFailed.parse(stored) == {
            "handler": "handlers.handle", "eventId": "E1", "exceptionType": "RuntimeError",
            "exceptionMessage": "limit (25.0) exceeded: (a) b", "raisedAt": "fh_user_handlers.py:2",
        }
    nested = _failure("import json\n\ndef handle(event):\n    return json.loads('{bad')\n")
    assert HandlerFailed.parse(str(nested))["raisedAt"] == nested.raised_at
    assert HandlerFailed.parse("PoisonMessage: not a DT event") is None
    assert HandlerFailed.parse("HandlerFailed: handler h failed for event E")["exceptionType"] == ""  # older text


def test_start_failed_is_one_line_for_a_setting_and_a_traceback_for_a_bug():
    with dtconnector_log() as records:
        start_failed("the worker", HandlerModuleError("cannot load handler module 'x' (DT_HANDLERS): boom"), "retried")
        try:
            raise ZeroDivisionError("bug")
        except ZeroDivisionError as exc:
            start_failed("the worker", exc)
    config, bug = records
    assert config.getMessage() == "the worker could not start: cannot load handler module 'x' (DT_HANDLERS): boom; retried"
    assert config.exc_info is None and "\n" not in JsonFormatter().format(config)
    assert bug.getMessage() == "the worker could not start (ZeroDivisionError)" and bug.exc_info is not None
