#!/usr/bin/env bash
# Brings a fresh machine to a working checkout: the pinned pnpm, Debian's redis-server, the
# workspace dependencies and the build. Safe to run again; it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*" >&2; }

node_version=$(node -p 'process.versions.node')
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  say "Node.js >= 20.19 is required (found $node_version)"
  exit 1
fi

pnpm_version=$(node -p 'require("./package.json").packageManager.split("@")[1]')
if [ "$(pnpm --version 2>/dev/null || true)" != "$pnpm_version" ]; then
  say "installing pnpm $pnpm_version"
  npm install -g --silent "pnpm@$pnpm_version"
fi

# Debian packages: redis-server for the embedded Redis, cmake and g++ for the native core.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (Debian packages)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "missing ${missing[*]} and this user cannot install them: apt-get install ${missing[*]}"
    exit 1
  fi
fi
# Optional: UCX (libucx-dev, with pkg-config to find it) for the cross-host LoRA transport
# (docs/rdma.md). The native core builds without it; then `--lora-transport auto` never picks UCX.
if ! pkg-config --exists ucx 2>/dev/null; then
  ucx_pkgs=(libucx-dev pkg-config)
  if [ "$(id -u)" = 0 ]; then
    say "installing ${ucx_pkgs[*]} (optional: the UCX transport)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${ucx_pkgs[@]}" >/dev/null) ||
      say "note: libucx-dev is not installable here; building without UCX"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    say "installing ${ucx_pkgs[*]} (optional: the UCX transport)"
    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${ucx_pkgs[@]}" >/dev/null) ||
      say "note: libucx-dev is not installable here; building without UCX"
  else
    say "note: no libucx-dev (apt-get install libucx-dev pkg-config for the UCX transport); building without UCX"
  fi
fi
# The package starts a system-wide instance; loramesh starts its own private ones instead.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  say "note: a system redis-server is running; loramesh does not use it unless REDIS_URL points at it"
fi

say "installing dependencies"
pnpm install --frozen-lockfile --reporter=silent
# nvcc is optional: with it the native core also compiles its CUDA kernels.
if command -v nvcc >/dev/null 2>&1; then say "nvcc found: the native core includes its CUDA kernels"; fi
say "building (native core, then TypeScript)"
build_log=$(mktemp)
if ! pnpm run --silent build >"$build_log" 2>&1; then
  cat "$build_log" >&2
  say "build failed"
  exit 1
fi
rm -f "$build_log"
