#!/usr/bin/env bash
# PostgreSQL 15 on this node: Debian's cluster 15/main, logical decoding on, the database `app`
# with the drill table, and two roles:
# - hodr: hodr's capture (primary) and applier (standby), over the Unix socket, peer
#   authentication of the OS user root (the daemon runs as root under Pacemaker) mapped to hodr.
#   Superuser: CREATE PUBLICATION FOR ALL TABLES, ALTER SYSTEM synchronous_standby_names,
#   session_replication_role.
# - app: the drills' client, through the VIP over TCP (password, private network only).
# Every node gets the same schema; node1 (role: primary) holds the data, hodr copies it.
# After provisioning the cluster is started and stopped by hodr-replica (the `services:` entry of
# hodr.yml), not at boot: start.conf says manual (docs/replica-agent.md "Services").
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

CONF_DIR=/etc/postgresql/$PG_VERSION/$PG_CLUSTER
UNIT=postgresql@$PG_VERSION-$PG_CLUSTER
if ! pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c {f=1} END {exit !f}'; then
  log "postgres: creating cluster $PG_VERSION/$PG_CLUSTER"
  pg_createcluster "$PG_VERSION" "$PG_CLUSTER"
fi

changed=0
install -d -o postgres -g postgres -m 0755 "$CONF_DIR/conf.d"
# listen on every address: the node's own for hodr's peers and admins, and the VIP, which
# arrives later on whichever node is primary (pg_hba below admits the private network only).
write_if_changed "$CONF_DIR/conf.d/hodr.conf" 0644 <<EOC && changed=1
# managed by vagrant/provision/30-postgres.sh
listen_addresses = '*'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
drill.node = '$HODR_NODE'
EOC
write_if_changed "$CONF_DIR/pg_hba.conf" 0640 <<EOC && changed=1
# managed by vagrant/provision/30-postgres.sh (first match wins)
local   all             postgres                                peer
local   all             hodr                                    peer map=hodr
local   replication     hodr                                    peer map=hodr
local   all             all                                     peer
host    $DB             app             ${HODR_VIP%.*}.0/$HODR_PREFIX_LEN        scram-sha-256
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
EOC
write_if_changed "$CONF_DIR/pg_ident.conf" 0640 <<EOC && changed=1
# managed by vagrant/provision/30-postgres.sh: OS user root (the hodr daemon) is database user hodr
hodr            root                    hodr
EOC
chown postgres:postgres "$CONF_DIR/pg_hba.conf" "$CONF_DIR/pg_ident.conf"

echo manual | write_if_changed "$CONF_DIR/start.conf" 0644 || true
if ((changed)) || ! systemctl is-active --quiet "$UNIT"; then
  log "postgres: (re)starting $UNIT"
  systemctl restart "$UNIT"
fi
wait_for 60 "PostgreSQL to accept connections" pg_isready -q -h "$PG_SOCKET" -p 5432

psql_as_postgres -d postgres <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hodr') THEN
    CREATE ROLE hodr LOGIN SUPERUSER REPLICATION;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN
    CREATE ROLE app LOGIN;
  END IF;
END $$;
SET password_encryption = 'scram-sha-256';
ALTER ROLE app PASSWORD 'app';  -- drills only: a throwaway password on a private network
SELECT 'CREATE DATABASE app OWNER hodr' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'app')
\gexec
SQL
# On a standby hodr makes the database read-only for new sessions: switch that off for this one.
psql_as_postgres -d "$DB" <<'SQL'
SET default_transaction_read_only = off;
CREATE SCHEMA IF NOT EXISTS hodr AUTHORIZATION hodr;
CREATE TABLE IF NOT EXISTS public.drill (
    id bigint PRIMARY KEY,                                    -- the client's id (ms since the epoch)
    at timestamptz NOT NULL DEFAULT clock_timestamp(),        -- commit time on the primary
    written_on text DEFAULT current_setting('drill.node', true)  -- which node was primary
);
GRANT SELECT, INSERT ON public.drill TO app;
SQL
log "postgres: $UNIT up, database $DB ready"
