#!/usr/bin/env bash
# The whole DT flow against the local DT API stand-in (ports 8901/8902): wire (what make deploy-*
# runs), apply/diff, list, metrics, status, an outage, backfill twice, a wrong secret, errors,
# a redeploy keeping what the user set, stream.
# Run: bash examples/dt-flow.sh  (needs .venv with the dt extra: .venv/bin/python -m pip install -e '.[dt]')
set -u
R="$(cd "$(dirname "$0")/.." && pwd)"; DC="$R/.venv/bin/dtconnector"; PY=$R/.venv/bin/python
W="$(mktemp -d)"; cd "$W"
$PY -m emulator.dtapi --port 8901 --devices 3 --days 3 --live 500ms > standin.env 2>&1 &
SP=$!; sleep 2
grep -v SECRET standin.env; . ./standin.env
export DT_SIGNATURE_SECRET=demo-signature-secret-0123456789abcdef
DT_LOG_LEVEL=WARNING $DC serve --port 8902 --db rx.db 2>serve.log >/dev/null &
RP=$!; sleep 2
run() { echo "\$ dtconnector $*"; $DC "$@"; echo "(exit $?)"; }
echo "\$ scripts/wire-dt.sh http://127.0.0.1:8902/   # what make deploy-* runs last"
DT_WIRE_WAIT_S=20 bash $R/scripts/wire-dt.sh http://127.0.0.1:8902/; echo "(exit $?)"
run connector apply --name dtconnector --url http://127.0.0.1:8902/ --events temperature --labels room --dry-run
run connector apply --name dtconnector --url http://127.0.0.1:8902/ --events temperature --labels room
run connector apply --name dtconnector --url http://127.0.0.1:8902/ --events temperature --labels room
run connector list
run connector metrics --name dtconnector
run connector status --name dtconnector
echo "# outage: the receiver goes down"
kill $RP; wait $RP 2>/dev/null
run connector sync --name dtconnector; sleep 1
run connector status --name dtconnector
echo "# receiver back; recover the gap"
DT_LOG_LEVEL=WARNING $DC serve --port 8902 --db rx.db 2>>serve.log >/dev/null &
RP=$!; sleep 2
run backfill --since 3d --url http://127.0.0.1:8902/ --connector dtconnector --dry-run
DT_SIGNATURE_SECRET=a-wrong-secret-0123456789abcdef run backfill --since 3d --url http://127.0.0.1:8902/
run backfill --since 3d --url http://127.0.0.1:8902/ --connector dtconnector
run backfill --since 3d --url http://127.0.0.1:8902/ --connector dtconnector
run connector status --name dtconnector --json
run state --db rx.db --device dev01
DT_SERVICE_ACCOUNT_SECRET=wrong run connector list
run connector status --name ghost
run connector list --project ghost
run connector apply --name dtconnector --url http://rx.example.com/
echo "# the user adds a header and disables the connector in DT; a redeploy keeps both"
export PROXY_KEY=proxy-key-0123
run connector apply --name dtconnector --header-env X-Api-Key:PROXY_KEY --disabled
DT_WIRE_WAIT_S=5 bash $R/scripts/wire-dt.sh http://127.0.0.1:8902/; echo "(exit $?)"
run connector enable --name dtconnector
kill $RP; wait $RP 2>/dev/null
run stream --db stream.db --ping-interval 1s --duration 3s
kill $SP
