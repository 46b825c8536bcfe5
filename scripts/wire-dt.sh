#!/usr/bin/env bash
# Point DT at a fresh deployment: the last line of every */deploy.sh calls this with the URL.
# With DT_PROJECT_ID and DT_SERVICE_ACCOUNT_KEY_ID/_SECRET/_EMAIL set it runs
# `dtconnector connector wire`: it sets the connector's URL and secret (and the event filter
# only while DT has none), keeps the user's headers, labels and a disabled status, then syncs
# and waits for DT's deliveries (one verdict line); otherwise it prints the manual steps. The
# signature secret is read from the environment (DT_SIGNATURE_SECRET), never passed as an
# argument.
set -euo pipefail
URL="${1:-}"
if [[ ! "$URL" =~ ^https?:// ]]; then
    echo "wire-dt: no deployed URL known; point the DT Data Connector at it by hand" >&2
    exit 0
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3)"
if [ -n "${DT_PROJECT_ID:-}" ] && [ -n "${DT_SERVICE_ACCOUNT_KEY_ID:-}${DT_CREDENTIALS_FILE:-}" ] \
    && ! "$PY" -c 'import requests' >/dev/null 2>&1; then
    echo "wire-dt: installing the dt extra (requests, for DT's REST API)" >&2
    "$PY" -m pip install --quiet -e "$ROOT[dt]" >&2
fi
cd "$ROOT"
exec "$PY" -m dtconnector connector wire --url "$URL"
