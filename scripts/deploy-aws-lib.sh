# shellcheck shell=bash
# Shared by aws_lambda/deploy.sh and aws_lambda/deploy-direct.sh (source it after
# scripts/deploy-lib.sh). Why: both modes build with `sam build` from a template whose
# runtime must be alive and buildable here, and both need a region and credentials; one
# copy of those rules keeps the two scripts from drifting apart.
#
#   require_sam                die unless the SAM CLI is on PATH, saying where to get it.
#   aws_region_and_login       set REGION and HAVE_AWS (1 when the aws CLI is usable or in
#                              dry-run); die without a region or without credentials.
#   aws_build_flags <template> set RUNTIME (the template's python runtime, end-of-life
#                              checked) and BUILD_FLAGS (--use-container when that Python
#                              is not on PATH and Docker answers); die when neither works.
#   sam_deploy_stack <template> <stack> <parameter>...
#                              `sam deploy` of the built template, non-interactive and
#                              idempotent (no changeset prompt; nothing to change is fine).

require_sam() {
  require_cli sam "the AWS SAM CLI ('sam') is not installed.
  Install it: https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html"
}

aws_region_and_login() {
  HAVE_AWS=0
  if dry_run || command -v aws >/dev/null 2>&1; then HAVE_AWS=1; fi
  REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
  if [ -z "$REGION" ] && [ "$HAVE_AWS" = 1 ]; then
    REGION="$(query "eu-west-1" aws configure get region 2>/dev/null || true)"
  fi
  [ -n "$REGION" ] || die "no AWS region: set AWS_REGION (e.g. AWS_REGION=eu-west-1 make deploy-aws)"

  if [ "$HAVE_AWS" = 1 ]; then
    check_login "no usable AWS credentials: run 'aws configure' or 'aws sso login', or set AWS_PROFILE" \
      aws sts get-caller-identity --region "$REGION"
  elif ! "$PYTHON" -c "import boto3, sys; sys.exit(boto3.session.Session().get_credentials() is None)" 2>/dev/null; then
    die "no AWS credentials found: configure them (aws configure / AWS_PROFILE / AWS_ACCESS_KEY_ID)"
  fi
}

aws_build_flags() {
  local template=$1
  RUNTIME="$(grep -m1 -oE 'Runtime: *python[0-9.]+' "$template" | grep -oE 'python[0-9.]+' || true)"
  [ -n "$RUNTIME" ] || die "no python Runtime in $template"
  check_runtime aws "$RUNTIME"
  BUILD_FLAGS=()
  if [[ " ${DT_SAM_BUILD_FLAGS:-} " == *" --use-container "* ]] || "$RUNTIME" -c 'import sys' >/dev/null 2>&1; then
    :  # sam build finds it on PATH (or was told to use a container)
  elif docker info >/dev/null 2>&1; then
    echo "$DEPLOY_NAME: $RUNTIME is not on PATH: building in a container (sam build --use-container)"
    BUILD_FLAGS=(--use-container)
  elif dry_run; then
    warn "$RUNTIME is not on PATH and Docker does not answer: a real deploy stops here; printing the container build"
    BUILD_FLAGS=(--use-container)
  else
    die "sam build needs $RUNTIME (the template's runtime) on PATH, or Docker to build in a container.
  Install Python ${RUNTIME#python} (https://www.python.org/downloads/, or e.g. 'pyenv install ${RUNTIME#python}',
  'uv python install ${RUNTIME#python}', 'apt install $RUNTIME'), or install and start Docker."
  fi
}

sam_deploy_stack() {
  local template=$1 stack=$2
  shift 2
  run sam deploy \
    --template-file "$template" \
    --stack-name "$stack" \
    --region "$REGION" \
    --capabilities CAPABILITY_IAM \
    --resolve-s3 \
    --no-confirm-changeset \
    --no-fail-on-empty-changeset \
    --parameter-overrides "$@"
}
