"""The deployable bundle and Heroku's config files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "heroku" / "bundle"


def test_procfile_declares_web_on_port_and_worker():
    lines = [line for line in (BUNDLE / "Procfile").read_text().splitlines() if line.strip()]
    assert all(re.fullmatch(r"[a-z][a-z0-9_-]*: \S.*", line) for line in lines), lines
    kinds = dict(line.split(": ", 1) for line in lines)
    assert set(kinds) == {"web", "worker"}
    assert kinds["web"] == "python -m heroku.web --host 0.0.0.0 --port $PORT"
    assert kinds["worker"] == "python -m heroku.worker"


def test_app_json_declares_the_addon_the_secret_and_the_formation():
    app = json.loads((BUNDLE / "app.json").read_text())
    assert app["env"]["DT_SIGNATURE_SECRET"]["required"] is True
    assert "value" not in app["env"]["DT_SIGNATURE_SECRET"]  # never a default secret
    assert app["env"]["DT_HANDLERS"]["value"] == "handlers"
    assert [a["plan"].split(":")[0] for a in app["addons"]] == ["heroku-redis"]
    assert set(app["formation"]) == {"web", "worker"}
    assert all(f["quantity"] >= 1 for f in app["formation"].values())
    for name, spec in app["env"].items():
        assert name.startswith("DT_") and set(spec) <= {"description", "value", "required", "generator"}


def test_python_version_and_requirements():
    assert re.fullmatch(r"3\.1[0-9]\n", (BUNDLE / ".python-version").read_text())
    sys.path.insert(0, str(ROOT / "scripts"))
    import lock  # the lock's reader (tests/deploy/test_locks.py checks the lock itself)

    _, pins, _ = lock.read_lock((BUNDLE / "requirements.txt").read_text())
    names = {pin.name for pin in pins}
    assert {"pyjwt", "cryptography", "redis", "uvicorn", "httptools", "uvloop"} <= names


def test_deploy_script_is_valid_bash_and_stops_without_the_cli(tmp_path):
    subprocess.run(["bash", "-n", str(ROOT / "heroku" / "deploy.sh")], check=True)
    result = subprocess.run(["bash", str(ROOT / "heroku" / "deploy.sh")], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "Heroku CLI is not installed" in result.stderr or "not logged in" in result.stderr


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("b") / "app"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle.py"), "heroku", str(dest)], check=True,
                   capture_output=True)
    return dest


def test_bundle_layout(bundle):
    for name in ("Procfile", "app.json", ".python-version", "requirements.txt", "handlers.py",
                 "core/__init__.py", "heroku/app.py", "heroku/worker.py"):
        assert (bundle / name).is_file(), name
    assert not (bundle / "heroku" / "bundle").exists() and not (bundle / "heroku" / "deploy.sh").exists()


def test_bundle_imports_from_a_clean_interpreter(bundle):
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "import heroku.app, core, handlers; from heroku.app import app;"
        "lazy = 'redis' not in sys.modules;"
        "import heroku.worker;"
        "print(json.dumps({'app': heroku.app.__file__, 'worker': heroku.worker.__file__, 'core': core.__file__,"
        " 'wsgi': callable(app), 'redis_lazy': lazy}))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code, str(bundle)], cwd=bundle, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("app", "worker", "core"):
        assert Path(info[key]).resolve().is_relative_to(bundle.resolve()), info
    assert info["wsgi"] is True
    assert info["redis_lazy"] is True  # the web dyno loads the Redis SDK on its first request
