"""No product module imports a test double (the emulator, the DT API stand-in in emulator/).

Read from the source (every `import`, `from … import`, `importlib.import_module` /
`__import__` with a literal name, and a literal ``"module:function"`` such as the
`dtconnector` command table names), so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("core", "local_receiver", "dtcloud", "dtconnector", "aws_lambda", "gcp_function", "azure_trigger",
           "ibm_action", "heroku")
TEST_DOUBLES = ("emulator",)
#: The one exception, with its reason: `dtconnector send` is how a user tries a receiver, so
#: the command's table names the emulator's parser ("emulator.cli:add_send_parser"). It is
#: imported only when `send` runs (test_only_send_imports_the_emulator), never by an import
#: statement, and never into a cloud bundle (scripts/bundle.py copies no dtconnector/).
ALLOWED = {("dtconnector/cli.py", "emulator.cli")}
#: A string naming an object to import later: "package.module:function".
_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _ENTRY_POINT.fullmatch(node.value):
            found.append((node.lineno, node.value.partition(":")[0]))
    return found


def is_test_double(module: str) -> bool:
    return any(module == d or module.startswith(d + ".") for d in TEST_DOUBLES)


def test_no_product_module_imports_a_test_double():
    offenders = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for line, module in imported_modules(path):
                allowed = any(rel == where and (module == what or module.startswith(what + "."))
                              for where, what in ALLOWED)
                if is_test_double(module) and not allowed:
                    offenders.append(f"{rel}:{line} imports {module}")
    assert offenders == [], "product code must not import the test doubles:\n" + "\n".join(offenders)


def test_the_scan_sees_every_kind_of_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import emulator.sender\nfrom emulator import dtapi\nimport importlib\n"
                      "def f():\n    from emulator.signing import sign\n    importlib.import_module('emulator.dtapi')\n"
                      "TABLE = {'x': 'emulator.jwks:main', 'note': 'see emulator.cli'}\n")
    modules = [m for _, m in imported_modules(sample) if is_test_double(m)]
    assert modules == ["emulator.sender", "emulator", "emulator.dtapi", "emulator.signing", "emulator.signing.sign",
                       "emulator.dtapi", "emulator.jwks"]


def test_the_one_exception_is_still_needed():
    """When `send` leaves the command table, this fails, and the exception goes."""
    modules = {m for _, m in imported_modules(REPO / "dtconnector" / "cli.py")}
    assert "emulator.cli" in modules


@pytest.mark.parametrize("command,loaded", [
    ("--help", []), ("state --help", []), ("stats --help", []), ("serve --help", []),
    ("dead-letters --db /nonexistent/events.db", []),
    ("send --help", ["dtcloud", "emulator"]),  # the one that loads it: the check can fail
    ("connector --help", ["dtcloud"]),
])
def test_only_send_imports_the_emulator(command, loaded):
    """The dispatcher imports a subcommand's module only when it runs: no other subcommand
    loads the emulator, and only DT's commands load the DT API side (dtcloud), even for
    their --help; `requests` is imported by none of them until a request is made."""
    code = ("import sys, runpy\n"
            "try:\n    runpy.run_module('dtconnector', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "loaded = sorted({m.partition('.')[0] for m in sys.modules} & {'emulator', 'dtcloud', 'requests'})\n"
            "print('LOADED', loaded, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code, *command.split()], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert f"LOADED {loaded}" in out.stderr, out.stderr
