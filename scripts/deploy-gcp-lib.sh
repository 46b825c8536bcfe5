# shellcheck shell=bash
# Shared by gcp_function/deploy.sh and gcp_function/deploy-direct.sh (source it after
# scripts/deploy-lib.sh). Why: both modes log in the same way, build their functions as the
# same dedicated Cloud Build service account, and bound the worker's redelivery the same
# way; one copy keeps the two scripts from drifting apart.
#
#   gcp_login                   set ACCOUNT and PROJECT; die without gcloud, a login or a project.
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
