"""A new user's first hour, through the real `dtconnector` command (the console script pip
installed, in a folder of the user's own, as README's "Writing handlers" shows): handler
modules found in the current folder, a missing or broken one named in one line with exit
2, dead letters that say why, help that lists defaults and an example, `--version`."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from core.ports import COMPLETED, Claim
from dtconnector import cli
from local_receiver.sqlite_store import Database, SQLiteClaimStore, SQLiteQueue
from tests.dt import event_body, event_id_of, signed
from tests.waiting import wait_until

DTCONNECTOR = Path(sys.executable).with_name("dtconnector")

#: README's "Writing handlers" example, as written there.
README_HANDLERS = textwrap.dedent(
    """\
    # handlers.py  (name it in DT_HANDLERS=handlers)
    from core import on

    @on("temperature")            # or @on("*") for every type
    def record(event):
        print(event.device_id, event.data.value, event.timestamp)
    """
)

FAILING_HANDLERS = textwrap.dedent(
    """\
    from core import on

    LIMITS = {"room-1": 25.0}

    @on("temperature")
    def check(event):
        if event.data.value > LIMITS[event.labels["room"]]:
            print("too warm")
    """
)


def _env(**extra: str) -> dict:
    """The user's shell: no DT_* settings, no PYTHONPATH (nothing puts the folder on it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DT_") and k != "PYTHONPATH"}
    return {**env, **extra}


def run(folder: Path, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    assert DTCONNECTOR.exists(), f"the console script is not installed at {DTCONNECTOR}"
    return subprocess.run([str(DTCONNECTOR), *args], cwd=folder, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


def _has_state(folder: Path, device: str) -> bool:
    """Whether the worker stored `device`'s state (read straight from the database: a
    `dtconnector state` per poll would start an interpreter every 50 ms)."""
    with contextlib.closing(sqlite3.connect(folder / ".dtconnector" / "events.db")) as conn:
        return conn.execute("SELECT 1 FROM device_state WHERE device_id = ?", (device,)).fetchone() is not None


class Serve:
    """`dtconnector serve --dev --port 0` started in `folder`, as `make run` starts it."""

    def __init__(self, folder: Path, **env: str):
        self.folder = folder
        self.proc = subprocess.Popen(
            [str(DTCONNECTOR), "serve", "--dev", "--port", "0"], cwd=folder, env=_env(**env),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.banner: list[str] = []
        for line in self.proc.stderr:
            self.banner.append(line)
            found = re.search(r"receiving DT events at http://127\.0\.0\.1:(\d+)/", line)
            if found:
                self.port = int(found.group(1))
                break
        else:
            raise AssertionError(f"serve exited {self.proc.wait(10)}: {''.join(self.banner)}")
        self.secret = (folder / ".dtconnector" / "dev-secret").read_text().strip()

    def post(self, body: bytes) -> int:
        return self._request("POST", body, signed(body, self.secret))[0]

    def health(self) -> dict:
        return self._request("GET", b"", {}, "/healthz")[1]

    def _request(self, method, body, headers, path="/"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read() or b"null")
        finally:
            conn.close()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def serve():
    started: list[Serve] = []

    def start(folder: Path, **env: str) -> Serve:
        started.append(Serve(folder, **env))
        return started[-1]

    yield start
    for server in started:
        server.kill()


# -- handler modules -------------------------------------------------------------------


@pytest.mark.slow
def test_the_readme_handler_in_the_current_folder_runs_with_DT_HANDLERS_handlers(tmp_path, serve):
    (tmp_path / "handlers.py").write_text(README_HANDLERS)
    server = serve(tmp_path, DT_HANDLERS="handlers")
    body = event_body("temperature", device="dev-first-hour", timestamp="2026-11-22T10:00:00Z")
    assert server.post(body) == 202
    # The device's state is written after its handlers ran (/healthz's queue count is
    # re-read every 0.1 s, so a 0 read just after the 202 may predate the event).
    wait_until(lambda: _has_state(tmp_path, "dev-first-hour"), what="the event to be handled")
    status, out = server.stop()
    assert status == 0
    assert "dev-first-hour 21.5 2026-11-22 10:00:00+00:00" in out.splitlines()
    assert "Traceback" not in "".join(server.banner)


def test_a_missing_handler_module_is_one_line_and_exit_2(tmp_path):
    result = run(tmp_path, "serve", "--port", "0", env=_env(DT_HANDLERS="handlers"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "dtconnector: cannot load handler module 'handlers' (DT_HANDLERS): ModuleNotFoundError: "
        f"No module named 'handlers' (no handlers.py in {tmp_path} or the installed packages)"
    ]


@pytest.mark.parametrize(
    "source, error",
    [
        ("from core import on\n\n@on('temperature'\ndef record(event):\n    pass\n",
         "SyntaxError: '(' was never closed (at handlers.py:3)"),
        ("import os\nROOM = os.environ['ROOM_NAME']\n", "KeyError: 'ROOM_NAME' (at handlers.py:2)"),
        ("import no_such_library_for_dt\n",
         "ModuleNotFoundError: No module named 'no_such_library_for_dt' (at handlers.py:1)"),
    ],
    ids=["syntax-error", "raises-at-import", "imports-a-missing-library"],
)
def test_a_broken_handler_module_names_the_error_and_where_in_one_line(tmp_path, source, error):
    (tmp_path / "handlers.py").write_text(source)
    result = run(tmp_path, "serve", "--port", "0", env=_env(DT_HANDLERS="handlers"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"dtconnector: cannot load handler module 'handlers' (DT_HANDLERS): {error}"]


# -- dead letters ----------------------------------------------------------------------


@pytest.mark.slow
def test_dead_letters_say_which_handler_raised_what_and_where(tmp_path, serve):
    (tmp_path / "handlers.py").write_text(FAILING_HANDLERS)
    server = serve(tmp_path, DT_HANDLERS="handlers", DT_MAX_ATTEMPTS="2", DT_RETRY_DELAY_S="0")
    body = event_body("temperature", device="dev-warm", timestamp="2026-11-22T10:00:00Z")
    assert server.post(body) == 202
    wait_until(lambda: server.health()["deadLetters"] == 1, what="the event to be dead-lettered")

    text = run(tmp_path, "dead-letters")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[:5] == [
        f"event {event_id_of(body)} (temperature, device dev-warm)",
        "  handler:   handlers.check",
        "  error:     KeyError: 'room'",
        "  raised at: handlers.py:7",
        "  event at:  2026-11-22T10:00:00Z",
    ]
    assert re.fullmatch(r"  dead at:   \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ after 2 attempts", lines[5]), lines[5]
    assert "dead-letters --requeue" in text.stderr

    [entry] = [json.loads(line) for line in run(tmp_path, "dead-letters", "--json").stdout.splitlines()]
    assert {k: entry[k] for k in ("eventId", "eventType", "deviceId", "timestamp", "attempts", "handler",
                                  "exceptionType", "exceptionMessage", "raisedAt")} == {
        "eventId": event_id_of(body), "eventType": "temperature", "deviceId": "dev-warm",
        "timestamp": "2026-11-22T10:00:00Z", "attempts": 2, "handler": "handlers.check",
        "exceptionType": "KeyError", "exceptionMessage": "'room'", "raisedAt": "handlers.py:7",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["deadAt"])
    assert entry["error"].startswith("HandlerFailed: handler handlers.check failed for event ")


def test_no_dead_letters_is_said_on_stderr_and_is_success(tmp_path):
    Database(tmp_path / "events.db").close()
    for args in (["dead-letters"], ["dead-letters", "--json"]):
        result = run(tmp_path, *args, "--db", "events.db")
        assert (result.returncode, result.stdout) == (0, "")
        assert result.stderr == "no dead letters in events.db\n"


def test_dead_letters_into_head_exits_0_quietly(tmp_path):
    db = Database(tmp_path / "events.db")
    queue = SQLiteQueue(db)
    for i in range(600):  # far more text than a pipe holds: the writer meets a closed pipe
        queue.enqueue(event_body(device=f"dev-{i}").decode(), event_id=f"e{i}")
        queue.dead_letter(queue.reserve(60), f"HandlerFailed: handler handlers.check failed for event e{i}: "
                                             f"KeyError: 'room' (at handlers.py:7)")
    db.close()
    for args in ("dead-letters", "dead-letters --json"):
        result = subprocess.run(["bash", "-c", f"set -o pipefail; '{DTCONNECTOR}' {args} --db events.db | head -1"],
                                cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(("event e0 (temperature, device dev-0)", '{"eventId": "e0"'))
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


# -- help, version, stats --------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "state", "dead-letters", "stats"])
def test_help_lists_every_option_with_its_default_and_an_example(tmp_path, command):
    result = run(tmp_path, command, "--help")
    assert result.returncode == 0
    assert f"dtconnector {command}" in result.stdout.partition("\nexample:\n")[2], result.stdout
    parser = cli.build_parser(load=[command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        if action.help in (None, "==SUPPRESS==") or "-h" in action.option_strings:
            continue
        if action.nargs != 0:  # an option taking a value says what it is when not given
            assert "default" in action.help, (command, action.option_strings)
        assert action.option_strings[0] in result.stdout


def test_version_is_the_installed_one(tmp_path):
    result = run(tmp_path, "--version")
    assert (result.returncode, result.stdout) == (0, f"dtconnector {version('dtconnector')}\n")


def test_stats_json_keys_are_plain_identifiers(tmp_path):
    db = Database(tmp_path / "events.db")
    SQLiteClaimStore(db).create("e1", Claim(COMPLETED, time.time() + 60, "v"))
    SQLiteQueue(db).enqueue("{}", event_id="e2")
    db.close()
    result = run(tmp_path, "stats", "--db", "events.db", "--json")
    assert result.returncode == 0, result.stderr
    store = json.loads(result.stdout)["store"]
    keys = [*store, *store["records"], *store["oldest"]]
    assert "claims_earliest_expiry" in store["oldest"]
    assert all(re.fullmatch(r"[A-Za-z_]+", key) for key in keys), keys


def test_a_dead_letter_that_is_not_a_handler_failure_shows_its_error(tmp_path):
    db = Database(tmp_path / "events.db")
    queue = SQLiteQueue(db)
    queue.enqueue("this is not a DT event", event_id="?")
    queue.dead_letter(queue.reserve(60), "PoisonMessage: body is not JSON")
    db.close()
    result = run(tmp_path, "dead-letters", "--db", "events.db")
    assert result.returncode == 0
    assert result.stdout.splitlines()[:2] == ["event ?", "  error:     PoisonMessage: body is not JSON"]
    [entry] = [json.loads(line) for line in run(tmp_path, "dead-letters", "--db", "events.db", "--json").stdout.splitlines()]
    assert (entry["eventType"], entry["handler"], entry["error"]) == (None, None, "PoisonMessage: body is not JSON")
