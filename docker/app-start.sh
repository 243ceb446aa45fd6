#!/bin/sh
# Start the app's uvicorn workers in prometheus_client's multiprocess mode (app/metrics.py):
# every worker writes its counters and histograms under one directory, emptied at each start,
# and /metrics sums them, whichever worker answers the scrape.
set -eu
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/repic-metrics}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
exec "$@"
