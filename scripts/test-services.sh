#!/usr/bin/env bash
# Make sure the services the tests use are present and running (idempotent).
set -uo pipefail

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "installing chromium + chromium-driver (Debian packages) for the browser tests"
  as_root apt-get update -qq && as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if ! command -v exiftool >/dev/null 2>&1; then
  echo "installing exiftool (Debian package libimage-exiftool-perl) for the XMP tests"
  as_root apt-get update -qq && as_root apt-get install -y -qq libimage-exiftool-perl >/dev/null
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /tmp || true
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
exit 0
