#!/bin/sh
# One-shot step before the app and the workers start (compose service `prestart`):
# wait for the database, upgrade the schema (`repic db upgrade`), pull the configured model
# weights (`repic models pull`), and check that the shared
# volumes are writable by this image's user, so a wrong volume owner fails here, loudly,
# instead of in the middle of a training run.
set -eu

tries=${PRESTART_DB_TRIES:-30}
i=1
until repic db current >/dev/null 2>&1; do
    if [ "$i" -ge "$tries" ]; then
        echo "prestart: database not reachable after $tries tries; last error:" >&2
        repic db current >&2 || true
        exit 1
    fi
    echo "prestart: waiting for the database ($i/$tries)"
    i=$((i + 1))
    sleep 2
done

repic db upgrade

if [ "${REPIC_PULL_MODELS:-1}" = "1" ]; then
    # Idempotent: only what is missing from the models volume is downloaded (resumable).
    repic models pull
fi

for dir in "${REPIC_STORAGE__DATA_DIR:-/data}" "${REPIC_TRAINING__ADAPTERS_DIR:-/data/adapters}"; do
    mkdir -p "$dir" 2>/dev/null || true
    if [ ! -w "$dir" ]; then
        echo "prestart: $dir is not writable by uid $(id -u); fix the volume owner with:" >&2
        echo "  docker compose run --rm --user 0 prestart chown -R $(id -u):$(id -g) $dir" >&2
        exit 1
    fi
done
echo "prestart: schema upgraded, volumes writable"
