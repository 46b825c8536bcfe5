#!/usr/bin/env bash
# Deploy dtconnector to Google Cloud in direct mode (`make deploy-gcp MODE=direct`): DT's
# GOOGLE_CLOUD_PUBSUB Data Connector publishes straight into a Pub/Sub topic, as a
# workload-identity principal; no HTTP function, no signature secret.
#
#   DT (OIDC token) -> workload identity pool/provider -> roles/pubsub.publisher on TOPIC only
#   process (Pub/Sub trigger, --retry, DT_DELIVERY=direct) -> Firestore ledger/state + handlers
#   the trigger's subscription dead-letters to <topic>-dead-letter after DT_MAX_ATTEMPTS
#
# Settings (environment; defaults in brackets):
#   DT_ORGANIZATION_ID     your DT organization id: the only subject granted publish (required)
#   GOOGLE_CLOUD_PROJECT   [gcloud config get-value project]
#   DT_GCP_REGION          [europe-west1]        DT_RUNTIME           [python312]
#   DT_TOPIC               [dt-direct-events]    DT_MAX_ATTEMPTS      [5] (5..100)
#   DT_DEDUP_COLLECTION    [dt_events]           DT_STATE_COLLECTION  [dt_device_state]
#   DT_HANDLERS            [handlers]            DT_SOURCE_DIR        [a fresh bundle]
#   DT_WIF_POOL            [dt-connector]        DT_WIF_PROVIDER      [dt-oidc]
#   DT_OIDC_ISSUER         [https://identity.disruptive-technologies.com]  DT's token issuer
#   DT_AUDIENCE            [the provider's resource name, Google's default audience]
#   DT_RUNTIME is checked against scripts/runtimes.tsv; DT_BUILD_SA_NAME [dt-connector-build]
#   is the service account Cloud Build builds as, as in deploy.sh (scripts/deploy-gcp-lib.sh)
#   DRY_RUN=1              print the gcloud commands instead of running them (no login needed)
# With DT_PROJECT_ID and DT_SERVICE_ACCOUNT_KEY_ID/_SECRET/_EMAIL set, the connector is
# created or updated in DT (`dtconnector connector apply --type GOOGLE_CLOUD_PUBSUB`);
# otherwise the manual steps are printed.
set -euo pipefail

DEPLOY_NAME="deploy-gcp (direct)"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../scripts/deploy-lib.sh
source "$ROOT/scripts/deploy-lib.sh"
# shellcheck source=../scripts/deploy-gcp-lib.sh
source "$ROOT/scripts/deploy-gcp-lib.sh"

ORG="${DT_ORGANIZATION_ID:-}"
[[ $ORG =~ ^[A-Za-z0-9_-]+$ ]] || die "set DT_ORGANIZATION_ID to your DT organization id: only DT's tokens for it may publish"
gcp_login

gcp_settings dt-direct-events dt-direct-worker  # scripts/deploy-gcp-lib.sh
POOL="${DT_WIF_POOL:-dt-connector}"
PROVIDER="${DT_WIF_PROVIDER:-dt-oidc}"
ISSUER="${DT_OIDC_ISSUER:-https://identity.disruptive-technologies.com}"

run gcloud services enable cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com \
  artifactregistry.googleapis.com eventarc.googleapis.com pubsub.googleapis.com \
  firestore.googleapis.com iam.googleapis.com sts.googleapis.com "${G[@]}"
PROJECT_NUMBER="$(query "123456789012" gcloud projects describe "$PROJECT" --format='value(projectNumber)')"
[ -n "$PROJECT_NUMBER" ] || die "could not read the number of project $PROJECT"

# Firestore: the worker's ledger (the only dedup here) and device state; the topic DT
# publishes to, and its dead letters (scripts/deploy-gcp-lib.sh).
gcp_firestore
gcp_topics

# DT's identity: a workload identity pool with an OIDC provider for DT's issuer. The token's
# `sub` (DT's organization id) becomes the principal's subject.
PROVIDER_NAME="projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/$POOL/providers/$PROVIDER"
AUDIENCE="${DT_AUDIENCE:-//iam.googleapis.com/$PROVIDER_NAME}"
exists gcloud iam workload-identity-pools describe "$POOL" --location=global "${G[@]}" \
  || run gcloud iam workload-identity-pools create "$POOL" --location=global \
       --display-name="DT Data Connector" "${G[@]}"
exists gcloud iam workload-identity-pools providers describe "$PROVIDER" --workload-identity-pool="$POOL" \
    --location=global "${G[@]}" \
  || run gcloud iam workload-identity-pools providers create-oidc "$PROVIDER" --workload-identity-pool="$POOL" \
       --location=global --issuer-uri="$ISSUER" --allowed-audiences="$AUDIENCE" \
       --attribute-mapping="google.subject=assertion.sub" \
       --attribute-condition="assertion.sub == '$ORG'" "${G[@]}"
DT_PRINCIPAL="principal://iam.googleapis.com/projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/$POOL/subject/$ORG"
# DT's only grant: publish to this one topic.
run gcloud pubsub topics add-iam-policy-binding "$TOPIC" --member="$DT_PRINCIPAL" --role=roles/pubsub.publisher "${G[@]}" >/dev/null

# The worker's own service account: Firestore and receiving Eventarc events, nothing else.
exists gcloud iam service-accounts describe "$SA" "${G[@]}" \
  || run gcloud iam service-accounts create "$SA_NAME" --display-name="DT direct-delivery worker" "${G[@]}"
for role in roles/datastore.user roles/eventarc.eventReceiver; do
  run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$SA" --role="$role" \
    --condition=None --quiet >/dev/null
done

# The service account Cloud Build builds the worker as (scripts/deploy-gcp-lib.sh).
gcp_build_service_account

gcp_source
ENV_VARS="DT_DELIVERY=direct,DT_DEDUP_COLLECTION=$DEDUP,DT_STATE_COLLECTION=$STATE,DT_HANDLERS=$HANDLERS,DT_WORKER_LEASE_S=240"

# The worker only: raising makes Pub/Sub redeliver (--retry).
run gcloud functions deploy dt-direct-process --gen2 --region="$REGION" --runtime="$RUNTIME" \
  --source="$SOURCE" --entry-point=process --trigger-topic="$TOPIC" --retry \
  --service-account="$SA" --trigger-service-account="$SA" "${BUILD[@]}" --memory=256Mi --timeout=240s \
  --set-env-vars="$ENV_VARS" "${G[@]}"
run gcloud functions add-invoker-policy-binding dt-direct-process --region="$REGION" \
  --member="serviceAccount:$SA" "${G[@]}" >/dev/null

# Bounded redelivery on the trigger's subscription, as in http mode (scripts/deploy-gcp-lib.sh).
gcp_dead_letter_policy dt-direct-process "$PROJECT_NUMBER"

TOPIC_PATH="projects/$PROJECT/topics/$TOPIC"
if [ -n "${DT_PROJECT_ID:-}" ] && [ -n "${DT_SERVICE_ACCOUNT_KEY_ID:-}" ] \
    && [ -n "${DT_SERVICE_ACCOUNT_SECRET:-}" ] && [ -n "${DT_SERVICE_ACCOUNT_EMAIL:-}" ]; then
  run "${DTCONNECTOR:-$ROOT/.venv/bin/dtconnector}" connector apply --type GOOGLE_CLOUD_PUBSUB --project "$DT_PROJECT_ID" \
    --name "${DT_CONNECTOR_NAME:-$TOPIC}" --pubsub-topic "$TOPIC_PATH" --audience "$AUDIENCE"
else
  cat <<STEPS

deploy-gcp (direct): done. Create the Data Connector in DT Studio (or set DT_PROJECT_ID and
DT_SERVICE_ACCOUNT_KEY_ID/_SECRET/_EMAIL and run this again to have it done for you):
  type:      GOOGLE_CLOUD_PUBSUB
  topic:     $TOPIC_PATH
  audience:  $AUDIENCE
DT publishes as $DT_PRINCIPAL
  Dead letters:  gcloud pubsub subscriptions pull $DEAD_SUB --project=$PROJECT --limit=10
  Check it:      .venv/bin/dtconnector send --to pubsub://$TOPIC_PATH --count 3
STEPS
fi
