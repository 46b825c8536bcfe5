#!/usr/bin/env bash
# Deploy dtconnector to Google Cloud Functions (2nd gen): `make deploy-gcp`.
#
#   ingest  (HTTP, unauthenticated: DT signs every request)  -> Pub/Sub topic
#   process (Pub/Sub trigger, --retry)  -> Firestore state + your handlers
#   the trigger's subscription dead-letters to <topic>-dead-letter after DT_MAX_ATTEMPTS
#
# Settings (environment; defaults in brackets):
#   GOOGLE_CLOUD_PROJECT   [gcloud config get-value project]
#   DT_GCP_REGION          [europe-west1]
#   DT_TOPIC               [dt-events]           DT_MAX_ATTEMPTS      [5] (5..100)
#   DT_DEDUP_COLLECTION    [dt_events]           DT_STATE_COLLECTION  [dt_device_state]
#   DT_HANDLERS            [handlers]            DT_SECRET_NAME       [dt-signature-secret]
#   DT_SIGNATURE_SECRET    if set, stored as a new version of the Secret Manager secret
#   DT_SOURCE_DIR          a bundle you edited (make bundle-gcp DEST=...) [a fresh bundle]
#   DT_RUNTIME             [python312] (checked against scripts/runtimes.tsv)
#   DT_BUILD_SA_NAME       [dt-connector-build] the service account Cloud Build builds as
#   DRY_RUN=1              print the gcloud commands instead of running them (no login needed)
#   DT_ALERT_CHANNEL       notification channel for the dead-letter alert [none: console only]
set -euo pipefail

# MODE=direct: DT publishes into Pub/Sub itself (no ingest); its steps live in deploy-direct.sh.
if [ "${MODE:-http}" = direct ]; then
  exec bash "$(dirname "$0")/deploy-direct.sh"
fi

DEPLOY_NAME=deploy-gcp
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../scripts/deploy-lib.sh
source "$ROOT/scripts/deploy-lib.sh"
# shellcheck source=../scripts/deploy-gcp-lib.sh
source "$ROOT/scripts/deploy-gcp-lib.sh"

gcp_login

gcp_settings dt-events dt-connector  # scripts/deploy-gcp-lib.sh
SECRET_NAME="${DT_SECRET_NAME:-dt-signature-secret}"

run gcloud services enable cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com \
  artifactregistry.googleapis.com eventarc.googleapis.com pubsub.googleapis.com \
  firestore.googleapis.com secretmanager.googleapis.com iam.googleapis.com "${G[@]}"

# Firestore with its TTL policy; the topic ingest publishes to, and its dead letters
# (scripts/deploy-gcp-lib.sh).
gcp_firestore
gcp_topics

# The signature secret, in Secret Manager.
if ! exists gcloud secrets describe "$SECRET_NAME" "${G[@]}"; then
  [ -n "${DT_SIGNATURE_SECRET:-}" ] || die "secret '$SECRET_NAME' does not exist: run again with DT_SIGNATURE_SECRET set to your connector's signature secret"
  run gcloud secrets create "$SECRET_NAME" --replication-policy=automatic "${G[@]}"
fi
if [ -n "${DT_SIGNATURE_SECRET:-}" ]; then
  printf '%s' "$DT_SIGNATURE_SECRET" | run gcloud secrets versions add "$SECRET_NAME" --data-file=- "${G[@]}"
fi

# A service account for both functions and for the Eventarc trigger.
exists gcloud iam service-accounts describe "$SA" "${G[@]}" \
  || run gcloud iam service-accounts create "$SA_NAME" --display-name="DT Data Connector receiver" "${G[@]}"
for role in roles/datastore.user roles/pubsub.publisher roles/eventarc.eventReceiver; do
  run gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$SA" --role="$role" \
    --condition=None --quiet >/dev/null
done
run gcloud secrets add-iam-policy-binding "$SECRET_NAME" --member="serviceAccount:$SA" \
  --role=roles/secretmanager.secretAccessor "${G[@]}" >/dev/null

# The service account Cloud Build builds the functions as (scripts/deploy-gcp-lib.sh).
gcp_build_service_account

gcp_source

ENV_VARS="DT_PUBSUB_TOPIC=projects/$PROJECT/topics/$TOPIC,DT_DEDUP_COLLECTION=$DEDUP,DT_STATE_COLLECTION=$STATE,DT_HANDLERS=$HANDLERS"

# ingest: DT must get an answer within 10 s.
run gcloud functions deploy dt-ingest --gen2 --region="$REGION" --runtime="$RUNTIME" \
  --source="$SOURCE" --entry-point=ingest --trigger-http --allow-unauthenticated \
  --service-account="$SA" "${BUILD[@]}" --memory=256Mi --timeout=10s --max-instances=100 \
  --set-env-vars="$ENV_VARS" --set-secrets="DT_SIGNATURE_SECRET=$SECRET_NAME:latest" "${G[@]}"

# process: raising makes Pub/Sub redeliver (--retry). The worker lease equals the function
# timeout: a delivery killed by the timeout leaves a lease that has already run out, so the
# redelivery is not refused as "in flight" (which would spend Pub/Sub's few attempts).
run gcloud functions deploy dt-process --gen2 --region="$REGION" --runtime="$RUNTIME" \
  --source="$SOURCE" --entry-point=process --trigger-topic="$TOPIC" --retry \
  --service-account="$SA" --trigger-service-account="$SA" "${BUILD[@]}" --memory=256Mi --timeout=240s \
  --set-env-vars="$ENV_VARS,DT_WORKER_LEASE_S=240" "${G[@]}"
run gcloud functions add-invoker-policy-binding dt-process --region="$REGION" \
  --member="serviceAccount:$SA" "${G[@]}" >/dev/null

# Bounded redelivery: a dead-letter policy on the trigger's subscription (scripts/deploy-gcp-lib.sh).
gcp_dead_letter_policy dt-process

# --- metrics and alerts --------------------------------------------------------------------
# The functions write one JSON line per metric (gcp_function/metrics.py); these log-based
# metrics count them (and extract latencies and lags as distributions), and an alert
# policy fires when the dead-letter subscription holds anything. DT_ALERT_CHANNEL: an
# optional notification channel (projects/P/notificationChannels/ID) the alert notifies.
METRICS_DIR="$(mktemp -d)"
log_metric() {  # name "label ..." [distribution]
  local name="$1" labels="$2" kind="${3:-}" file="$METRICS_DIR/$1.yaml" label
  {
    echo "description: dtconnector $name (see the README's Metrics section)"
    echo "filter: 'resource.type=\"cloud_run_revision\" AND jsonPayload.message=\"metric\" AND jsonPayload.metric=\"$name\"'"
    echo "metricDescriptor:"
    echo "  metricKind: DELTA"
    if [ "$kind" = distribution ]; then
      echo "  valueType: DISTRIBUTION"
      echo "  unit: s"
    else
      echo "  valueType: INT64"
      echo "  unit: '1'"
    fi
    if [ -n "$labels" ]; then
      echo "  labels:"
      for label in $labels; do printf '  - key: %s\n    valueType: STRING\n' "$label"; done
      echo "labelExtractors:"
      for label in $labels; do
        printf '  %s: EXTRACT(jsonPayload.%s)\n' "$label" "$([ "$label" = event_type ] && echo eventType || echo "$label")"
      done
    fi
    if [ "$kind" = distribution ]; then
      echo "valueExtractor: EXTRACT(jsonPayload.value)"
      echo "bucketOptions:"
      echo "  exponentialBuckets: {numFiniteBuckets: 24, growthFactor: 2, scale: 0.001}"
    fi
  } >"$file"
  run gcloud logging metrics create "$name" --config-from-file="$file" "${G[@]}" >/dev/null 2>&1 \
    || run gcloud logging metrics update "$name" --config-from-file="$file" "${G[@]}"
}
log_metric dt_requests_total "status reason"
log_metric dt_ack_latency_seconds "status" distribution
log_metric dt_enqueue_failures_total ""
log_metric dt_events_processed_total "event_type"
log_metric dt_handler_runs_total "outcome handler"
log_metric dt_retries_total ""
log_metric dt_dead_lettered_total ""
log_metric dt_stale_state_skipped_total ""
log_metric dt_end_to_end_lag_seconds "event_type" distribution

ALERT_NAME="dtconnector: events dead-lettered ($DEAD_SUB)"
CHANNELS=""
[ -z "${DT_ALERT_CHANNEL:-}" ] || CHANNELS=", \"notificationChannels\": [\"$DT_ALERT_CHANNEL\"]"
cat >"$METRICS_DIR/dead-letter-policy.json" <<POLICY
{
  "displayName": "$ALERT_NAME",
  "documentation": {"content": "Events whose handlers kept failing are in $DEAD_SUB. Pull them: gcloud pubsub subscriptions pull $DEAD_SUB --project=$PROJECT", "mimeType": "text/markdown"},
  "combiner": "OR",
  "conditions": [{
    "displayName": "dead-letter backlog > 0",
    "conditionThreshold": {
      "filter": "resource.type = \"pubsub_subscription\" AND resource.labels.subscription_id = \"$DEAD_SUB\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\"",
      "aggregations": [{"alignmentPeriod": "60s", "perSeriesAligner": "ALIGN_MAX"}],
      "comparison": "COMPARISON_GT",
      "thresholdValue": 0,
      "duration": "0s"
    }
  }]$CHANNELS
}
POLICY
EXISTING="$(query "" gcloud alpha monitoring policies list --filter="displayName=\"$ALERT_NAME\"" --format='value(name)' "${G[@]}" 2>/dev/null || true)"
if [ -z "$EXISTING" ]; then
  run gcloud alpha monitoring policies create --policy-from-file="$METRICS_DIR/dead-letter-policy.json" "${G[@]}"
fi
rm -rf "$METRICS_DIR"

URL="$(query "https://dt-ingest-000000000000.$REGION.run.app" gcloud functions describe dt-ingest --region="$REGION" \
  --format='value(serviceConfig.uri)' "${G[@]}")"
cat <<EOF

deploy-gcp: done.
  Data Connector URL:  $URL
  Dead letters:        gcloud pubsub subscriptions pull $DEAD_SUB --project=$PROJECT --limit=10
  Logs:                gcloud functions logs read dt-process --region=$REGION --project=$PROJECT
Point your DT Data Connector at the URL, with the same signature secret ($SECRET_NAME).
EOF
bash "$(dirname "$0")/../scripts/wire-dt.sh" "$URL"
