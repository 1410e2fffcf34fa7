#!/usr/bin/env bash
# Idempotent set-up of the fleet tooling: a virtual environment of its own in .venv-ansible
# with pinned ansible-core and ansible-lint, so Ansible's pins never meet the kiosk's.
# The roles use ansible.builtin only: no collection is installed, nothing is fetched from
# a collection server. Safe to run again: it reinstalls only when the pins below change.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv-ansible"
pins=(
    "ansible-core==2.19.14"
    "ansible-lint==26.10.1"
)

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "setup-ansible: python3-venv is missing; run scripts/setup.sh first" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi

stamp="$venv/.ansible-installed"
want="${pins[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup-ansible: installing ${pins[*]} into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}"
    echo "$want" > "$stamp"
fi
