#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run all tests.
# Used as-is by CI (.ci/run) and given in the README.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if ! command -v chromium >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
    fi
fi

python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'

python -m ruff check .
python -m pytest -q -p no:cacheprovider "$@"
