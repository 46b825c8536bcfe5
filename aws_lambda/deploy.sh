#!/usr/bin/env bash
# Deploy dtconnector to AWS Lambda with the AWS SAM CLI (`make deploy-aws`).
#
# Builds the deployable bundle (scripts/bundle.py), then `sam build` and `sam deploy`
# with aws_lambda/template.yaml. Settings come from the environment:
#   AWS_REGION (or AWS_DEFAULT_REGION, or the AWS CLI profile's region)   required
#   DT_SIGNATURE_SECRET_ARN   Secrets Manager secret with the signature secret (preferred)
#   DT_SIGNATURE_SECRET       or the secret itself (a NoEcho stack parameter)
#   DT_AWS_STACK              stack name (default: dtconnector)
#   DT_HANDLERS_FILE          your handlers module, deployed as handlers.py
#                             (default: the example in examples/handlers.py)
#   DT_HANDLERS               modules to load (default: handlers)
#   DT_MAX_ATTEMPTS           deliveries before dead-lettering (default: 5)
#   DT_LOG_LEVEL              DEBUG, INFO, WARNING or ERROR (default: INFO)
#   DT_SAM_BUILD_FLAGS        extra `sam build` flags
#   DRY_RUN=1                 print the sam/aws commands instead of running them
#                             (scripts/deploy-lib.sh; no credentials needed)
#
# `sam build` needs the template's Python (python3.12) on PATH; without it the script builds
# in a container (--use-container) when Docker works, and otherwise says what to install.
set -euo pipefail

# MODE=direct: DT publishes into SQS itself (no ingest); its steps live in deploy-direct.sh.
if [ "${MODE:-http}" = direct ]; then
    exec bash "$(dirname "${BASH_SOURCE[0]}")/deploy-direct.sh"
fi

DEPLOY_NAME=deploy-aws
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../scripts/deploy-lib.sh
source "$ROOT/scripts/deploy-lib.sh"
# shellcheck source=../scripts/deploy-aws-lib.sh
source "$ROOT/scripts/deploy-aws-lib.sh"
project_python

require_sam

aws_region_and_login

if [ -z "${DT_SIGNATURE_SECRET_ARN:-}" ] && [ -z "${DT_SIGNATURE_SECRET:-}" ]; then
    die "set DT_SIGNATURE_SECRET_ARN (a Secrets Manager secret, preferred) or DT_SIGNATURE_SECRET
  to the Data Connector's signature secret; without one every event would be refused"
fi

# sam's --parameter-overrides syntax: Key="value", with \" for a quote inside; it has no
# escape for a backslash. Both secret parameters are always passed, so switching from one
# to the other clears the one no longer used.
for value in "${DT_SIGNATURE_SECRET:-}" "${DT_SIGNATURE_SECRET_ARN:-}" "${DT_HANDLERS:-}"; do
    case "$value" in *\\*) die "a setting contains a backslash, which sam cannot pass as a parameter:
  store the secret in Secrets Manager and set DT_SIGNATURE_SECRET_ARN instead" ;; esac
done
STACK="${DT_AWS_STACK:-dtconnector}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dtconnector-aws.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/src"

"$PYTHON" "$ROOT/scripts/bundle.py" aws_lambda "$SRC" >/dev/null
if [ -n "${DT_HANDLERS_FILE:-}" ]; then
    [ -f "$DT_HANDLERS_FILE" ] || die "DT_HANDLERS_FILE=$DT_HANDLERS_FILE does not exist"
    cp "$DT_HANDLERS_FILE" "$SRC/handlers.py"
fi

# The template's runtime: within its end of life, and buildable here.
aws_build_flags "$ROOT/aws_lambda/bundle/template.yaml"

# shellcheck disable=SC2086  # DT_SAM_BUILD_FLAGS is a list of flags
run sam build \
    --template-file "$SRC/template.yaml" \
    --build-dir "$WORK/build" \
    ${BUILD_FLAGS[@]+"${BUILD_FLAGS[@]}"} ${DT_SAM_BUILD_FLAGS:-}

quoted() {
    printf '"%s"' "${1//\"/\\\"}"
}
PARAMS=(
    "HandlerModules=$(quoted "${DT_HANDLERS:-handlers}")"
    "MaxAttempts=$(quoted "${DT_MAX_ATTEMPTS:-5}")"
    "LogLevel=$(quoted "${DT_LOG_LEVEL:-INFO}")"
)
if [ -n "${DT_SIGNATURE_SECRET_ARN:-}" ]; then
    PARAMS+=("SignatureSecretArn=$(quoted "$DT_SIGNATURE_SECRET_ARN")" 'SignatureSecret=""')
else
    PARAMS+=("SignatureSecret=$(quoted "$DT_SIGNATURE_SECRET")" 'SignatureSecretArn=""')
fi

sam_deploy_stack "$WORK/build/template.yaml" "$STACK" "${PARAMS[@]}"

if [ "$HAVE_AWS" = 1 ]; then
    URL="$(query "https://00000000000000000000000000000000.lambda-url.$REGION.on.aws/" aws cloudformation describe-stacks --stack-name "$STACK" --region "$REGION" \
        --query "Stacks[0].Outputs[?OutputKey=='IngestUrl'].OutputValue" --output text)"
    echo "deploy-aws: point the DT Data Connector at $URL"
fi
bash "$(dirname "$0")/../scripts/wire-dt.sh" "${URL:-}"
