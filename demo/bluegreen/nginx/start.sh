#!/bin/sh
# Writes the listen directive from NGINX_PORT (nginx itself reads no environment variables),
# then runs nginx in the foreground as PID 1.
set -eu
port=${NGINX_PORT:-18090}
case "$port" in
  '' | *[!0-9]*) echo "lastgood-nginx: NGINX_PORT must be a port number, got '$port'" >&2; exit 2 ;;
esac
mkdir -p /run/lastgood-nginx
printf 'listen 127.0.0.1:%s;\n' "$port" >/run/lastgood-nginx/listen.conf
exec nginx -g 'daemon off;'
