#!/bin/sh
# docker-compose.yml's one-shot schema job (temporalio/admin-tools): Temporal's two PostgreSQL databases with the
# schema of the image's server version, as scripts/cluster/postgres.ts does locally. Safe to run again: the tool
# keeps an existing database, setup-schema skips a schema that is already newer, and update-schema applies only
# the versions missing. The tool logs every statement, so its output is shown only when a step fails.
set -eu
: "${SQL_PASSWORD:?}"
export SQL_PLUGIN=postgres12 SQL_HOST="${SQL_HOST:-postgresql}" SQL_PORT="${SQL_PORT:-5432}" SQL_USER="${SQL_USER:-temporal}"
schema=${SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}
log=$(mktemp)

step() {
  if ! temporal-sql-tool "$@" >"$log" 2>&1; then
    tail -n 20 "$log"
    echo "temporal-sql-tool $* failed"
    exit 1
  fi
}

for pair in "${DBNAME:-temporal}:temporal" "${VISIBILITY_DBNAME:-temporal_visibility}:visibility"; do
  db=${pair%%:*}
  dir=${pair#*:}
  step --db "$db" create-database
  step --db "$db" setup-schema -v 0.0
  step --db "$db" update-schema -d "$schema/$dir/versioned"
  echo "database $db has the schema of this server version"
done
