# shellcheck shell=bash
# Shared by gcp_function/deploy.sh and gcp_function/deploy-direct.sh (source it after
# scripts/deploy-lib.sh). Why: both modes log in the same way, keep the worker's ledger in
# the same Firestore, feed it from a Pub/Sub topic with the same dead-letter topic, deploy
# the same bundle, build their functions as the same dedicated Cloud Build service account,
# and bound the worker's redelivery the same way; one copy keeps the two scripts from
# drifting apart.
#
#   gcp_login                   set ACCOUNT and PROJECT; die without gcloud, a login or a project.
#   gcp_settings <topic> <service account name>
#                               the settings both modes share (each script's header lists them):
#                               REGION, RUNTIME (end-of-life checked), TOPIC (default <topic>),
#                               DEAD_TOPIC, DEAD_SUB, MAX_ATTEMPTS, DEDUP, STATE, HANDLERS, the
#                               functions' service account SA_NAME and SA, G and PYTHON; then says
#                               where it deploys. Needs PROJECT and ACCOUNT (gcp_login).
#   gcp_firestore               the Firestore (native mode) database, and the TTL policy that
#                               removes expired claims in DEDUP. Needs REGION, DEDUP, G.
#   gcp_topics                  TOPIC, DEAD_TOPIC, and DEAD_SUB, a subscription keeping dead
#                               letters for inspection (7 days). Needs G.
#   gcp_source                  set SOURCE: DT_SOURCE_DIR (a bundle you edited), else a fresh
#                               bundle in a temporary folder removed on exit. Needs PYTHON, ROOT.
#   gcp_build_service_account   create (or reuse) BUILD_SA_NAME (DT_BUILD_SA_NAME, default
#                               dt-connector-build), grant it what a build needs, and set
#                               BUILD=(--build-service-account=...) for `gcloud functions deploy`.
#                               Needs PROJECT and G.
#   gcp_dead_letter_policy <function> [<project number>]
#                               give the Pub/Sub trigger's subscription of <function> a
#                               dead-letter policy (DEAD_TOPIC after MAX_ATTEMPTS) and a retry
#                               backoff. Needs PROJECT, REGION, DEAD_TOPIC, MAX_ATTEMPTS, G; looks
#                               the project number up when not given. Dry-run placeholders:
#                               trigger <function>-000000, subscription ...-sub-000, 123456789012.

gcp_login() {
  require_cli gcloud "the Google Cloud CLI (gcloud) is not installed: https://cloud.google.com/sdk/docs/install"
  ACCOUNT="$(query "you@example.com" gcloud config get-value account 2>/dev/null || true)"
  [ -n "$ACCOUNT" ] || die "gcloud has no account: run 'gcloud auth login' first"
  check_login "gcloud has no usable credentials: run 'gcloud auth login' first" gcloud auth print-access-token
  PROJECT="${GOOGLE_CLOUD_PROJECT:-$(query "my-project" gcloud config get-value project 2>/dev/null || true)}"
  [ -n "$PROJECT" ] || die "no project: set GOOGLE_CLOUD_PROJECT or run 'gcloud config set project PROJECT_ID'"
}

gcp_settings() {
  REGION="${DT_GCP_REGION:-europe-west1}"
  RUNTIME="${DT_RUNTIME:-python312}"
  TOPIC="${DT_TOPIC:-$1}"
  DEAD_TOPIC="${TOPIC}-dead-letter"
  DEAD_SUB="${DEAD_TOPIC}-sub"
  MAX_ATTEMPTS="${DT_MAX_ATTEMPTS:-5}"
  DEDUP="${DT_DEDUP_COLLECTION:-dt_events}"
  STATE="${DT_STATE_COLLECTION:-dt_device_state}"
  HANDLERS="${DT_HANDLERS:-handlers}"
  SA_NAME="$2"
  SA="${SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
  G=(--project="$PROJECT" --quiet)
  project_python
  check_runtime gcp "$RUNTIME"
  echo "$DEPLOY_NAME: project $PROJECT, region $REGION, account $ACCOUNT, runtime $RUNTIME"
}

gcp_firestore() {
  exists gcloud firestore databases describe --database='(default)' "${G[@]}" \
    || run gcloud firestore databases create --database='(default)' --location="$REGION" --type=firestore-native "${G[@]}"
  run gcloud firestore fields ttls update expiresAt --collection-group="$DEDUP" --enable-ttl --async "${G[@]}"
}

gcp_topics() {
  exists gcloud pubsub topics describe "$TOPIC" "${G[@]}" || run gcloud pubsub topics create "$TOPIC" "${G[@]}"
  exists gcloud pubsub topics describe "$DEAD_TOPIC" "${G[@]}" || run gcloud pubsub topics create "$DEAD_TOPIC" "${G[@]}"
  exists gcloud pubsub subscriptions describe "$DEAD_SUB" "${G[@]}" \
    || run gcloud pubsub subscriptions create "$DEAD_SUB" --topic="$DEAD_TOPIC" --message-retention-duration=7d \
         --expiration-period=never "${G[@]}"
}

# The deployable folder: core/, gcp_function/, handlers.py, main.py, requirements.txt.
gcp_source() {
  if [ -n "${DT_SOURCE_DIR:-}" ]; then
    SOURCE="$DT_SOURCE_DIR"
  else
    SOURCE="$(mktemp -d)/dtconnector-gcp"
    trap 'rm -rf "$(dirname "$SOURCE")"' EXIT
    "$PYTHON" "$ROOT/scripts/bundle.py" gcp_function "$SOURCE" >/dev/null
  fi
}

# A new project's default build account may lack the permissions (Google: grant
# roles/cloudbuild.builds.builder), so the build gets its own: build steps, build logs, the
# image in Artifact Registry, the uploaded source in Cloud Storage.
gcp_build_service_account() {
  local role
  BUILD_SA_NAME="${DT_BUILD_SA_NAME:-dt-connector-build}"
  BUILD_SA="${BUILD_SA_NAME}@${PROJECT}.iam.gserviceaccount.com"
  exists gcloud iam service-accounts describe "$BUILD_SA" "${G[@]}" \
    || run gcloud iam service-accounts create "$BUILD_SA_NAME" --display-name="DT Data Connector build" "${G[@]}"
  for role in roles/cloudbuild.builds.builder roles/logging.logWriter roles/artifactregistry.writer \
      roles/storage.objectViewer; do
    run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$BUILD_SA" --role="$role" \
      --condition=None --quiet >/dev/null
  done
  BUILD=(--build-service-account="projects/$PROJECT/serviceAccounts/$BUILD_SA")
}

# Bounded redelivery: the trigger's subscription (created by Eventarc) gets a dead-letter
# policy and a retry backoff. Pub/Sub's service agent must publish/subscribe for it.
gcp_dead_letter_policy() {
  local function=$1 number=${2:-} trigger subscription agent
  trigger="$(query "projects/$PROJECT/locations/$REGION/triggers/$function-000000" gcloud functions describe "$function" \
    --region="$REGION" --format='value(eventTrigger.trigger)' "${G[@]}")"
  subscription="$(query "eventarc-$REGION-$function-000000-sub-000" gcloud eventarc triggers describe "$trigger" \
    --format='value(transport.pubsub.subscription)' "${G[@]}")"
  [ -n "$subscription" ] || die "could not find the subscription of trigger $trigger"
  if [ -z "$number" ]; then
    number="$(query "123456789012" gcloud projects describe "$PROJECT" --format='value(projectNumber)')"
  fi
  agent="serviceAccount:service-${number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  run gcloud pubsub topics add-iam-policy-binding "$DEAD_TOPIC" --member="$agent" --role=roles/pubsub.publisher "${G[@]}" >/dev/null
  run gcloud pubsub subscriptions add-iam-policy-binding "$subscription" --member="$agent" --role=roles/pubsub.subscriber "${G[@]}" >/dev/null
  run gcloud pubsub subscriptions update "$subscription" --dead-letter-topic="$DEAD_TOPIC" \
    --max-delivery-attempts="$MAX_ATTEMPTS" --min-retry-delay=10s --max-retry-delay=600s "${G[@]}"
}
