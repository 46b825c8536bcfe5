"""Refuse a cloud runtime past its end of life; warn within 90 days of it.

One table (scripts/runtimes.tsv, documented in deploy/runtimes.md) holds each platform's
runtimes with the vendor's deprecation and end-of-life dates and the page they come from.
Every deploy script calls this through `check_runtime` in scripts/deploy-lib.sh, so the
rule lives in one place. Standard library only: it runs before any virtualenv exists.

    python3 scripts/runtimes.py check <platform> <runtime>   exit 0 ok/warning, 3 refused
    python3 scripts/runtimes.py table                          print the table as Markdown

DT_TODAY=YYYY-MM-DD replaces today's date (tests, and planning an upgrade).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

TABLE = Path(__file__).with_name("runtimes.tsv")
WARN_DAYS = 90
REFUSED = 3


@dataclass(frozen=True)
class Runtime:
    platform: str
    runtime: str
    deprecated: Optional[_dt.date]
    end_of_life: _dt.date
    source: str


def _date(text: str) -> Optional[_dt.date]:
    return None if text in ("", "-") else _dt.date.fromisoformat(text)


def load(path: Path = TABLE) -> List[Runtime]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{path.name}:{number}: expected 5 tab-separated fields, got {len(fields)}")
        platform, runtime, deprecated, eol, source = fields
        end = _date(eol)
        if end is None:
            raise ValueError(f"{path.name}:{number}: {platform} {runtime} has no end-of-life date")
        rows.append(Runtime(platform, runtime, _date(deprecated), end, source))
    return rows


def today() -> _dt.date:
    override = os.environ.get("DT_TODAY", "").strip()
    return _dt.date.fromisoformat(override) if override else _dt.date.today()


def check(platform: str, runtime: str, on: _dt.date, rows: List[Runtime]) -> Tuple[bool, List[str]]:
    """(allowed, messages). Refused on or after end of life; a warning within WARN_DAYS of
    it, when the vendor's deprecation period has begun, or when the table does not know it."""
    row = next((r for r in rows if r.platform == platform and r.runtime == runtime), None)
    if row is None:
        known = ", ".join(r.runtime for r in rows if r.platform == platform) or "none"
        return True, [
            f"warning: {platform} runtime '{runtime}' is not in scripts/runtimes.tsv, so its end of "
            f"life is unknown (listed: {known}). Add it with the vendor's dates."
        ]
    if on >= row.end_of_life:
        return False, [
            f"{platform} runtime '{runtime}' reached end of life on {row.end_of_life.isoformat()} "
            f"({row.source}). Choose a newer runtime from scripts/runtimes.tsv."
        ]
    messages = []
    left = (row.end_of_life - on).days
    if left <= WARN_DAYS:
        messages.append(
            f"warning: {platform} runtime '{runtime}' reaches end of life in {left} days, on "
            f"{row.end_of_life.isoformat()} ({row.source}). Plan the upgrade now."
        )
    elif row.deprecated is not None and on >= row.deprecated:
        messages.append(
            f"warning: {platform} runtime '{runtime}' is deprecated since {row.deprecated.isoformat()}; "
            f"end of life {row.end_of_life.isoformat()} ({row.source})."
        )
    return True, messages


def markdown(rows: List[Runtime]) -> str:
    lines = ["| Platform | Runtime | Deprecated | End of life | Vendor page |", "|---|---|---|---|---|"]
    for r in rows:
        deprecated = r.deprecated.isoformat() if r.deprecated else "-"
        lines.append(f"| {r.platform} | `{r.runtime}` | {deprecated} | {r.end_of_life.isoformat()} | {r.source} |")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    if len(argv) == 3 and argv[0] == "check":
        allowed, messages = check(argv[1], argv[2], today(), load())
        for message in messages:
            print(message, file=sys.stderr)
        return 0 if allowed else REFUSED
    if argv == ["table"]:
        print(markdown(load()))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
