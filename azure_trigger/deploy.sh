#!/usr/bin/env bash
# Deploy the DT connector to Azure Functions (Linux, Consumption plan, Python 3.11).
#
# Creates (or reuses) the resource group, storage account, queue and tables and function
# app with the Azure CLI, sets the app settings, builds the bundle and publishes it with
# Azure Functions Core Tools. Safe to run again: every step is idempotent.
#
# Settings (environment variables):
#   DT_SIGNATURE_SECRET     the connector's signature secret (set on first deploy; kept if unset)
#   AZURE_LOCATION          region (default: westeurope)
#   AZURE_RESOURCE_GROUP    default: dtconnector
#   AZURE_STORAGE_ACCOUNT   default: dtconn<8 hex of your subscription id> (3-24 lowercase alnum)
#   AZURE_FUNCTIONAPP_NAME  default: dtconnector-<same 8 hex>
#   DT_QUEUE_NAME, DT_DEDUP_TABLE, DT_STATE_TABLE, DT_HANDLERS   (defaults as in the README)
#   PYTHON                  interpreter used to build the bundle (default: python3)
#   DT_ALERT_ACTION_GROUP   action group resource id the dead-letter alert notifies (optional)
set -euo pipefail

# MODE=direct: DT publishes into Service Bus / Event Hubs itself; see deploy-direct.sh.
if [[ ${MODE:-http} == direct ]]; then
  exec bash "$(dirname "${BASH_SOURCE[0]}")/deploy-direct.sh"
fi

die() { echo "deploy-azure: $*" >&2; exit 1; }

command -v az >/dev/null 2>&1 || die "the Azure CLI (az) is not installed: https://learn.microsoft.com/cli/azure/install-azure-cli"
command -v func >/dev/null 2>&1 || die "Azure Functions Core Tools (func) is not installed: https://learn.microsoft.com/azure/azure-functions/functions-run-local (npm i -g azure-functions-core-tools@4)"
SUBSCRIPTION=$(az account show --query id -o tsv 2>/dev/null) || die "not logged in to Azure: run 'az login' (and 'az account set --subscription ...')"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
SUFFIX=$(printf '%s' "$SUBSCRIPTION" | sha1sum | cut -c1-8)
LOCATION=${AZURE_LOCATION:-westeurope}
RG=${AZURE_RESOURCE_GROUP:-dtconnector}
STORAGE=${AZURE_STORAGE_ACCOUNT:-dtconn${SUFFIX}}
APP=${AZURE_FUNCTIONAPP_NAME:-dtconnector-${SUFFIX}}
QUEUE=${DT_QUEUE_NAME:-dt-events}
DEDUP_TABLE=${DT_DEDUP_TABLE:-dtevents}
STATE_TABLE=${DT_STATE_TABLE:-dtdevicestate}
HANDLERS=${DT_HANDLERS:-handlers}

[[ $STORAGE =~ ^[a-z0-9]{3,24}$ ]] || die "AZURE_STORAGE_ACCOUNT must be 3-24 lowercase letters and digits"

echo "==> resource group $RG ($LOCATION)"
az group create --name "$RG" --location "$LOCATION" --output none

echo "==> storage account $STORAGE"
az storage account create --name "$STORAGE" --resource-group "$RG" --location "$LOCATION" \
  --sku Standard_LRS --kind StorageV2 --min-tls-version TLS1_2 --allow-blob-public-access false \
  --output none
CONNECTION=$(az storage account show-connection-string --name "$STORAGE" --resource-group "$RG" \
  --query connectionString --output tsv)

echo "==> queues $QUEUE, $QUEUE-poison and tables $DEDUP_TABLE, $STATE_TABLE"
for q in "$QUEUE" "$QUEUE-poison"; do
  az storage queue create --name "$q" --connection-string "$CONNECTION" --output none
done
for t in "$DEDUP_TABLE" "$STATE_TABLE"; do
  az storage table create --name "$t" --connection-string "$CONNECTION" --output none
done

echo "==> function app $APP"
if ! az functionapp show --name "$APP" --resource-group "$RG" --output none 2>/dev/null; then
  az functionapp create --name "$APP" --resource-group "$RG" --storage-account "$STORAGE" \
    --consumption-plan-location "$LOCATION" --runtime python --runtime-version 3.11 \
    --functions-version 4 --os-type Linux --output none
fi

# App settings go through a private temp file so the secret never appears in a process list.
SETTINGS_DIR=$(mktemp -d)
trap 'rm -rf "$SETTINGS_DIR"' EXIT
chmod 700 "$SETTINGS_DIR"
QUEUE="$QUEUE" DEDUP_TABLE="$DEDUP_TABLE" STATE_TABLE="$STATE_TABLE" HANDLERS="$HANDLERS" "$PYTHON" - \
  "$SETTINGS_DIR/settings.json" <<'PY'
import json, os, sys
settings = {
    "DT_QUEUE_NAME": os.environ["QUEUE"],
    "DT_DEDUP_TABLE": os.environ["DEDUP_TABLE"],
    "DT_STATE_TABLE": os.environ["STATE_TABLE"],
    "DT_HANDLERS": os.environ["HANDLERS"],
}
if os.environ.get("DT_SIGNATURE_SECRET"):
    settings["DT_SIGNATURE_SECRET"] = os.environ["DT_SIGNATURE_SECRET"]
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(settings, f)
PY
az functionapp config appsettings set --name "$APP" --resource-group "$RG" \
  --settings "@$SETTINGS_DIR/settings.json" --output none
if [[ -z "${DT_SIGNATURE_SECRET:-}" ]]; then
  if ! az functionapp config appsettings list --name "$APP" --resource-group "$RG" \
      --query "[?name=='DT_SIGNATURE_SECRET'].name" --output tsv | grep -q DT_SIGNATURE_SECRET; then
    echo "WARNING: DT_SIGNATURE_SECRET is not set: every event is answered 503 until you set it, e.g." >&2
    echo "  DT_SIGNATURE_SECRET=... make deploy-azure   (or a Key Vault reference, see azure_trigger/README.md)" >&2
  fi
fi

echo "==> publishing"
BUILD="$SETTINGS_DIR/app"
"$PYTHON" "$ROOT/scripts/bundle.py" azure_trigger "$BUILD" >/dev/null
(cd "$BUILD" && func azure functionapp publish "$APP" --python --build remote)

# --- metrics and alerts --------------------------------------------------------------------
# The functions log one record per metric (azure_trigger/metrics.py) into the Application
# Insights resource `az functionapp create` made (named like the app). Storage has no
# per-queue length metric for '$QUEUE-poison', so the dead-letter alert fires on what
# moves messages there: the worker's dt_dead_lettered_total records. DT_ALERT_ACTION_GROUP:
# an optional action group (resource id) to notify.
type run >/dev/null 2>&1 || run() { "$@"; }
echo "==> dead-letter alert"
AI_ID=$(run az monitor app-insights component show --app "$APP" --resource-group "$RG" --query id --output tsv 2>/dev/null || true)
if [[ -n "$AI_ID" || "${DRY_RUN:-}" == 1 ]]; then
  ALERT_ARGS=()
  [[ -z "${DT_ALERT_ACTION_GROUP:-}" ]] || ALERT_ARGS=(--action-groups "$DT_ALERT_ACTION_GROUP")
  run az monitor scheduled-query create --name "dtconnector-dead-letters-$APP" --resource-group "$RG" \
    --scopes "${AI_ID:-<app-insights-id>}" --severity 1 --evaluation-frequency 5m --window-size 5m \
    --description "Events were moved to the poison queue '$QUEUE-poison': their handlers kept failing." \
    --condition "count 'DeadLetters' > 0" \
    --condition-query DeadLetters="traces | where message has 'dt_dead_lettered_total'" \
    "${ALERT_ARGS[@]}" --output none
else
  echo "WARNING: no Application Insights resource named $APP: metrics and the dead-letter alert need one" >&2
fi

HOST=$(az functionapp show --name "$APP" --resource-group "$RG" --query defaultHostName --output tsv)
echo
echo "Deployed. Point the DT Data Connector at:  https://$HOST/api/dt"
echo "Dead-lettered events: queue '$QUEUE-poison' in storage account '$STORAGE'."
bash "$(dirname "$0")/../scripts/wire-dt.sh" "https://$HOST/api/dt"
