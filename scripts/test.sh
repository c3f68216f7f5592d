#!/usr/bin/env bash
# The README's test command: every tier, installing what it can first.
#
# As root on Debian/Ubuntu it installs redis-server, postgresql and chromium (what the
# integration and browser tiers need); otherwise it says what is missing and the test
# run ends by naming the tiers that were skipped (tests/conftest.py). It creates .venv
# with scripts/setup.sh if there is none. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null \
    || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "installing ${need[*]} with apt-get (integration and browser tiers)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "note: ${need[*]} missing and not root: those tiers will be skipped;" \
             "install with: sudo apt-get install ${need[*]}" >&2
    fi
fi

[ -x .venv/bin/python ] || bash scripts/setup.sh

exec .venv/bin/python -m pytest -q "$@"
