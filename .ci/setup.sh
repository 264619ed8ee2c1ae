#!/usr/bin/env bash
# Installs what a clean machine lacks for this project: Deno (from npm) and,
# when no WebGPU adapter is found, Mesa's software Vulkan driver.
# Usage: bash .ci/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6

# 1. Deno, from npm (the package ships the binary).
if ! command -v deno >/dev/null 2>&1 || ! deno --version | head -n1 | grep -q "^deno ${DENO_VERSION} "; then
  echo "setup: installing deno@${DENO_VERSION} from npm"
  npm install -g "deno@${DENO_VERSION}"
fi
deno --version | head -n1

# 2. A WebGPU adapter. Without a GPU, Mesa's software drivers provide one.
probe_webgpu() {
  XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/nonexistent}" deno eval --quiet \
    'const a = await navigator.gpu?.requestAdapter(); if (!a) Deno.exit(1); console.log(`setup: WebGPU adapter: ${a.info.description || a.info.vendor}`);' \
    2>/dev/null
}
if ! probe_webgpu; then
  echo "setup: no WebGPU adapter; installing Mesa's software Vulkan driver (lavapipe)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 libgl1-mesa-dri libegl1 >/dev/null
  if ! probe_webgpu; then
    echo "setup: still no WebGPU adapter after installing Mesa" >&2
    exit 1
  fi
fi
