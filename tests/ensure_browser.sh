#!/usr/bin/env bash
# The reader's check of the book needs Debian's Chromium and playwright-core (npm) to drive it.
# Idempotent and quiet; run by `make test`. Installs nothing when both are present.
# playwright-core is unpacked from its npm tarball (`npm pack`, no install scripts), so no
# browser of its own is ever downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYWRIGHT_VERSION=1.60.0
PLAYWRIGHT_INTEGRITY="sha512-9bW6zvX/m0lEbgTKJ6YppOKx8H3VOPBMOCFh2irXFOT4BbHgrx5hPjwJYLT40Lu+4qtD36qKc/Hn56StUW57IA=="

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (apt) for the browser check ..."
  apt_install chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "installing nodejs and npm (apt) for the browser check ..."
  apt_install nodejs npm
fi

dest=node_modules/playwright-core
if [ "$(cat "$dest/.whypretrain-version" 2>/dev/null)" != "$PLAYWRIGHT_VERSION" ]; then
  echo "fetching playwright-core@$PLAYWRIGHT_VERSION (npm pack) ..."
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null)
  tgz=$(ls "$tmp"/playwright-core-*.tgz)
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$PLAYWRIGHT_INTEGRITY" ]; then
    echo "playwright-core@$PLAYWRIGHT_VERSION: integrity mismatch" >&2
    exit 1
  fi
  rm -rf "$dest" && mkdir -p "$dest"
  tar xzf "$tgz" -C "$dest" --strip-components=1
  echo "$PLAYWRIGHT_VERSION" > "$dest/.whypretrain-version"
fi
