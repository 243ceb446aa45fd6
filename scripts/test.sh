#!/usr/bin/env bash
# Start what the tests need (Chromium, PostgreSQL, Redis), then run the suite twice, at the
# same time: everything on SQLite, and every database-touching test on PostgreSQL. Much of
# the suite waits on subprocesses, sockets and a browser, so two passes side by side take
# far less wall time than one after the other on 2 cores. Each pass writes its own log,
# printed when it ends; the exit status fails if either pass fails.
# REPIC_TEST_SERIAL=1 runs the passes one after the other (output streamed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PG_URL=${REPIC_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}

scripts/test-services.sh
scripts/fetch-axe.sh   # axe-core for the browser tests' accessibility checks (pinned)

echo "== lint (ruff, mypy) =="
"$VENV/bin/ruff" check app worker trainer tests bench
"$VENV/bin/mypy" app worker trainer

sqlite_pass() { "$PY" -m pytest "$@"; }
postgres_pass() { REPIC_TEST_DATABASE_URL="$PG_URL" "$PY" -m pytest -m "not nodb" "$@"; }

if [[ "${REPIC_TEST_POSTGRES:-1}" != "1" ]]; then
  echo "== pytest on SQLite =="
  sqlite_pass "$@"
  exit 0
fi
if [[ "${REPIC_TEST_SERIAL:-0}" == "1" ]]; then
  echo "== pytest on SQLite =="
  sqlite_pass "$@"
  echo "== pytest on PostgreSQL ($PG_URL) =="
  postgres_pass "$@"
  exit 0
fi

logs=$(mktemp -d)
echo "== pytest on SQLite and on PostgreSQL ($PG_URL), side by side =="
started=$SECONDS
sqlite_pass "$@" >"$logs/sqlite.log" 2>&1 & sqlite_pid=$!
postgres_pass "$@" >"$logs/postgres.log" 2>&1 & postgres_pid=$!
status=0
wait "$sqlite_pid" || status=$?
echo "== pytest on SQLite (done after $((SECONDS - started)) s) =="
cat "$logs/sqlite.log"
postgres_status=0
wait "$postgres_pid" || postgres_status=$?
echo "== pytest on PostgreSQL (done after $((SECONDS - started)) s) =="
cat "$logs/postgres.log"
rm -rf "$logs"
if [[ $status -ne 0 || $postgres_status -ne 0 ]]; then
  echo "FAILED: SQLite pass exit $status, PostgreSQL pass exit $postgres_status"
  exit 1
fi
