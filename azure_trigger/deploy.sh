#!/usr/bin/env bash
# Deploy the DT connector to Azure Functions (Linux, Python 3.12).
#
# Plans (DT_AZURE_PLAN):
#   flex         [default] Flex Consumption. The app reaches its storage account with a
#                user-assigned managed identity, no account key: the identity gets Storage
#                Blob Data Owner, Queue Data Contributor and Table Data Contributor on the
#                account, and the app the settings AzureWebJobsStorage__accountName /
#                __credential=managedidentity / __clientId (read by the host, the queue
#                trigger and the receiver alike). Its deployment package lives in a blob
#                container of the same account, reached with the same identity.
#   consumption  Linux Consumption (retires 2028-09-30; no new Python versions after 3.12):
#                the app gets the account's connection string as AzureWebJobsStorage.
#
# Creates (or reuses) the resource group, storage account, queue and tables and function
# app with the Azure CLI, sets the app settings, builds the bundle and publishes it with
# Azure Functions Core Tools. Safe to run again: every step is idempotent.
#
# Settings (environment variables):
#   DT_SIGNATURE_SECRET     the connector's signature secret (set on first deploy; kept if unset)
#   DT_AZURE_PLAN           flex (default) or consumption
#   DT_AZURE_PYTHON         Python version [3.12] (checked against scripts/runtimes.tsv)
#   AZURE_LOCATION          region (default: westeurope; Flex Consumption is not in every region)
#   AZURE_RESOURCE_GROUP    default: dtconnector
#   AZURE_STORAGE_ACCOUNT   default: dtconn<8 hex of your subscription id> (3-24 lowercase alnum)
#   AZURE_FUNCTIONAPP_NAME  default: dtconnector-<same 8 hex>
#   DT_QUEUE_NAME, DT_DEDUP_TABLE, DT_STATE_TABLE, DT_HANDLERS   (defaults as in the README)
#   PYTHON                  interpreter used to build the bundle (default: .venv/bin/python, else python3)
#   DT_ALERT_ACTION_GROUP   action group resource id the dead-letter alert notifies (optional)
#   DRY_RUN=1               print the az/func commands instead of running them (no login needed)
set -euo pipefail

# MODE=direct: DT publishes into Service Bus / Event Hubs itself; see deploy-direct.sh.
if [[ ${MODE:-http} == direct ]]; then
  exec bash "$(dirname "${BASH_SOURCE[0]}")/deploy-direct.sh"
fi

DEPLOY_NAME=deploy-azure
ROOT=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
# shellcheck source=../scripts/deploy-lib.sh
source "$ROOT/scripts/deploy-lib.sh"
# shellcheck source=../scripts/deploy-azure-lib.sh
source "$ROOT/scripts/deploy-azure-lib.sh"

azure_plan_and_login  # scripts/deploy-azure-lib.sh

project_python
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
echo "==> plan $PLAN, Python $PY_VERSION"

echo "==> resource group $RG ($LOCATION)"
run az group create --name "$RG" --location "$LOCATION" --output none

echo "==> storage account $STORAGE"
run az storage account create --name "$STORAGE" --resource-group "$RG" --location "$LOCATION" \
  --sku Standard_LRS --kind StorageV2 --min-tls-version TLS1_2 --allow-blob-public-access false \
  --output none
# The key is used here, by this script, to create the queues and tables (and, on the
# Consumption plan, handed to the app); it is masked in dry-run output.
CONNECTION=$(query "DefaultEndpointsProtocol=https;AccountName=$STORAGE;AccountKey=dry-run-key" \
  az storage account show-connection-string --name "$STORAGE" --resource-group "$RG" \
  --query connectionString --output tsv)
mask_value "$CONNECTION"

echo "==> queues $QUEUE, $QUEUE-poison and tables $DEDUP_TABLE, $STATE_TABLE"
for q in "$QUEUE" "$QUEUE-poison"; do
  run az storage queue create --name "$q" --connection-string "$CONNECTION" --output none
done
for t in "$DEDUP_TABLE" "$STATE_TABLE"; do
  run az storage table create --name "$t" --connection-string "$CONNECTION" --output none
done

echo "==> function app $APP"
azure_function_app  # scripts/deploy-azure-lib.sh

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
run az functionapp config appsettings set --name "$APP" --resource-group "$RG" \
  --settings "@$SETTINGS_DIR/settings.json" --output none
if [[ -z "${DT_SIGNATURE_SECRET:-}" ]]; then
  if ! query "DT_SIGNATURE_SECRET" az functionapp config appsettings list --name "$APP" --resource-group "$RG" \
      --query "[?name=='DT_SIGNATURE_SECRET'].name" --output tsv | grep -q DT_SIGNATURE_SECRET; then
    echo "WARNING: DT_SIGNATURE_SECRET is not set: every event is answered 503 until you set it, e.g." >&2
    echo "  DT_SIGNATURE_SECRET=... make deploy-azure   (or a Key Vault reference, see azure_trigger/README.md)" >&2
  fi
fi

echo "==> publishing"
BUILD="$SETTINGS_DIR/app"
"$PYTHON" "$ROOT/scripts/bundle.py" azure_trigger "$BUILD" >/dev/null
(cd "$BUILD" && run func azure functionapp publish "$APP" --python --build remote)

# --- metrics and alerts --------------------------------------------------------------------
# The functions log one record per metric (azure_trigger/metrics.py) into the Application
# Insights resource `az functionapp create` made (named like the app). Storage has no
# per-queue length metric for '$QUEUE-poison', so the dead-letter alert fires on what
# moves messages there: the worker's dt_dead_lettered_total records. DT_ALERT_ACTION_GROUP:
# an optional action group (resource id) to notify.
echo "==> dead-letter alert"
# Core `az resource` commands (the app-insights and scheduled-query groups are extensions).
AI_ID=$(query "<app-insights-id>" az resource show --resource-group "$RG" --name "$APP" \
  --resource-type Microsoft.Insights/components --query id --output tsv 2>/dev/null || true)
if [[ -n "$AI_ID" ]]; then
  ACTION_GROUPS='[]'
  [[ -z "${DT_ALERT_ACTION_GROUP:-}" ]] || ACTION_GROUPS="[\"$DT_ALERT_ACTION_GROUP\"]"
  ALERT_RULE=$(mktemp)
  cat >"$ALERT_RULE" <<RULE
{
  "location": "$LOCATION",
  "properties": {
    "displayName": "dtconnector-dead-letters-$APP",
    "description": "Events were moved to the poison queue '$QUEUE-poison': their handlers kept failing.",
    "severity": 1,
    "enabled": true,
    "evaluationFrequency": "PT5M",
    "windowSize": "PT5M",
    "scopes": ["$AI_ID"],
    "criteria": {"allOf": [{
      "query": "traces | where message has 'dt_dead_lettered_total'",
      "timeAggregation": "Count",
      "operator": "GreaterThan",
      "threshold": 0,
      "failingPeriods": {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1}
    }]},
    "actions": {"actionGroups": $ACTION_GROUPS}
  }
}
RULE
  run az resource create --resource-group "$RG" --name "dtconnector-dead-letters-$APP" \
    --resource-type Microsoft.Insights/scheduledQueryRules --api-version 2023-03-15-preview \
    --is-full-object --properties "@$ALERT_RULE" --output none
  rm -f "$ALERT_RULE"
else
  echo "WARNING: no Application Insights resource named $APP: metrics and the dead-letter alert need one" >&2
fi

HOST=$(query "$APP.azurewebsites.net" az functionapp show --name "$APP" --resource-group "$RG" \
  --query defaultHostName --output tsv)
echo
echo "Deployed. Point the DT Data Connector at:  https://$HOST/api/dt"
echo "Dead-lettered events: queue '$QUEUE-poison' in storage account '$STORAGE'."
bash "$(dirname "$0")/../scripts/wire-dt.sh" "https://$HOST/api/dt"
