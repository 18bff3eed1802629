#!/usr/bin/env bash
# The Debian packages ./run setup installs (same list, kept equal by tests/unit/test_vagrant_files.py),
# plus python3-venv for hodr's virtualenv and iptables for the isolation drill.
# Like ./run, packages must not start services with Debian's defaults (a one-node corosync, an
# empty pacemaker): policy-rc.d refuses starts during the install; later steps start what is needed.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

APT_PACKAGES=(postgresql-15 postgresql-client-15 pacemaker pacemaker-cli-utils corosync pcs crmsh
  resource-agents fence-agents libxml2-utils iproute2 iputils-ping util-linux procps)
VM_PACKAGES=(python3-venv iptables openssh-client)

missing=()
for p in "${APT_PACKAGES[@]}" "${VM_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  log "packages: all installed"
  exit 0
fi
log "packages: installing ${missing[*]}"
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "packages: done"
