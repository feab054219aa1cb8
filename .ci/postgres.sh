#!/usr/bin/env bash
# Install Debian's PostgreSQL if missing and start a throwaway cluster on loopback for the tests.
# Prints the database URL on its last line; the cluster lives in a temporary folder and is
# stopped when the calling shell exits (see .ci/run's trap).
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
data=$(mktemp -d /tmp/tuneloom-ci-pg.XXXXXX)
chown postgres: "$data"
port=${TUNELOOM_CI_PG_PORT:-55439}
su postgres -c "$bin/initdb -D $data -A trust -U postgres --no-sync" >&2
su postgres -c "$bin/pg_ctl -D $data -l $data/server.log -w -o '-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off' start" >&2
echo "$data"
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
