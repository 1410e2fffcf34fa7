#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 / Raspberry Pi OS bookworm machine (Python 3.11):
# the OS packages the project needs, a virtual environment in .venv with the kiosk
# installed (editable) plus the extras named as arguments (dev, bench, pi), and the
# verified model files. Safe to run again: it only does what is not done yet.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
extras=$(IFS=,; echo "$*")

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The audit-sync tests (the dev extra) start a mosquitto and a PostgreSQL of their own,
# from Debian's binaries, on free loopback ports; a device running the kiosk needs neither.
services=()
case ",$extras," in *,dev,*)
    if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
        missing+=(mosquitto); services+=(mosquitto)
    fi
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
        missing+=(postgresql); services+=(postgresql)
    fi
    # The screen tests drive Debian's chromium headless through Playwright.
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    ;;
esac
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing OS packages: ${missing[*]}" >&2
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian starts a system mosquitto (port 1883) and PostgreSQL cluster (5432) on install;
# the tests never use them, so the ones installed just now are stopped and disabled.
if [ ${#services[@]} -gt 0 ] && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now "${services[@]}" >/dev/null 2>&1 || true
fi

if [ ! -x "$venv/bin/python" ]; then
    opts=()
    # On a Pi, picamera2 and libcamera come from Raspberry Pi OS's apt packages.
    if grep -qs 'Raspberry Pi' /proc/device-tree/model; then opts+=(--system-site-packages); fi
    python3 -m venv "${opts[@]}" "$venv"
fi

# Reinstall only when pyproject.toml or the requested extras changed.
stamp="$venv/.kiosk-installed"
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1) [$extras]"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    spec="$repo"; [ -n "$extras" ] && spec="$repo[$extras]"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
    echo "$want" > "$stamp"
fi

"$venv/bin/kiosk" models fetch
"$venv/bin/kiosk" samples fetch

# The fleet checks (ansible-lint, a real run of the device role) use a venv of their own,
# so Ansible's pins never meet the kiosk's.
case ",$extras," in *,dev,*)
    if [ -x "$repo/scripts/setup-ansible.sh" ]; then "$repo/scripts/setup-ansible.sh"; fi
    ;;
esac
