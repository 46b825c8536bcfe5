"""The user's handlers: `@on("temperature")` registers a function for an event type.

Handlers are identified by their qualified name, which is what the worker's ledger
records as done; renaming a handler therefore makes a redelivered event run it again,
which is the safe direction.
"""

from __future__ import annotations

import importlib
import threading
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
        """Import the modules named in `DT_HANDLERS`, so their `@on` decorators run.
        Raises `HandlerModuleError` (one line) when one is missing or fails to import."""
        for module in modules:
            if module not in self._loaded:
                try:
                    importlib.import_module(module)
                except Exception as exc:
                    raise HandlerModuleError(
                        f"cannot load handler module {module!r} (DT_HANDLERS): {type(exc).__name__}: {exc}"
                    ) from exc
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
