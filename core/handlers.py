"""The user's handlers: `@on("temperature")` registers a function for an event type.

Handlers are identified by their qualified name, which is what the worker's ledger
records as done; renaming a handler therefore makes a redelivered event run it again,
which is the safe direction.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable

from .config import ConfigError
from .events import Event

Handler = Callable[[Event], object]
ANY = "*"


class HandlerModuleError(ConfigError):
    """A module named in ``DT_HANDLERS`` is missing or raised while being imported. The
    message is one line naming the module and the error, for a CLI to print and exit 2,
    or a cloud entry point to log once at start."""


#: Longest exception message carried into a dead letter or a start-up error: the user's
#: own text, kept whole enough to read and short enough for a queue attribute or a
#: Cloudant field (IBM keeps 500 characters of a dead letter's error).
MAX_MESSAGE_CHARS = 300


def _shown_path(filename: str) -> str:
    """A source file as a person finds it: relative to the current folder when inside
    it (`handlers.py`), else its folder and name (`json/decoder.py`)."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        relative = filename
    if not relative.startswith(os.pardir):
        return relative
    head, name = os.path.split(filename)
    return os.path.join(os.path.basename(head), name) if head else name


def _is_import_machinery(filename: str) -> bool:
    """Frames of `importlib` and of `load` itself: never where the user's error is."""
    return (
        filename.startswith("<frozen")
        or filename == __file__
        or os.path.dirname(filename) == os.path.dirname(importlib.__file__)
    )


def type_name(exc: BaseException) -> str:
    """`KeyError` for Python's own exceptions, `module.Name` for everyone else's."""
    kind = type(exc)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def message_of(exc: BaseException) -> str:
    """The exception's message on one bounded line (a SyntaxError's without the file and
    line it appends, which `raised_at` gives)."""
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    return one_line(text)


def raised_at(exc: BaseException, own_file: str | None = None) -> str:
    """Where `exc` was raised, as ``file:line``. With `own_file` (the handler's source
    file), the deepest line in that file comes first, because that is the line the user
    wrote: ``handlers.py:12 (raised in json/decoder.py:355)``. Empty when unknown."""
    if isinstance(exc, SyntaxError) and exc.filename:  # the file being compiled, not a frame
        return f"{_shown_path(exc.filename)}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_import_machinery(f.filename)]
    if not frames:
        return ""
    last = frames[-1]
    raised = f"{_shown_path(last.filename)}:{last.lineno}"
    if own_file:
        own = [f for f in frames if f.filename == own_file]
        if own and own[-1] is not last:
            return f"{_shown_path(own_file)}:{own[-1].lineno} (raised in {raised})"
    return raised


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def _module_error(module: str, exc: BaseException) -> str:
    """The one line for a module that could not be imported: what, why, and where to look."""
    text = f"cannot load handler module {module!r} (DT_HANDLERS): {type_name(exc)}: {message_of(exc)}"
    if isinstance(exc, ModuleNotFoundError) and exc.name == module.split(".")[0]:
        # The module itself is not there (not something it imports): say where we looked.
        return f"{text} (no {module.replace('.', '/')}.py in {os.getcwd()} or the installed packages)"
    where = raised_at(exc)
    return f"{text} (at {where})" if where else text


def importable_here() -> None:
    """Put the current folder first on `sys.path`, as uvicorn's ``--app-dir .`` and
    gunicorn's ``--chdir`` do: `DT_HANDLERS=handlers` then finds the `handlers.py` beside
    the user, whichever way the process was started (the `dtconnector` script's own
    folder is what Python puts there otherwise). In a cloud bundle the runtime starts in
    the bundle root (Lambda's /var/task, Cloud Functions' /workspace, Heroku's /app) or
    already has it on the path because the entry package beside `handlers.py` was
    imported from there (Azure's wwwroot, an OpenWhisk action's folder)."""
    try:
        here = os.getcwd()
    except OSError:  # the folder was removed under us: nothing to add
        return
    if not any(entry in ("", here) or os.path.abspath(entry) == here for entry in sys.path):
        sys.path.insert(0, here)
        importlib.invalidate_caches()


@dataclass(frozen=True)
class Registration:
    name: str
    event_type: str
    func: Handler


class HandlerRegistry:
    def __init__(self) -> None:
        self._registrations: list[Registration] = []
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    def on(self, event_type: str) -> Callable[[Handler], Handler]:
        """Decorator: run the function for every event of `event_type` (``"*"`` for all)."""
        if not isinstance(event_type, str) or not event_type:
            raise ValueError("on() needs an event type such as 'temperature' or '*'")

        def register(func: Handler) -> Handler:
            name = f"{func.__module__}.{func.__qualname__}"
            with self._lock:
                if any(r.name == name and r.event_type == event_type for r in self._registrations):
                    return func  # a module imported twice registers once
                self._registrations.append(Registration(name, event_type, func))
            return func

        return register

    def handlers_for(self, event_type: str) -> list[Registration]:
        """Handlers for this type, in registration order, each function at most once."""
        seen: set[str] = set()
        chosen = []
        for r in self._registrations:
            if r.event_type in (event_type, ANY) and r.name not in seen:
                seen.add(r.name)
                chosen.append(r)
        return chosen

    def load(self, modules: Iterable[str]) -> None:
        """Import the modules named in `DT_HANDLERS`, so their `@on` decorators run, from
        the current folder first (see `importable_here`). Raises `HandlerModuleError`
        (one line) when one is missing or fails to import."""
        modules = [m for m in modules if m not in self._loaded]
        if modules:
            importable_here()
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # SyntaxError included: what the user's file raised
                raise HandlerModuleError(_module_error(module, exc)) from exc
            self._loaded.add(module)

    def summary(self) -> dict[str, list[str]]:
        """Handler name -> the event types it runs for, in registration order: what a
        start-up banner prints."""
        out: dict[str, list[str]] = {}
        for r in list(self._registrations):
            out.setdefault(r.name, []).append(r.event_type)
        return out

    def clear(self) -> None:
        with self._lock:
            self._registrations.clear()
            self._loaded.clear()


#: The registry `@on` writes to and every platform's worker reads.
registry = HandlerRegistry()
on = registry.on
