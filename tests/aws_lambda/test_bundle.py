"""The deployable bundle: built by scripts/bundle.py, importable on its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
sys.path.insert(0, ".")
import aws_lambda.handler as entry
import core, handlers
lazy = "boto3" not in sys.modules and "botocore" not in sys.modules
reply = entry.ingest({"version": "2.0", "rawPath": "/", "headers": {},
                      "requestContext": {"http": {"method": "POST"}}, "body": "{}"}, None)
print(json.dumps({"entry": entry.__file__, "core": core.__file__, "handlers": handlers.__file__,
                  "lazy": lazy, "status": reply["statusCode"], "body": reply["body"]}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aws-bundle") / "dist"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bundle.py"), "aws_lambda", str(out)], check=True, timeout=60)
    return out


def test_bundle_has_what_sam_deploys(bundle):
    for name in ("template.yaml", "requirements.txt", "samconfig.toml", "handlers.py", "core/__init__.py",
                 "aws_lambda/handler.py", "aws_lambda/dynamodb.py", "aws_lambda/sqs.py"):
        assert (bundle / name).is_file(), name
    template = bundle / "template.yaml"
    assert not template.is_symlink()
    assert template.read_text() == (ROOT / "aws_lambda" / "template.yaml").read_text()
    assert "PyJWT" in (bundle / "requirements.txt").read_text()
    assert not (bundle / "aws_lambda" / "deploy.sh").exists()
    assert not (bundle / "aws_lambda" / "deploy-direct.sh").exists()
    assert not (bundle / "aws_lambda" / "bundle").exists()


def test_entry_point_imports_from_the_bundle_in_a_clean_interpreter(bundle):
    result = subprocess.run(
        [sys.executable, "-I", "-c", PROBE], cwd=bundle, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("entry", "core", "handlers"):
        assert Path(info[key]).resolve().is_relative_to(bundle.resolve()), (key, info[key])
    assert info["lazy"], "importing the entry module must not import the AWS SDK (cold start)"
    # No DT_* configuration in that interpreter: the receiver answers 503 and says why.
    assert info["status"] == 503
    assert "DT_DEDUP_TABLE" in info["body"]
