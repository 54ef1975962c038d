#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: Debian packages (scripts/apt-packages.txt) and a Python
# virtualenv with the peers we test against (scripts/requirements-peers.txt). Idempotent; quick when all is present.
# Prints the virtualenv's bin directory on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r pkg; do
  pkg="${pkg%%#*}"; pkg="$(echo "$pkg" | xargs)"
  [ -z "$pkg" ] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < scripts/apt-packages.txt
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

venv="${RAMPART_PEERS_VENV:-$HOME/.cache/rampart/venv-peers}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum scripts/requirements-peers.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: preparing the peers' virtualenv in $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-peers.txt >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin"
