# Shared by the project's scripts: cache locations and idempotent installs.
# Everything installed lands under ~/.cache/infermesh (override with INFERMESH_CACHE) and is
# reused when present; the cargo target dir lives there too, outside the clone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${INFERMESH_CACHE:-$HOME/.cache/infermesh}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
mkdir -p "$CACHE"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ensure_venv NAME REQUIREMENTS_FILE CHECK_IMPORT: a venv under the cache, (re)installed when
# the requirements file changed or the import check fails.
ensure_venv() {
  local name=$1 req=$2 check=$3
  local venv="$CACHE/$name" stamp
  stamp="$(sha256sum "$req" | cut -c1-16)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.infermesh-req" 2>/dev/null)" = "$stamp" ] \
     && "$venv/bin/python" -c "$check" 2>/dev/null; then
    return 0
  fi
  log "installing $name (once; cached in $venv)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -r "$req"
  echo "$stamp" > "$venv/.infermesh-req"
}

# apt_install PKG...: Debian packages (apt-get update first only when the install fails on a
# stale index); sudo when not root.
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Installs run side by side (test.sh starts several while cargo builds): each waits for
  # dpkg's lock instead of failing on it.
  local wait=(-o DPkg::Lock::Timeout=900)
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -q "$@" >/dev/null \
    || { $sudo apt-get "${wait[@]}" update -q >/dev/null \
      && $sudo env DEBIAN_FRONTEND=noninteractive apt-get "${wait[@]}" install -y -q "$@" >/dev/null; }
}

# ensure_build_tools: what building LightGBM (lightgbm3-sys, linked by the training jobs)
# needs beyond the machine's toolchain: CMake >= 3.28 (Debian bookworm has 3.25; pip's cmake
# into venv-build, exported as CMAKE) and libclang for its bindings (Debian's libclang-dev).
ensure_build_tools() {
  ensure_venv venv-build "$ROOT/scripts/req/build-tools.txt" 'import cmake'
  export CMAKE="$CACHE/venv-build/bin/cmake"
  # librdkafka (rdkafka's cmake-build, linked by the Kafka pipelines) includes curl's and
  # SASL's headers even with those features off.
  if [ ! -f /usr/include/x86_64-linux-gnu/curl/curl.h ] && [ ! -f /usr/include/curl/curl.h ] \
     || [ ! -f /usr/include/sasl/sasl.h ]; then
    log "installing libcurl4-openssl-dev and libsasl2-dev (Debian; for librdkafka)"
    apt_install libcurl4-openssl-dev libsasl2-dev zlib1g-dev libssl-dev
  fi
  if ! ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1; then
    log "installing libclang-dev (Debian; for LightGBM's bindings)"
    apt_install libclang-dev
  fi
}
ensure_build_tools

# ensure_chromium: Debian's chromium (/usr/bin/chromium) for the tests that open the HTML drift
# report headless; about 45 s to install once.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  log "installing chromium (Debian; for the HTML report test)"
  apt_install chromium
}

# ensure_nisshi: nisshi (crates.io; tansu's successor), the Kafka-protocol broker the streaming
# pipelines' end-to-end tests and bench/stream.sh start on a free port, with its memory storage
# engine. 0.6.0 is the last release that builds with this machine's rustc 1.95
# (0.7+ need rama 0.4, rustc 1.96); it answers a fetch as soon as records are there, where tansu
# 0.6 sleeps the whole fetch.wait.max.ms (BENCHMARKS.md, Streaming). Built once into $CACHE/bin
# (a release build of several hundred crates: run it in the background while the project builds);
# its own target dir is removed afterwards.
NISSHI_VERSION=0.6.0
ensure_nisshi() {
  local bin="$CACHE/bin/nisshi"
  if [ -x "$bin" ] && [ "$(cat "$CACHE/bin/.nisshi-version" 2>/dev/null)" = "$NISSHI_VERSION" ]; then
    return 0
  fi
  log "building nisshi $NISSHI_VERSION (once; cached in $CACHE/bin)"
  mkdir -p "$CACHE/bin"
  CARGO_TARGET_DIR="$CACHE/nisshi-build" nice -n 10 cargo install nisshi --version "$NISSHI_VERSION" \
    --no-default-features --features dynostore --locked --root "$CACHE/nisshi-root" --force
  cp "$CACHE/nisshi-root/bin/nisshi" "$bin.tmp" && mv "$bin.tmp" "$bin"
  echo "$NISSHI_VERSION" > "$CACHE/bin/.nisshi-version"
  rm -rf "$CACHE/nisshi-build"
}

# Prometheus and promtool (Debian `prometheus`): the alert and recording rules' checks.
ensure_prometheus() {
  command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 && return 0
  log "installing prometheus and alertmanager (Debian; promtool and amtool for the checks)"
  apt_install prometheus prometheus-alertmanager
}
