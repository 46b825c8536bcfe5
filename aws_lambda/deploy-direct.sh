#!/usr/bin/env bash
# Deploy dtconnector to AWS in direct mode (`make deploy-aws MODE=direct`): DT's AWS_SQS
# Data Connector publishes straight into an SQS queue; no Function URL, no ingest, no secret.
#
# Runs `sam build` and `sam deploy` with aws_lambda/template-direct.yaml: the queue and its
# dead-letter queue, the worker (the http mode's handler, with DT_DELIVERY=direct), its
# DynamoDB ledger and state tables, an IAM OIDC provider for DT's issuer and the role DT
# assumes with web identity, allowed sqs:SendMessage on that one queue and nothing else.
# Settings come from the environment:
#   AWS_REGION (or AWS_DEFAULT_REGION, or the AWS CLI profile's region)   required
#   DT_ORGANIZATION_ID        your DT organization id: the role trusts only its tokens (required)
#   DT_AUDIENCE               the audience DT's token must carry (default: dtconnector-<stack>)
#   DT_OIDC_ISSUER            DT's OIDC issuer, https:// optional (default: the template's)
#   DT_CREATE_OIDC_PROVIDER   "false" when the account already has a provider for that issuer
#   DT_AWS_STACK              stack name (default: dtconnector-direct)
#   DT_HANDLERS_FILE, DT_HANDLERS, DT_MAX_ATTEMPTS, DT_LOG_LEVEL, DT_SAM_BUILD_FLAGS  as in deploy.sh
#   DRY_RUN=1                 print the sam/aws commands instead of running them
#                             (scripts/deploy-lib.sh; no credentials needed)
# The template's runtime is checked against scripts/runtimes.tsv and built as deploy.sh
# does (python3.12 on PATH, or --use-container): scripts/deploy-aws-lib.sh.
# With DT_PROJECT_ID and DT_SERVICE_ACCOUNT_KEY_ID/_SECRET/_EMAIL set, the connector is
# created or updated in DT (`dtconnector connector apply --type AWS_SQS`); otherwise the
# manual steps are printed.
set -euo pipefail

DEPLOY_NAME="deploy-aws (direct)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../scripts/deploy-lib.sh
source "$ROOT/scripts/deploy-lib.sh"
# shellcheck source=../scripts/deploy-aws-lib.sh
source "$ROOT/scripts/deploy-aws-lib.sh"
project_python

[ -n "${DT_ORGANIZATION_ID:-}" ] || die "set DT_ORGANIZATION_ID to your DT organization id: DT's role trusts only tokens for it"
require_sam
aws_region_and_login

STACK="${DT_AWS_STACK:-dtconnector-direct}"
AUDIENCE="${DT_AUDIENCE:-dtconnector-$STACK}"
for value in "$AUDIENCE" "${DT_HANDLERS:-}" "${DT_OIDC_ISSUER:-}"; do
    case "$value" in *\\* | *\"*) die "a setting contains a backslash or a quote, which the trust policy cannot hold" ;; esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dtconnector-aws-direct.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/src"
"$PYTHON" "$ROOT/scripts/bundle.py" aws_lambda "$SRC" >/dev/null
cp -L "$ROOT/aws_lambda/template-direct.yaml" "$SRC/template.yaml"
if [ -n "${DT_HANDLERS_FILE:-}" ]; then
    [ -f "$DT_HANDLERS_FILE" ] || die "DT_HANDLERS_FILE=$DT_HANDLERS_FILE does not exist"
    cp "$DT_HANDLERS_FILE" "$SRC/handlers.py"
fi

# The template's runtime: within its end of life, and buildable here (as in deploy.sh).
aws_build_flags "$ROOT/aws_lambda/template-direct.yaml"

# shellcheck disable=SC2086  # DT_SAM_BUILD_FLAGS is a list of flags
run sam build --template-file "$SRC/template.yaml" --build-dir "$WORK/build" \
    ${BUILD_FLAGS[@]+"${BUILD_FLAGS[@]}"} ${DT_SAM_BUILD_FLAGS:-}

quoted() {
    printf '"%s"' "${1//\"/\\\"}"
}
PARAMS=(
    "DtAudience=$(quoted "$AUDIENCE")"
    "DtOrganizationId=$(quoted "$DT_ORGANIZATION_ID")"
    "CreateOidcProvider=$(quoted "${DT_CREATE_OIDC_PROVIDER:-true}")"
    "HandlerModules=$(quoted "${DT_HANDLERS:-handlers}")"
    "MaxAttempts=$(quoted "${DT_MAX_ATTEMPTS:-5}")"
    "LogLevel=$(quoted "${DT_LOG_LEVEL:-INFO}")"
)
# IAM names an OIDC provider (and its condition keys) by the issuer without its scheme.
ISSUER_HOST="${DT_OIDC_ISSUER:-}"
ISSUER_HOST="${ISSUER_HOST#https://}"
ISSUER_HOST="${ISSUER_HOST%/}"
[ -z "$ISSUER_HOST" ] || PARAMS+=("DtOidcIssuer=$(quoted "$ISSUER_HOST")")

sam_deploy_stack "$WORK/build/template.yaml" "$STACK" "${PARAMS[@]}"

output() {  # <output key> <dry-run placeholder>
    query "$2" aws cloudformation describe-stacks --stack-name "$STACK" --region "$REGION" \
        --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
QUEUE_URL="<EventQueueUrl output>"
ROLE_ARN="<DtRoleArn output>"
if [ "$HAVE_AWS" = 1 ]; then
    QUEUE_URL="$(output EventQueueUrl "https://sqs.$REGION.amazonaws.com/000000000000/$STACK-events")"
    ROLE_ARN="$(output DtRoleArn "arn:aws:iam::000000000000:role/$STACK-dt-publisher")"
fi

if [ -n "${DT_PROJECT_ID:-}" ] && [ -n "${DT_SERVICE_ACCOUNT_KEY_ID:-}" ] \
    && [ -n "${DT_SERVICE_ACCOUNT_SECRET:-}" ] && [ -n "${DT_SERVICE_ACCOUNT_EMAIL:-}" ]; then
    run "${DTCONNECTOR:-$ROOT/.venv/bin/dtconnector}" connector apply --type AWS_SQS --project "$DT_PROJECT_ID" \
        --name "${DT_CONNECTOR_NAME:-$STACK}" \
        --sqs-queue-url "$QUEUE_URL" --aws-role-arn "$ROLE_ARN" --audience "$AUDIENCE"
else
    cat <<STEPS
deploy-aws (direct): create the Data Connector in DT Studio (or set DT_PROJECT_ID and
DT_SERVICE_ACCOUNT_KEY_ID/_SECRET/_EMAIL and run this again to have it done for you):
  type:        AWS_SQS
  queue URL:   $QUEUE_URL
  role ARN:    $ROLE_ARN
  audience:    $AUDIENCE
Then check it: .venv/bin/dtconnector send --to sqs://$QUEUE_URL --count 3
STEPS
fi
