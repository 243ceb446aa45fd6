#!/usr/bin/env bash
# Screenshots of every page, with data on it, at 1280 and 390 px wide, for reviewers: the
# browser test that tours every page (tests/browser/test_every_page.py) saves one full-page
# PNG per page and width when REPIC_SCREENSHOTS_DIR is set. Output: screenshots/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
OUT=${1:-screenshots}
scripts/test-services.sh   # Chromium
scripts/fetch-axe.sh       # the tour checks accessibility as it goes
rm -rf "$OUT"
mkdir -p "$OUT"
status=0
HF_HUB_OFFLINE=1 REPIC_SCREENSHOTS_DIR="$(pwd)/$OUT" \
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/browser/test_every_page.py || status=$?
echo "$(find "$OUT" -name '*.png' | wc -l) screenshots in $OUT/"
# The screenshots are written before the tour's checks fail, so a reviewer sees what failed.
exit $status
