"""DT's API (or something pretending to be it) answering without end or with garbage: every
read is bounded and every malformed answer is one clear line and exit 2, never a traceback,
and what DT writes reaches the terminal escaped. Each case is the stand-in in a hostile mode."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from dtcloud.client import Client, DTError, Limits
from emulator.dtapi import endless_pages, huge_answer
from dtconnector.cli import main
from tests.dtcloud.conftest import PROJECT, add_history

ESCAPES = "\x1b[2J\x1b]0;owned\x07\nFAKE: all good\u2028"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_clear_line(err: str, needle: str) -> None:
    assert "Traceback" not in err and needle in err
    assert len([x for x in err.splitlines() if x.strip()]) == 1, err


def test_a_never_ending_device_list_is_stopped(dt_env, standin, capsys):
    standin.hostile = endless_pages("/devices", "devices", per_page=1000)
    started = time.monotonic()
    code, out, err = run(capsys, "backfill", "--since", "1d", "--url", "http://127.0.0.1:9/")
    assert code == 2 and time.monotonic() - started < 60
    assert "DT's list at /projects/proj-test/devices has more than 100000 items: stopped reading" in err
    assert "Traceback" not in err


def test_an_endless_page_token_is_stopped(dt_env, standin):
    standin.hostile = endless_pages("/dataconnectors", "dataConnectors", per_page=0)
    with pytest.raises(DTError, match="did not end after 40 pages: stopped reading"):
        Client(limits=Limits(max_pages=40)).connectors(PROJECT)
    standin.hostile = lambda handler, method, path, params: path.endswith("/dataconnectors") and (
        handler._send(200, {"dataConnectors": [], "nextPageToken": "same"}) or True)
    with pytest.raises(DTError, match="repeats a page token after 2 pages"):
        Client().connectors(PROJECT)


@pytest.mark.parametrize("content_length", [True, False])
def test_a_100_mb_answer_is_stopped_without_reading_it_all(dt_env, standin, capsys, content_length):
    standin.hostile = huge_answer("/dataconnectors", 100 * 1024 * 1024, content_length)
    code, _, err = run(capsys, "connector", "list")
    assert code == 2
    one_clear_line(err, "DT's answer to GET /projects/proj-test/dataconnectors is larger than 16 MiB: stopped reading")
    tracemalloc.start()
    with pytest.raises(DTError, match="larger than 16 MiB"):
        Client().connectors(PROJECT)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 48 * 1024 * 1024  # the cap and a chunk, not 100 MB


def test_an_answer_trickling_in_is_cut_at_the_deadline(dt_env, standin):
    def trickle(handler, method, path, params) -> bool:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.close_connection = True
        handler.wfile.write(b'{"dataConnectors": [')
        for _ in range(50):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.2)
        return True

    standin.hostile = trickle
    started = time.monotonic()
    with pytest.raises(DTError, match="took too long to arrive"):
        Client(limits=Limits(request_deadline_s=1.0, attempts=1)).connectors(PROJECT)
    assert time.monotonic() - started < 5


def test_a_day_long_retry_after_is_not_slept(dt_env, standin, capsys):
    standin.fail(429, 1, retry_after="86400")
    started = time.monotonic()
    code, _, err = run(capsys, "connector", "list")
    assert code == 2 and time.monotonic() - started < 10
    one_clear_line(err, "DT is rate limiting us (429): try again later")


@pytest.mark.parametrize("body,needle", [
    (b"<html>maintenance</html>", "is not a JSON object: <html>maintenance</html>"),
    (b'["a list"]', "is not a JSON object"),
    (b'{"dataConnectors": "nope", "nextPageToken": ""}', "is malformed: `dataConnectors` is not a list"),
    (b'{"dataConnectors": [], "nextPageToken": 7}', "`nextPageToken` not a string"),
    (b"[" * 200_000 + b"]" * 200_000, "is not a JSON object: [[[["),  # deeper than Python's parser goes
])
def test_a_malformed_answer_is_one_line_and_exit_2(dt_env, standin, capsys, body, needle):
    def answer(handler, method, path, params) -> bool:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        return True

    standin.hostile = answer
    code, _, err = run(capsys, "connector", "list")
    assert code == 2
    one_clear_line(err, needle)


def test_device_entries_without_a_name_are_malformed(dt_env, standin, capsys):
    standin.hostile = lambda handler, method, path, params: path.endswith("/devices") and (
        handler._send(200, {"devices": [{"type": "touch"}], "nextPageToken": ""}) or True)
    code, _, err = run(capsys, "backfill", "--since", "1d", "--url", "http://127.0.0.1:9/")
    assert code == 2
    one_clear_line(err, "DT's device list for project proj-test has an entry without a name")


def test_dt_error_text_reaches_the_terminal_escaped(dt_env, standin, capsys):
    standin.fail(400, 1, message=ESCAPES)
    code, out, err = run(capsys, "connector", "list")
    assert code == 2
    one_clear_line(err, "DT refused the request (GET /projects/proj-test/dataconnectors): \\x1b[2J\\x1b]0;owned")
    assert "\x1b" not in err and "\u2028" not in err and "\\u2028" in err


def test_connector_names_and_urls_from_dt_are_escaped(dt_env, standin, capsys, make_serve):
    add_history(standin, devices=1, hours=1)
    run(capsys, "connector", "apply", "--name", "recv", "--url", "https://rx.example.com/", "--events", "touch")
    conn = next(iter(standin.projects[PROJECT].connectors.values()))
    conn["displayName"] = "recv" + ESCAPES
    conn["status"] = "ACTIVE\x1b[31m"
    for argv in (("connector", "list"), ("connector", "status", "--id", conn["name"].rsplit("/", 1)[-1])):
        code, out, err = run(capsys, *argv)
        assert "\x1b" not in out + err and "\u2028" not in out + err
        assert "\\x1b]0;owned\\x07\\nFAKE" in out
        assert not any(line.startswith("FAKE") for line in out.splitlines())
