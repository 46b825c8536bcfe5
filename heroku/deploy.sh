#!/usr/bin/env bash
# Deploy dtconnector to Heroku: web dyno + worker dyno + Heroku Key-Value Store (Redis).
#
#   DT_SIGNATURE_SECRET=... make deploy-heroku [HEROKU_APP=my-dt-receiver]
#
# Optional: HEROKU_APP (default: a name Heroku picks), HEROKU_REGION (us|eu),
# HEROKU_TEAM, HEROKU_REDIS_PLAN (default mini), HEROKU_DYNO_SIZE (default basic),
# DT_HANDLERS (default handlers: the example handlers.py in the bundle).
# DRY_RUN=1 prints the heroku and git push commands instead of running them (no login needed).
# The Python version is heroku/bundle/.python-version, checked against scripts/runtimes.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

DEPLOY_NAME=deploy-heroku
# shellcheck source=../scripts/deploy-lib.sh
source scripts/deploy-lib.sh
fail() { die "$@"; }

require_cli heroku "the Heroku CLI is not installed: https://devcenter.heroku.com/articles/heroku-cli"
command -v git >/dev/null 2>&1 || fail "git is not installed (Heroku deploys by git push)"
check_login "not logged in to Heroku: run 'heroku login' (or set HEROKU_API_KEY)" heroku auth:whoami
check_runtime heroku "$(tr -d '[:space:]' < heroku/bundle/.python-version)"

project_python

APP="${HEROKU_APP:-}"
if [ -n "$APP" ] && exists heroku apps:info --app "$APP"; then
  echo "deploy-heroku: using existing app $APP"
else
  args=(--no-remote --json)
  [ -n "${HEROKU_REGION:-}" ] && args+=(--region "$HEROKU_REGION")
  [ -n "${HEROKU_TEAM:-}" ] && args+=(--team "$HEROKU_TEAM")
  created="$(query '{"name": "dtconnector-dry-run"}' heroku create ${APP:+"$APP"} "${args[@]}")"
  APP="$(printf '%s' "$created" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["name"])')"
  echo "deploy-heroku: created app $APP"
fi

# The signature secret: required, unless the app already has one.
if [ -n "${DT_SIGNATURE_SECRET:-}" ]; then
  SECRET_ARGS=("DT_SIGNATURE_SECRET=$DT_SIGNATURE_SECRET")
elif [ -n "$(query "" heroku config:get DT_SIGNATURE_SECRET --app "$APP")" ]; then
  SECRET_ARGS=()
else
  fail "set DT_SIGNATURE_SECRET to your Data Connector's signature secret (the app has none yet)"
fi

if query "[]" heroku addons --app "$APP" --json | "$PYTHON" -c '
import json, sys
sys.exit(0 if any(a["addon_service"]["name"] == "heroku-redis" for a in json.load(sys.stdin)) else 1)'; then
  echo "deploy-heroku: Key-Value Store already attached"
else
  run heroku addons:create "heroku-redis:${HEROKU_REDIS_PLAN:-mini}" --as REDIS --app "$APP" --wait
fi

run heroku config:set --app "$APP" ${SECRET_ARGS[@]+"${SECRET_ARGS[@]}"} \
  DT_HANDLERS="${DT_HANDLERS:-handlers}" DT_LOG_LEVEL="${DT_LOG_LEVEL:-INFO}" >/dev/null

# Push the bundle (core/, heroku/, handlers.py, Procfile, requirements.txt, ...) from a
# throw-away git repository, so this checkout's history and other platforms stay out of it.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PYTHON" scripts/bundle.py heroku "$work/app" >/dev/null
(
  cd "$work/app"
  git init --quiet --initial-branch=main
  git add --all
  git -c user.name=dtconnector -c user.email=deploy@dtconnector.invalid commit --quiet -m "dtconnector bundle"
  run heroku git:remote --app "$APP" --remote heroku >/dev/null
  run git push --force heroku main
)

run heroku ps:scale web=1:"${HEROKU_DYNO_SIZE:-basic}" worker=1:"${HEROKU_DYNO_SIZE:-basic}" --app "$APP"

url="$(query "web_url=https://$APP-000000000000.herokuapp.com/" heroku apps:info --app "$APP" --shell | sed -n 's/^web_url=//p')"
cat <<MSG
deploy-heroku: done.
  Data Connector URL:  ${url}   (any path; set the same signature secret on the connector)
  health:              curl ${url}healthz
  logs:                heroku logs --tail --app $APP
  dead letters:        heroku run --app $APP python -m heroku.worker --dead-letters
MSG
bash "$(dirname "$0")/../scripts/wire-dt.sh" "$url"
