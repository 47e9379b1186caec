#!/bin/sh
# Entrypoint of lastgood-demo/postgres:15.
#
# First start (empty data directory): initialise a cluster owned by the postgres user, with
# the superuser password taken from $POSTGRES_PASSWORD (handed to initdb in a 0600 file,
# never on a command line, where /proc/<pid>/cmdline would show it to everyone), password
# (scram-sha-256) authentication for TCP connections, and the database $POSTGRES_DB.
# Every start: exec the server as the postgres user, listening only on 127.0.0.1:$PG_PORT,
# so that it is PID 1 and receives `docker stop`'s signal itself.
set -eu

PGBIN=/usr/lib/postgresql/15/bin
PGDATA=/var/lib/postgresql/data
PG_PORT=${PG_PORT:-5432}
POSTGRES_DB=${POSTGRES_DB:-app}

log() { printf 'entrypoint: %s\n' "$*" >&2; }

case $PG_PORT in
  '' | *[!0-9]*) log "PG_PORT must be a port number, got '$PG_PORT'"; exit 1 ;;
esac
# The name is interpolated into SQL below: allow plain identifiers only.
case $POSTGRES_DB in
  '' | [0-9]* | *[!A-Za-z0-9_]*) log "POSTGRES_DB must be a plain identifier, got '$POSTGRES_DB'"; exit 1 ;;
esac

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups --reset-env -- "$@"; }

install -d -o postgres -g postgres -m 2775 /var/run/postgresql
mkdir -p "$PGDATA"

if [ -z "$(ls -A "$PGDATA")" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    log "the data directory is empty and POSTGRES_PASSWORD is not set"
    exit 1
  fi
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"

  umask 077
  pwfile=$(mktemp /tmp/pgpass.XXXXXX)
  trap 'rm -f "$pwfile"' EXIT
  # printf is a shell builtin: the password appears in no process's argument list.
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  chown postgres "$pwfile"
  log "initialising $PGDATA"
  as_postgres "$PGBIN/initdb" --pgdata="$PGDATA" --username=postgres --pwfile="$pwfile" \
    --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  trap - EXIT
  umask 022

  if [ "$POSTGRES_DB" != postgres ]; then
    # Single-user mode: no server, no socket, nothing to wait for.
    echo "CREATE DATABASE \"$POSTGRES_DB\";" |
      as_postgres "$PGBIN/postgres" --single -D "$PGDATA" postgres >/dev/null
  fi
  log "initialised; database $POSTGRES_DB created"
fi

# The server needs the password no more: keep it out of its environment.
unset POSTGRES_PASSWORD
exec setpriv --reuid=postgres --regid=postgres --init-groups -- \
  "$PGBIN/postgres" -D "$PGDATA" \
  -c listen_addresses=127.0.0.1 \
  -c port="$PG_PORT" \
  -c unix_socket_directories=/var/run/postgresql
