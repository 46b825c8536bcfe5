"""Run a deploy script against stub cloud CLIs that record every call (no cloud, no network).

Each stub appends its name and arguments to a log and answers from `answers`: a list of
(name, substring of the joined arguments, stdout, exit status); the first match wins,
otherwise it prints nothing and succeeds. Files passed as ``@path`` arguments are copied
to ``<tmp_path>/calls.log.files/`` (scripts delete their temporary files on exit).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STUB = """#!/bin/bash
# Bash only, no interpreter to start: a deploy script's dry run makes dozens of calls.
name="${0##*/}"
printf '%s\\n' "$name" "$@" "--END--" >> "$STUB_LOG"
for a in "$@"; do case "$a" in @*) [ -f "${a#@}" ] && cp "${a#@}" "$STUB_LOG.files/" ;; esac; done
joined="$*"
for entry in "$STUB_ANSWERS"/*.name; do
  [ -e "$entry" ] || break
  IFS= read -r -d '' stub < "$entry"
  [ "$stub" = "$name" ] || continue
  base="${entry%.name}"
  IFS= read -r -d '' needle < "$base.needle"
  case "$joined" in *"$needle"*) ;; *) continue ;; esac
  IFS= read -r -d '' out < "$base.out"
  IFS= read -r -d '' status < "$base.status"
  printf '%s' "$out"
  exit "$status"
done
exit 0
"""


def run_script(script: Path, tmp_path: Path, names: list[str], answers: list[tuple], env: dict[str, str]):
    """(CompletedProcess, [[name, arg, ...], ...]) for one run of `script`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    python312 = bin_dir / "python3.12"  # the SAM template's runtime, which deploy-aws checks for
    if not python312.exists():
        python312.symlink_to(sys.executable)
    log, answers_dir = tmp_path / "calls.log", tmp_path / "answers"
    (tmp_path / "calls.log.files").mkdir(exist_ok=True)
    answers_dir.mkdir(exist_ok=True)
    for old in answers_dir.iterdir():
        old.unlink()
    for n, (stub, needle, out, status) in enumerate(answers):  # in order: the first match wins
        for part, value in (("name", stub), ("needle", needle), ("out", out), ("status", str(status))):
            (answers_dir / f"{n:05d}.{part}").write_text(value)
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "STUB_ANSWERS": str(answers_dir),
            "HOME": str(tmp_path), **env}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=full, timeout=300)
    calls, current = [], []
    for line in log.read_text().splitlines() if log.exists() else []:
        if line == "--END--":
            calls.append(current)
            current = []
        else:
            current.append(line)
    return result, calls


def flag(call: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in one recorded call."""
    for i, arg in enumerate(call):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(call):
            return call[i + 1]
    return None


#: What makes a direct deploy script wire the DT connector (`dtconnector connector apply`).
DT_CREDENTIALS = {
    "DT_PROJECT_ID": "proj-1",
    "DT_SERVICE_ACCOUNT_KEY_ID": "k",
    "DT_SERVICE_ACCOUNT_SECRET": "s",
    "DT_SERVICE_ACCOUNT_EMAIL": "e@example.com",
}
