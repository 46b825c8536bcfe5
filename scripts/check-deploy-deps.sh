#!/usr/bin/env bash
# Install, once, the cloud CLIs that `make check-deploy` reads the help text of, apart from
# the project's own .venv: SAM CLI, AWS CLI and Azure CLI from PyPI into .venv-deploy/,
# the Heroku CLI from npm into .venv-deploy/node/ (local, not global). gcloud is used from
# PATH; ibmcloud is on no registry (scripts/cli-reference/ibmcloud-ce.md stands in for it).
# The stamp file keeps azure-cli (large) from being reinstalled; `rm -rf .venv-deploy` redoes it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-deploy
STAMP=$VENV/.deps-v1
[ -f "$STAMP" ] && exit 0
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet 'aws-sam-cli>=1.130' 'awscli>=1.36' 'azure-cli>=2.70'
mkdir -p "$VENV/node"
npm install --silent --no-audit --no-fund --prefix "$VENV/node" 'heroku@>=10'
touch "$STAMP"
