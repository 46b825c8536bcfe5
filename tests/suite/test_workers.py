"""`make test` on pytest-xdist workers: the tests that share a costly stand-in (Google's
emulators) are one `xdist_group`, and the installed pytest and pytest-xdist honour it
(pytest 9.2 made --dist loadgroup ignore the marks, silently: each worker then started its
own emulators)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120,
    )


def test_scenarios_on_a_grouped_stand_in_carry_its_group(tmp_path):
    probe = tmp_path / "groups_probe.py"
    probe.write_text(textwrap.dedent("""
        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(items):
            for item in items:
                groups = sorted(m.args[0] for m in item.iter_markers("xdist_group"))
                print("GROUPS", item.nodeid, ",".join(groups) or "-", sep="\\t")
    """))
    out = run_pytest(
        "--collect-only", "-q", "-s", "-p", "groups_probe", "tests/contract/test_metrics.py",
        "tests/gcp_function/test_gcp_function.py", cwd=ROOT,
        env={"DT_TEST_PLATFORMS": "gcp,gcp_direct,local", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    groups = dict(line.split("\t")[1:3] for line in out.stdout.splitlines() if line.startswith("GROUPS\t"))
    contract = {nodeid: group for nodeid, group in groups.items() if "test_metrics.py" in nodeid}
    assert contract and all((group == "gcp") == ("[gcp]" in nodeid) for nodeid, group in contract.items())
    own = {group for nodeid, group in groups.items() if "test_gcp_function.py" in nodeid}
    assert own == {"gcp"}


def test_a_group_runs_on_one_worker(tmp_path):
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(textwrap.dedent("""
            import os
            import pytest

            def record(kind):
                with open(os.environ["WORKERS_SEEN"], "a") as f:
                    f.write(f"{kind} {os.environ['PYTEST_XDIST_WORKER']}\\n")

            @pytest.mark.xdist_group("emulators")
            @pytest.mark.parametrize("i", range(4))
            def test_grouped(i):
                record("grouped")

            @pytest.mark.parametrize("i", range(8))
            def test_free(i):
                record("free")
        """))
    seen = tmp_path / "seen.txt"
    out = run_pytest("-n", "2", "--dist", "loadgroup", cwd=tmp_path, env={"WORKERS_SEEN": str(seen)})
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line.split() for line in seen.read_text().splitlines()]
    grouped = [worker for kind, worker in lines if kind == "grouped"]
    assert len(grouped) == 8 and len(set(grouped)) == 1, lines
    assert len(lines) == 24
