# shellcheck shell=bash
# Shared by every <platform>/deploy.sh (source it after setting DEPLOY_NAME=deploy-<platform>).
#
# Why: one dry-run mode for all five scripts, so `make check-deploy` can collect every cloud
# CLI command a script would run and check it against that CLI's own help text; one place
# that masks secrets in what is printed; one runtime end-of-life rule (scripts/runtimes.py).
#
#   run <cmd...>            a command that changes something. DRY_RUN=1: print it instead.
#   query <placeholder> <cmd...>
#                           a read-only command whose output the script uses. DRY_RUN=1: print
#                           it and write <placeholder> to stdout instead of running it.
#   exists <cmd...>         a read-only probe ("does this resource exist?"); its output is
#                           discarded. DRY_RUN=1: print it; answer DRY_RUN_EXISTING (1 = yes,
#                           default 0 = no, so the create path is the one printed).
#   check_login <message> <cmd...>
#                           a credentials/login probe: die with <message> if it fails.
#                           DRY_RUN=1: print it, never run it (no login needed).
#   require_cli <cli> <message>
#                           die unless <cli> is on PATH (skipped in dry-run).
#   check_runtime <platform> <runtime>
#                           refuse a runtime past end of life, warn within 90 days of it.
#   project_python          set PYTHON (what runs scripts/bundle.py): $PYTHON if given, else
#                           this checkout's .venv/bin/python, else python3; die without one.
#   mask_value <value>      also mask <value> in printed commands (the DT_* and
#                           credential variables named in MASKED_VARS always are).
#
# A printed command is one line: "DRY-RUN: " then the words, each shell-quoted so that
# Python's shlex.split gives them back (a newline inside a word is printed as \n).
# Secrets are printed as '***'; user:password@ in a URL as ***@.

DEPLOY_NAME=${DEPLOY_NAME:-deploy}
DEPLOY_EXIT=${DEPLOY_EXIT:-1}  # die's exit status
DEPLOY_LIB_DIR=$(cd "${BASH_SOURCE[0]%/*}" && pwd)
DRY_RUN_PREFIX="DRY-RUN:"
MASKED_VARS=(DT_SIGNATURE_SECRET DT_SIGNATURE_SECRET_PREVIOUS CLOUDANT_APIKEY CLOUDANT_PASSWORD
  CLOUDANT_URL HEROKU_API_KEY AZURE_STORAGE_KEY)
_MASKED_VALUES=()

die() { echo "$DEPLOY_NAME: $*" >&2; exit "$DEPLOY_EXIT"; }
warn() { echo "$DEPLOY_NAME: $*" >&2; }
dry_run() { [ "${DRY_RUN:-0}" = 1 ]; }

# Dry-run lines go to the script's original stdout (fd 3), even from inside $(...) or from a
# command whose output the script discards.
if dry_run; then exec 3>&1; fi

mask_value() { if [ -n "${1:-}" ]; then _MASKED_VALUES+=("$1"); fi; }

# _masked and _quoted leave their result in REPLY rather than printing it: a dry run prints
# dozens of commands, and a $(...) per word was two forks each (most of a dry run's time).
_masked() {
  local word=$1 name secret
  for name in "${MASKED_VARS[@]}"; do
    secret=${!name:-}
    if [ -n "$secret" ]; then word=${word//"$secret"/***}; fi
  done
  for secret in ${_MASKED_VALUES[@]+"${_MASKED_VALUES[@]}"}; do
    word=${word//"$secret"/***}
  done
  # user:password@ in any URL
  if [[ $word =~ ^(.*://)[^/@]+@(.*)$ ]]; then word="${BASH_REMATCH[1]}***@${BASH_REMATCH[2]}"; fi
  while [[ $word == *$'\n' ]]; do word=${word%$'\n'}; done  # as $(...) did
  REPLY=$word
}

_quoted() {
  local word=$1
  if [[ -n $word && $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    REPLY=$word
  else
    word=${word//$'\n'/\\n}
    REPLY="'${word//\'/\'\\\'\'}'"
  fi
}

_print_dry() {
  local line=$DRY_RUN_PREFIX word
  for word in "$@"; do _masked "$word"; _quoted "$REPLY"; line+=" $REPLY"; done
  printf '%s\n' "$line" >&3
}

run() {
  if dry_run; then _print_dry "$@"; return 0; fi
  "$@"
}

query() {
  local placeholder=$1
  shift
  if dry_run; then _print_dry "$@"; printf '%s\n' "$placeholder"; return 0; fi
  "$@"
}

exists() {
  if dry_run; then _print_dry "$@"; [ "${DRY_RUN_EXISTING:-0}" = 1 ]; return; fi
  "$@" >/dev/null 2>&1
}

check_login() {
  local message=$1
  shift
  if dry_run; then _print_dry "$@"; return 0; fi
  "$@" >/dev/null 2>&1 || die "$message"
}

require_cli() {
  dry_run && return 0
  command -v "$1" >/dev/null 2>&1 || die "$2"
}

project_python() {
  PYTHON=${PYTHON:-$(cd "$DEPLOY_LIB_DIR/.." && pwd)/.venv/bin/python}
  command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=$(command -v python3 || true)
  [ -n "$PYTHON" ] || die "python3 is needed to assemble the bundle"
}

check_runtime() {
  local status=0 python=${PYTHON:-python3}
  command -v "$python" >/dev/null 2>&1 || python=python3
  command -v "$python" >/dev/null 2>&1 || die "python3 is needed to check the runtime's end of life"
  "$python" "$DEPLOY_LIB_DIR/runtimes.py" check "$1" "$2" || status=$?
  [ "$status" = 0 ] || die "refusing to deploy on runtime '$2' (see above)"
}
