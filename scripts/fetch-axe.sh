#!/usr/bin/env bash
# Fetch axe-core (the accessibility checker the browser tests inject into every page) into a
# git-ignored folder, pinned by version and by the registry's sha512; idempotent, no node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
AXE_VERSION=4.14.1
AXE_SHA512=FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==
DEST=.test-assets/axe-core-$AXE_VERSION
[[ -f $DEST/axe.min.js ]] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball=axe-core-$AXE_VERSION.tgz
if command -v npm >/dev/null 2>&1; then
  npm pack --silent "axe-core@$AXE_VERSION" --pack-destination "$tmp" >/dev/null
else
  curl -fsSL -o "$tmp/$tarball" "https://registry.npmjs.org/axe-core/-/$tarball"
fi
got=$(openssl dgst -sha512 -binary "$tmp/$tarball" | openssl base64 -A)
if [[ $got != "$AXE_SHA512" ]]; then
  echo "axe-core $AXE_VERSION: sha512 $got, expected $AXE_SHA512" >&2
  exit 1
fi
tar -xzf "$tmp/$tarball" -C "$tmp" package/axe.min.js package/LICENSE
mkdir -p "$DEST"
mv "$tmp/package/axe.min.js" "$tmp/package/LICENSE" "$DEST/"
echo "axe-core $AXE_VERSION in $DEST"
