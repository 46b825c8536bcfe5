#!/usr/bin/env bash
# Installs the offline stand-ins the tests use, where this machine allows it. Anything that
# cannot be installed is left out: the tests that need it skip and say why.
set -u
cd "$(dirname "$0")/.."

if command -v npm >/dev/null 2>&1; then
  # The binaries, not the folder: an interrupted install leaves an empty node_modules behind.
  if [ ! -x node_modules/.bin/azurite ] || [ ! -x node_modules/.bin/pouchdb-server ] || [ package-lock.json -nt node_modules ]; then
    echo "test-deps: npm ci (Azurite, pouchdb-server)"
    npm ci --no-audit --no-fund --loglevel=error || echo "test-deps: npm ci failed; Azure and IBM tests will skip"
  fi
else
  echo "test-deps: npm not found; Azure and IBM tests will skip"
fi

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test-deps: apt-get install redis-server"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
      || echo "test-deps: could not install redis-server; Heroku tests will skip"
  else
    echo "test-deps: redis-server not found and not root; Heroku tests will skip"
  fi
fi

command -v gcloud >/dev/null 2>&1 || echo "test-deps: gcloud not found; Google Cloud tests will skip (its emulators are not on the package registries)"
exit 0
