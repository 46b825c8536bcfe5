#!/usr/bin/env bash
# Deploy dtconnector to Azure in direct mode (`make deploy-azure MODE=direct`): DT's
# AZURE_SERVICE_BUS or AZURE_EVENT_HUB Data Connector publishes straight into a Service Bus
# topic or an Event Hub, as an app registration with a federated credential for DT's
# tokens; no HTTP function, no signature secret.
#
#   DT_AZURE_DIRECT=servicebus  namespace + topic + subscription (max delivery count, then
#                               the subscription's dead-letter queue); worker: topic trigger
#   DT_AZURE_DIRECT=eventhub    namespace + event hub; worker: batch trigger, per-event
#                               retries, poison Storage queue DT_POISON_QUEUE
#   DT's app registration: a federated credential (issuer DT_OIDC_ISSUER, subject
#   DT_ORGANIZATION_ID) and the Data Sender role on that one topic / event hub, nothing else.
#
# Settings (environment; defaults in brackets):
#   DT_ORGANIZATION_ID      your DT organization id: the federated credential's subject (required)
#   DT_AZURE_DIRECT         [servicebus] or eventhub
#   DT_OIDC_ISSUER          [https://identity.disruptive-technologies.com]  DT's token issuer
#   DT_AUDIENCE             [api://AzureADTokenExchange]  Microsoft's default for federation
#   AZURE_LOCATION [westeurope]  AZURE_RESOURCE_GROUP [dtconnector-direct]
#   AZURE_STORAGE_ACCOUNT [dtdir<8 hex>]  AZURE_FUNCTIONAPP_NAME [dtconnector-direct-<8 hex>]
#   AZURE_NAMESPACE [dtconnector-<8 hex>]  DT_TOPIC / DT_EVENTHUB_NAME [dt-events]
#   DT_DEDUP_TABLE [dtevents]  DT_STATE_TABLE [dtdevicestate]  DT_POISON_QUEUE [dt-direct-poison]
#   DT_HANDLERS [handlers]  DT_MAX_ATTEMPTS [5]  PYTHON [.venv/bin/python, else python3]
#   DT_AZURE_PLAN [flex] or consumption, DT_AZURE_PYTHON [3.12]: as in deploy.sh (Flex
#   Consumption with identity-based storage; scripts/deploy-azure-lib.sh). The worker's
#   identity (on Flex the app's user-assigned one, on Consumption a system-assigned one)
#   gets the Data Receiver role on the topic / event hub.
#   DRY_RUN=1               print the az/func commands instead of running them (no login needed)
# With DT_PROJECT_ID and DT_SERVICE_ACCOUNT_KEY_ID/_SECRET/_EMAIL set, the connector is
# created or updated in DT (`dtconnector connector apply`); otherwise the steps are printed.
set -euo pipefail

DEPLOY_NAME="deploy-azure (direct)"
ROOT=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
# shellcheck source=../scripts/deploy-lib.sh
source "$ROOT/scripts/deploy-lib.sh"
# shellcheck source=../scripts/deploy-azure-lib.sh
source "$ROOT/scripts/deploy-azure-lib.sh"

KIND=${DT_AZURE_DIRECT:-servicebus}
[[ $KIND == servicebus || $KIND == eventhub ]] || die "DT_AZURE_DIRECT must be servicebus or eventhub"
ORG=${DT_ORGANIZATION_ID:-}
[[ $ORG =~ ^[A-Za-z0-9_-]+$ ]] || die "set DT_ORGANIZATION_ID to your DT organization id: the federated credential trusts only its tokens"
azure_plan_and_login  # scripts/deploy-azure-lib.sh
TENANT=$(query "33333333-3333-3333-3333-333333333333" az account show --query tenantId --output tsv)

project_python
SUFFIX=$(printf '%s' "$SUBSCRIPTION" | sha1sum | cut -c1-8)
LOCATION=${AZURE_LOCATION:-westeurope}
RG=${AZURE_RESOURCE_GROUP:-dtconnector-direct}
STORAGE=${AZURE_STORAGE_ACCOUNT:-dtdir${SUFFIX}}
APP=${AZURE_FUNCTIONAPP_NAME:-dtconnector-direct-${SUFFIX}}
NAMESPACE=${AZURE_NAMESPACE:-dtconnector-${SUFFIX}}
ENTITY=${DT_TOPIC:-${DT_EVENTHUB_NAME:-dt-events}}
SUBSCRIPTION_NAME=dtconnector-worker
DEDUP_TABLE=${DT_DEDUP_TABLE:-dtevents}
STATE_TABLE=${DT_STATE_TABLE:-dtdevicestate}
POISON=${DT_POISON_QUEUE:-dt-direct-poison}
HANDLERS=${DT_HANDLERS:-handlers}
MAX_ATTEMPTS=${DT_MAX_ATTEMPTS:-5}
ISSUER=${DT_OIDC_ISSUER:-https://identity.disruptive-technologies.com}
AUDIENCE=${DT_AUDIENCE:-api://AzureADTokenExchange}
FQDN="$NAMESPACE.servicebus.windows.net"
[[ $STORAGE =~ ^[a-z0-9]{3,24}$ ]] || die "AZURE_STORAGE_ACCOUNT must be 3-24 lowercase letters and digits"

echo "==> resource group $RG, storage $STORAGE (ledger, state, poison queue)"
run az group create --name "$RG" --location "$LOCATION" --output none
run az storage account create --name "$STORAGE" --resource-group "$RG" --location "$LOCATION" \
  --sku Standard_LRS --kind StorageV2 --min-tls-version TLS1_2 --allow-blob-public-access false --output none
# The key is used here, by this script, to create the tables and the queue; masked in dry-run output.
CONNECTION=$(query "DefaultEndpointsProtocol=https;AccountName=$STORAGE;AccountKey=dry-run-key" \
  az storage account show-connection-string --name "$STORAGE" --resource-group "$RG" \
  --query connectionString --output tsv)
mask_value "$CONNECTION"
for t in "$DEDUP_TABLE" "$STATE_TABLE"; do
  run az storage table create --name "$t" --connection-string "$CONNECTION" --output none
done
run az storage queue create --name "$POISON" --connection-string "$CONNECTION" --output none

if [[ $KIND == servicebus ]]; then
  echo "==> Service Bus $NAMESPACE, topic $ENTITY, subscription $SUBSCRIPTION_NAME"
  run az servicebus namespace create --name "$NAMESPACE" --resource-group "$RG" --location "$LOCATION" --sku Standard --output none
  run az servicebus topic create --name "$ENTITY" --namespace-name "$NAMESPACE" --resource-group "$RG" --output none
  run az servicebus topic subscription create --name "$SUBSCRIPTION_NAME" --topic-name "$ENTITY" \
    --namespace-name "$NAMESPACE" --resource-group "$RG" --max-delivery-count "$MAX_ATTEMPTS" \
    --lock-duration PT5M --output none
  SCOPE=$(query "/subscriptions/$SUBSCRIPTION/resourceGroups/$RG/providers/Microsoft.ServiceBus/namespaces/$NAMESPACE/topics/$ENTITY" \
    az servicebus topic show --name "$ENTITY" --namespace-name "$NAMESPACE" --resource-group "$RG" --query id --output tsv)
  SENDER_ROLE="Azure Service Bus Data Sender"
  RECEIVER_ROLE="Azure Service Bus Data Receiver"
  CONNECTOR_TYPE=AZURE_SERVICE_BUS
  CONNECTION_NAME=DT_SERVICEBUS
  TRIGGER_SETTINGS=("DT_SERVICEBUS__fullyQualifiedNamespace=$FQDN" "DT_SERVICEBUS_TOPIC=$ENTITY"
    "DT_SERVICEBUS_SUBSCRIPTION=$SUBSCRIPTION_NAME")
else
  echo "==> Event Hubs $NAMESPACE, event hub $ENTITY"
  run az eventhubs namespace create --name "$NAMESPACE" --resource-group "$RG" --location "$LOCATION" --sku Standard --output none
  run az eventhubs eventhub create --name "$ENTITY" --namespace-name "$NAMESPACE" --resource-group "$RG" \
    --partition-count 2 --output none
  SCOPE=$(query "/subscriptions/$SUBSCRIPTION/resourceGroups/$RG/providers/Microsoft.EventHub/namespaces/$NAMESPACE/eventhubs/$ENTITY" \
    az eventhubs eventhub show --name "$ENTITY" --namespace-name "$NAMESPACE" --resource-group "$RG" --query id --output tsv)
  SENDER_ROLE="Azure Event Hubs Data Sender"
  RECEIVER_ROLE="Azure Event Hubs Data Receiver"
  CONNECTOR_TYPE=AZURE_EVENT_HUB
  CONNECTION_NAME=DT_EVENTHUB
  TRIGGER_SETTINGS=("DT_EVENTHUB__fullyQualifiedNamespace=$FQDN" "DT_EVENTHUB_NAME=$ENTITY")
fi
[[ -n $SCOPE ]] || die "could not read the resource id of $ENTITY"

echo "==> DT's identity: app registration, federated credential for $ISSUER / $ORG, $SENDER_ROLE on $ENTITY only"
DISPLAY="dtconnector-dt-publisher-$NAMESPACE"
# `query`, creates included: the script uses their output (the ids). A dry run prints them;
# no registration exists yet there, so the create path is printed, with placeholder ids.
CLIENT_ID=$(query "" az ad app list --display-name "$DISPLAY" --query "[0].appId" --output tsv)
[[ -n $CLIENT_ID ]] || CLIENT_ID=$(query "44444444-4444-4444-4444-444444444444" \
  az ad app create --display-name "$DISPLAY" --query appId --output tsv)
[[ -n $CLIENT_ID ]] || die "could not create the app registration $DISPLAY"
SP_ID=$(query "" az ad sp show --id "$CLIENT_ID" --query id --output tsv 2>/dev/null || true)
[[ -n $SP_ID ]] || SP_ID=$(query "55555555-5555-5555-5555-555555555555" az ad sp create --id "$CLIENT_ID" --query id --output tsv)
CREDENTIAL_DIR=$(mktemp -d)
trap 'rm -rf "$CREDENTIAL_DIR"' EXIT
ISSUER="$ISSUER" ORG="$ORG" AUDIENCE="$AUDIENCE" "$PYTHON" - "$CREDENTIAL_DIR/credential.json" <<'PY'
import json, os, sys
json.dump({"name": "dt-data-connector", "issuer": os.environ["ISSUER"], "subject": os.environ["ORG"],
           "audiences": [os.environ["AUDIENCE"]], "description": "DT Data Connector"}, open(sys.argv[1], "w"))
PY
exists az ad app federated-credential show --id "$CLIENT_ID" --federated-credential-id dt-data-connector \
  || run az ad app federated-credential create --id "$CLIENT_ID" --parameters "@$CREDENTIAL_DIR/credential.json" --output none
run az role assignment create --assignee-object-id "$SP_ID" --assignee-principal-type ServicePrincipal \
  --role "$SENDER_ROLE" --scope "$SCOPE" --output none

echo "==> function app $APP (worker only, plan $PLAN, Python $PY_VERSION), its identity may receive from $ENTITY"
azure_function_app  # scripts/deploy-azure-lib.sh
if [[ $PLAN == flex ]]; then
  # The app's user-assigned identity receives too; the trigger's connection names it.
  WORKER_ID=$APP_PRINCIPAL_ID
  TRIGGER_SETTINGS+=("${CONNECTION_NAME}__credential=managedidentity" "${CONNECTION_NAME}__clientId=$APP_CLIENT_ID")
else
  WORKER_ID=$(query "66666666-6666-6666-6666-666666666666" \
    az functionapp identity assign --name "$APP" --resource-group "$RG" --query principalId --output tsv)
fi
run az role assignment create --assignee-object-id "$WORKER_ID" --assignee-principal-type ServicePrincipal \
  --role "$RECEIVER_ROLE" --scope "$SCOPE" --output none
run az functionapp config appsettings set --name "$APP" --resource-group "$RG" --output none --settings \
  DT_DELIVERY=direct "DT_AZURE_DIRECT=$KIND" "DT_DEDUP_TABLE=$DEDUP_TABLE" "DT_STATE_TABLE=$STATE_TABLE" \
  "DT_POISON_QUEUE=$POISON" "DT_HANDLERS=$HANDLERS" "DT_MAX_ATTEMPTS=$MAX_ATTEMPTS" "${TRIGGER_SETTINGS[@]}"

echo "==> publishing"
BUILD="$CREDENTIAL_DIR/app"
"$PYTHON" "$ROOT/scripts/bundle.py" azure_trigger "$BUILD" >/dev/null
# The direct app, not the http one: only the trigger for DT_AZURE_DIRECT is registered.
printf '%s\n' '"""Direct delivery: the Functions host loads the app from azure_trigger.direct_app."""' '' \
  'from azure_trigger.direct_app import app  # noqa: F401' > "$BUILD/function_app.py"
(cd "$BUILD" && run func azure functionapp publish "$APP" --python --build remote)

URL="sb://$FQDN/$ENTITY"
if [[ -n ${DT_PROJECT_ID:-} && -n ${DT_SERVICE_ACCOUNT_KEY_ID:-} && -n ${DT_SERVICE_ACCOUNT_SECRET:-} && -n ${DT_SERVICE_ACCOUNT_EMAIL:-} ]]; then
  run "${DTCONNECTOR:-$ROOT/.venv/bin/dtconnector}" connector apply --type "$CONNECTOR_TYPE" --project "$DT_PROJECT_ID" \
    --name "${DT_CONNECTOR_NAME:-$NAMESPACE-$ENTITY}" \
    --azure-url "$URL" --azure-tenant-id "$TENANT" --azure-client-id "$CLIENT_ID"
else
  cat <<STEPS

deploy-azure (direct): done. Create the Data Connector in DT Studio (or set DT_PROJECT_ID and
DT_SERVICE_ACCOUNT_KEY_ID/_SECRET/_EMAIL and run this again to have it done for you):
  type:       $CONNECTOR_TYPE
  url:        $URL
  tenant id:  $TENANT
  client id:  $CLIENT_ID
STEPS
  if [[ $KIND == servicebus ]]; then
    echo "Dead letters: subscription $SUBSCRIPTION_NAME's dead-letter queue (az servicebus / Service Bus Explorer)"
  else
    echo "Dead letters: Storage queue '$POISON' in account '$STORAGE'"
  fi
fi
