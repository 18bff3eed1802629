#!/usr/bin/env bash
# The application host of the drills (the lab's client namespace): psql, ping, the node names,
# and the connection settings of the drill user for login shells (PGHOST is the VIP).
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

missing=()
for p in postgresql-client-15 iputils-ping iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "client: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
hosts_file | write_if_changed /etc/hosts 0644 || true
write_if_changed /etc/profile.d/hodr-drill.sh 0644 <<EOP || true
# managed by vagrant/provision/client.sh: the drills' database, through the VIP
export PGHOST=$HODR_VIP PGPORT=5432 PGDATABASE=$DB PGUSER=app PGPASSWORD=app PGCONNECT_TIMEOUT=2
EOP
log "client: psql reaches the primary as: psql -h $HODR_VIP -U app $DB (password app)"
