#!/usr/bin/env bash
# Start what the tests need (Chromium, PostgreSQL, Redis), then run the suite twice:
# everything on SQLite, then every database-touching test on PostgreSQL.
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

echo "== pytest on SQLite =="
"$PY" -m pytest "$@"

if [[ "${REPIC_TEST_POSTGRES:-1}" == "1" ]]; then
  echo "== pytest on PostgreSQL ($PG_URL) =="
  REPIC_TEST_DATABASE_URL="$PG_URL" "$PY" -m pytest -m "not nodb" "$@"
fi
