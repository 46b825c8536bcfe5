"""scripts/runtimes.py: the runtime end-of-life table and the rule every deploy script applies."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import runtimes  # noqa: E402

ROWS = runtimes.load()
TODAY = dt.date(2026, 11, 29)


def pinned() -> dict[str, str]:
    """The runtime each deploy script uses by default, read from the script or its bundle."""
    template = (ROOT / "aws_lambda/bundle/template.yaml").read_text()
    template_direct = (ROOT / "aws_lambda/template-direct.yaml").read_text()
    gcp = (ROOT / "scripts/deploy-gcp-lib.sh").read_text()  # both GCP modes' runtime (gcp_settings)
    azure = (ROOT / "scripts/deploy-azure-lib.sh").read_text()  # both Azure modes' Python
    return {
        "aws": re.search(r"Runtime: *(python[0-9.]+)", template).group(1),
        "aws direct": re.search(r"Runtime: *(python[0-9.]+)", template_direct).group(1),
        "gcp": re.search(r'RUNTIME="\$\{DT_RUNTIME:-(python\d+)\}"', gcp).group(1),
        "azure": re.search(r"PY_VERSION=\$\{DT_AZURE_PYTHON:-([0-9.]+)\}", azure).group(1),
        "heroku": (ROOT / "heroku/bundle/.python-version").read_text().strip(),
    }


@pytest.mark.parametrize("platform, runtime", sorted(pinned().items()))
def test_every_pinned_runtime_is_in_the_table_and_alive_today(platform, runtime):
    allowed, messages = runtimes.check(platform.split()[0], runtime, TODAY, ROWS)
    assert allowed and not any("not in scripts/runtimes.tsv" in m for m in messages), messages


def test_every_row_names_its_vendor_page_and_dates_are_ordered():
    assert {r.platform for r in ROWS} == {"aws", "gcp", "azure", "ibm", "heroku"}
    for row in ROWS:
        assert row.source.startswith("https://"), row
        assert row.deprecated is None or row.deprecated <= row.end_of_life, row


def test_ibm_python_311_is_refused_after_its_end_of_life():
    allowed, [message] = runtimes.check("ibm", "python-3.11", TODAY, ROWS)
    assert not allowed
    assert "2026-10-31" in message and "cloud.ibm.com" in message
    assert runtimes.check("ibm", "python-3.11", dt.date(2026, 10, 30), ROWS)[0]  # the day before: allowed


def test_warning_within_90_days_and_not_before():
    eol = next(r.end_of_life for r in ROWS if (r.platform, r.runtime) == ("aws", "python3.12"))
    allowed, messages = runtimes.check("aws", "python3.12", eol - dt.timedelta(days=90), ROWS)
    assert allowed and "in 90 days" in messages[0]
    assert runtimes.check("aws", "python3.12", eol - dt.timedelta(days=91), ROWS) == (True, [])


def test_deprecation_period_warns_and_unknown_runtime_warns():
    allowed, [message] = runtimes.check("ibm", "python-3.13", TODAY, ROWS)
    assert allowed and "deprecated since 2026-10-01" in message
    allowed, [message] = runtimes.check("ibm", "python-3.99", TODAY, ROWS)
    assert allowed and "not in scripts/runtimes.tsv" in message


def test_command_line_exit_status_and_today_override():
    def run(*args: str, today: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, DT_TODAY=today)
        return subprocess.run([sys.executable, str(ROOT / "scripts/runtimes.py"), *args], capture_output=True, text=True, env=env)

    refused = run("check", "ibm", "python-3.11", today="2026-11-29")
    assert refused.returncode == runtimes.REFUSED and "end of life" in refused.stderr
    assert run("check", "ibm", "python-3.11", today="2026-01-01").returncode == 0
    assert "| ibm | `python-3.13` |" in run("table", today="2026-11-29").stdout


def test_a_malformed_row_is_an_error(tmp_path):
    bad = tmp_path / "runtimes.tsv"
    bad.write_text("aws\tpython3.12\t-\t\thttps://x\n")
    with pytest.raises(ValueError, match="no end-of-life date"):
        runtimes.load(bad)


def test_the_documented_table_is_the_tsv():
    assert runtimes.markdown(ROWS) in (ROOT / "deploy" / "runtimes.md").read_text()
