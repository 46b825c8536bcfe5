#!/usr/bin/env bash
# Deploy to IBM Cloud Code Engine: the ingest FUNCTION and the worker JOB, both from one
# bundle (scripts/bundle.py ibm_action). Run from the repository root: `make deploy-ibm`.
#
# Needs: ibmcloud CLI + code-engine plugin, `ibmcloud login`, a selected Code Engine project
# (`ibmcloud ce project select --name <project>`), and in the environment:
#   DT_SIGNATURE_SECRET                  the DT Data Connector's signature secret
#   CLOUDANT_URL                         https://<instance>.cloudantnosqldb.appdomain.cloud
#   CLOUDANT_APIKEY                      (IAM)  or  CLOUDANT_USERNAME + CLOUDANT_PASSWORD
# Optional:
#   DT_IBM_NAME=dtconnector              prefix of the function, job and secret names
#   DT_IBM_RUNTIME                       Code Engine function runtime, e.g. python-3.13
#                                        [the newest Python in `ibmcloud ce fn runtimes`]
#   DT_IBM_WORKER=daemon                 daemon: job that follows the feed without end
#                                        cron:   task job `--once` on a cron subscription
#   DT_IBM_SCHEDULE='*/5 * * * *'        the cron schedule (DT_IBM_WORKER=cron)
#   DT_HANDLERS=handlers, DT_CLOUDANT_DB, DT_CLOUDANT_STATE_DB, DT_MAX_ATTEMPTS, DT_RETRY_DELAY_S
#   DRY_RUN=1                            print the ibmcloud commands instead of running them
#                                        (scripts/deploy-lib.sh; no login needed)
set -euo pipefail

DEPLOY_NAME=deploy-ibm
DEPLOY_EXIT=2
# shellcheck source=../scripts/deploy-lib.sh
source "$(dirname "$0")/../scripts/deploy-lib.sh"

cd "$(dirname "$0")/.."
NAME=${DT_IBM_NAME:-dtconnector}
WORKER=${DT_IBM_WORKER:-daemon}
SCHEDULE=${DT_IBM_SCHEDULE:-*/5 * * * *}
FN="$NAME-ingest"
JOB="$NAME-worker"
SECRET="$NAME-secrets"
project_python

require_cli ibmcloud "the IBM Cloud CLI is not installed (https://cloud.ibm.com/docs/cli?topic=cli-getting-started)"
check_login "not ready: install the Code Engine plugin (ibmcloud plugin install code-engine), log in
  (ibmcloud login --apikey <key> -r <region> -g <resource group>) and select a project
  (ibmcloud ce project select --name <project>)" ibmcloud ce project current
[ -n "${DT_SIGNATURE_SECRET:-}" ] || die "DT_SIGNATURE_SECRET is not set (the connector's signature secret)"
[ -n "${CLOUDANT_URL:-}" ] || die "CLOUDANT_URL is not set (the Cloudant instance's external endpoint)"
if [ -z "${CLOUDANT_APIKEY:-}" ] && { [ -z "${CLOUDANT_USERNAME:-}" ] || [ -z "${CLOUDANT_PASSWORD:-}" ]; }; then
  die "set CLOUDANT_APIKEY (IAM) or CLOUDANT_USERNAME and CLOUDANT_PASSWORD"
fi
case "$WORKER" in daemon|cron) ;; *) die "DT_IBM_WORKER must be daemon or cron" ;; esac

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
BUNDLE="$WORK/bundle"
"$PYTHON" scripts/bundle.py ibm_action "$BUNDLE" >/dev/null

# Secrets go into a Code Engine secret from a private file, never on a command line.
ENV_FILE="$WORK/secrets.env"
( umask 077
  {
    echo "DT_SIGNATURE_SECRET=$DT_SIGNATURE_SECRET"
    [ -n "${DT_SIGNATURE_SECRET_PREVIOUS:-}" ] && echo "DT_SIGNATURE_SECRET_PREVIOUS=$DT_SIGNATURE_SECRET_PREVIOUS"
    echo "CLOUDANT_URL=$CLOUDANT_URL"
    [ -n "${CLOUDANT_APIKEY:-}" ] && echo "CLOUDANT_APIKEY=$CLOUDANT_APIKEY"
    [ -n "${CLOUDANT_USERNAME:-}" ] && echo "CLOUDANT_USERNAME=$CLOUDANT_USERNAME"
    [ -n "${CLOUDANT_PASSWORD:-}" ] && echo "CLOUDANT_PASSWORD=$CLOUDANT_PASSWORD"
    true
  } > "$ENV_FILE" )
if exists ibmcloud ce secret get --name "$SECRET"; then
  run ibmcloud ce secret update --name "$SECRET" --from-env-file "$ENV_FILE"
else
  run ibmcloud ce secret create --name "$SECRET" --from-env-file "$ENV_FILE"
fi

# The function runtime: the newest Python that Code Engine offers today, unless DT_IBM_RUNTIME
# names one. `fn runtimes` lists the supported runtimes, `--all` adds the deprecated ones.
# Dry-run placeholders: python-3.13 supported; python-3.11 and python-3.13 in --all.
python_runtimes() { grep -oE 'python-[0-9]+\.[0-9]+' | sort -u -V; }
SUPPORTED=$(query "python-3.13" ibmcloud ce fn runtimes | python_runtimes)
if [ -n "${DT_IBM_RUNTIME:-}" ]; then
  RUNTIME=$DT_IBM_RUNTIME
  if ! grep -qxF "$RUNTIME" <<<"$SUPPORTED"; then
    ALL=$(query "python-3.11 python-3.13" ibmcloud ce fn runtimes --all | python_runtimes)
    SUPPORTED_LIST=$(echo ${SUPPORTED:-none})
    if grep -qxF "$RUNTIME" <<<"$ALL"; then
      die "runtime '$RUNTIME' is deprecated on Code Engine (supported: $SUPPORTED_LIST); set DT_IBM_RUNTIME to a supported one"
    fi
    die "runtime '$RUNTIME' is not offered by Code Engine (gone, or misspelt; supported: $SUPPORTED_LIST)"
  fi
else
  RUNTIME=$(tail -n 1 <<<"$SUPPORTED")
  [ -n "$RUNTIME" ] || die "Code Engine lists no supported Python runtime (ibmcloud ce fn runtimes): set DT_IBM_RUNTIME"
fi
check_runtime ibm "$RUNTIME"
echo "deploy-ibm: function runtime $RUNTIME"

# Plain settings (not secret), shared by the function and the job.
ENV_ARGS=(--env "DT_HANDLERS=${DT_HANDLERS:-handlers}")
for var in DT_CLOUDANT_DB DT_CLOUDANT_STATE_DB DT_MAX_ATTEMPTS DT_RETRY_DELAY_S DT_LOG_LEVEL; do
  if [ -n "${!var:-}" ]; then ENV_ARGS+=(--env "$var=${!var}"); fi
done

# Ingest: a Code Engine function built from __main__.py + requirements.txt. An update sets
# the runtime too, so a function created on a runtime that has since ended moves off it.
if exists ibmcloud ce fn get --name "$FN"; then
  run ibmcloud ce fn update --name "$FN" --runtime "$RUNTIME" --build-source "$BUNDLE" \
    --env-from-secret "$SECRET" "${ENV_ARGS[@]}"
else
  run ibmcloud ce fn create --name "$FN" --runtime "$RUNTIME" --build-source "$BUNDLE" \
    --env-from-secret "$SECRET" "${ENV_ARGS[@]}"
fi

# Worker: a job whose image is built from the bundle's Dockerfile. One instance only.
if [ "$WORKER" = daemon ]; then
  MODE_ARGS=(--mode daemon)
else
  MODE_ARGS=(--mode task --argument=--once --retrylimit 2)
fi
if exists ibmcloud ce job get --name "$JOB"; then
  run ibmcloud ce job update --name "$JOB" --build-source "$BUNDLE" --env-from-secret "$SECRET" \
    --instances 1 "${MODE_ARGS[@]}" "${ENV_ARGS[@]}"
else
  run ibmcloud ce job create --name "$JOB" --build-source "$BUNDLE" --env-from-secret "$SECRET" \
    --instances 1 "${MODE_ARGS[@]}" "${ENV_ARGS[@]}"
fi

if [ "$WORKER" = daemon ]; then
  # A daemon job runs while its job run exists: replace the run so it uses the new image.
  run ibmcloud ce jobrun delete --name "$JOB-daemon" --force >/dev/null 2>&1 || true
  run ibmcloud ce jobrun submit --name "$JOB-daemon" --job "$JOB"
else
  if exists ibmcloud ce sub cron get --name "$JOB-cron"; then
    run ibmcloud ce sub cron update --name "$JOB-cron" --schedule "$SCHEDULE"
  else
    run ibmcloud ce sub cron create --name "$JOB-cron" --destination-type job --destination "$JOB" \
      --schedule "$SCHEDULE"
  fi
fi

# The function's URL: `--output` takes json, yaml or jsonpath=... (IBM's CLI reference).
URL=$(query "https://$FN.<project-subdomain>.<region>.codeengine.appdomain.cloud" \
  ibmcloud ce fn get --name "$FN" --output 'jsonpath={.endpoint}' 2>/dev/null) || true
[ -n "$URL" ] || URL="(see: ibmcloud ce fn get --name $FN)"
cat <<EOF

Deployed. Point the DT Data Connector at:
  $URL
(with the same signature secret). Dead-lettered events:
  CLOUDANT_URL=... CLOUDANT_APIKEY=... python -m ibm_action.worker --dead-letters
EOF
bash "$(dirname "$0")/../scripts/wire-dt.sh" "$URL"
