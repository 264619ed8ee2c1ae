#!/usr/bin/env bash
# Installs what a clean machine lacks for this project: Deno (from npm), GNU
# time, Open MPI, a headless Chromium and, unless WebGPU finds a hardware GPU,
# Mesa's software Vulkan driver, so that WebGPU runs the workers in parallel
# (through Vulkan, not GL).
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

# 2. GNU time, with which the tests measure a refused run's peak memory (tests/memory_test.ts).
if [ ! -x /usr/bin/time ]; then
  echo "setup: installing GNU time (the tests measure peak memory with it)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq time >/dev/null || echo "setup: could not install GNU time; the peak-memory tests will be ignored"
fi

# 3. Open MPI, for the MPI process group's tests (tests/mpi_test.ts): mpirun and libmpi.so.40.
if ! command -v mpirun >/dev/null 2>&1 || ! mpirun --version 2>/dev/null | grep -q "Open MPI"; then
  echo "setup: installing Open MPI (the MPI process group's tests run under mpirun)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null ||
    echo "setup: could not install Open MPI; the MPI tests will be ignored"
fi

# 4. A real browser, for the dashboard's test (tests/dashboard_test.ts): chromium-headless-shell.
if ! command -v chromium-headless-shell >/dev/null 2>&1; then
  echo "setup: installing chromium-headless-shell (the dashboard is tested in a real browser)"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq chromium-headless-shell >/dev/null ||
    echo "setup: could not install chromium-headless-shell; the browser test will be ignored"
fi

# 5. A WebGPU adapter that runs workers in parallel. Deno's WebGPU reaches Mesa's
#    software rasteriser (llvmpipe) through GL or, with Mesa's Vulkan driver,
#    through Vulkan; through GL the workers' GPU work is serialised (2 workers:
#    0.98x one worker's throughput, against 1.95x through Vulkan). So unless a
#    hardware GPU is found, make sure Mesa's Vulkan driver is there and WebGPU
#    finds its adapter through Vulkan -- not only when no adapter exists at all.
probe_webgpu() { # $1: the path to try (vulkan, gl), or "" for WebGPU's own pick
  local path=(env -u DENO_WEBGPU_BACKEND) # an empty DENO_WEBGPU_BACKEND would select no path at all
  if [ -n "$1" ]; then path=(env DENO_WEBGPU_BACKEND="$1"); fi
  "${path[@]}" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/nonexistent}" deno eval --quiet \
    'const a = await navigator.gpu?.requestAdapter(); if (!a) Deno.exit(1); const i = a.info;
     console.log(`${i.description || i.vendor}\t${i.isFallbackAdapter ? "software" : "hardware"}`);' \
    2>/dev/null
}
is_software() { case "$1" in *llvmpipe* | *lavapipe* | *softpipe* | *SwiftShader* | *software*) return 0 ;; esac; return 1; }

found="$(probe_webgpu vulkan || true)"
if [ -z "$found" ]; then
  other="$(probe_webgpu "" || true)"
  if [ -n "$other" ] && [ "${other##*$'\t'}" = hardware ] && ! is_software "${other%%$'\t'*}"; then
    echo "setup: WebGPU adapter: ${other%%$'\t'*} (hardware)"
    exit 0
  fi
  if [ -n "$other" ]; then
    echo "setup: WebGPU finds only ${other%%$'\t'*} through GL, which serialises workers; installing Mesa's software Vulkan driver (lavapipe)"
  else
    echo "setup: no WebGPU adapter; installing Mesa's software Vulkan driver (lavapipe)"
  fi
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 libgl1-mesa-dri libegl1 >/dev/null
  found="$(probe_webgpu vulkan || true)"
  if [ -z "$found" ]; then
    echo "setup: still no WebGPU adapter through Vulkan after installing Mesa's Vulkan driver" >&2
    exit 1
  fi
fi
echo "setup: WebGPU adapter: ${found%%$'\t'*} through Vulkan"
