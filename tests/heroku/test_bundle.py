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
    assert {"pyjwt", "cryptography", "redis", "hiredis", "uvicorn", "httptools", "uvloop"} <= names
    # What the Procfile's two processes import, nothing else: no Flask, no gunicorn.
    assert not names & {"flask", "gunicorn", "werkzeug"}


def test_uvicorn_is_bounded_in_pyproject():
    """core/serving.py extends uvicorn's protocol class: pyproject declares an upper bound
    (the range tests/core/test_serving.py checks); the bundle's lock pins inside it
    (tests/deploy/test_locks.py)."""
    from tests.pyproject import pyproject

    declared = pyproject()["project"]["dependencies"]
    [spec] = [d for d in declared if d.startswith("uvicorn")]
    assert "<" in spec


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
                 "core/__init__.py", "heroku/web.py", "heroku/asgi.py", "heroku/ingest.py", "heroku/worker.py"):
        assert (bundle / name).is_file(), name
    assert not (bundle / "heroku" / "bundle").exists() and not (bundle / "heroku" / "deploy.sh").exists()
    assert not (bundle / "heroku" / "app.py").exists()  # the Flask app production no longer runs


def test_bundle_imports_from_a_clean_interpreter(bundle):
    code = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "import heroku.web, heroku.asgi, core, handlers;"
        "lazy = 'redis' not in sys.modules;"
        "import heroku.worker;"
        "print(json.dumps({'web': heroku.web.__file__, 'worker': heroku.worker.__file__, 'core': core.__file__,"
        " 'asgi': callable(heroku.asgi.app), 'redis_lazy': lazy,"
        " 'no_flask': not any(m in sys.modules for m in ('flask', 'gunicorn', 'werkzeug'))}))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code, str(bundle)], cwd=bundle, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("web", "worker", "core"):
        assert Path(info[key]).resolve().is_relative_to(bundle.resolve()), info
    assert info["asgi"] is True
    assert info["redis_lazy"] is True  # the web dyno loads the Redis SDK on its first request
    assert info["no_flask"] is True
