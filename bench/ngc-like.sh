#!/usr/bin/env bash
# Build, once, the images the Gantry benchmarks use, as OCI image layouts (tag "bench"):
#
#   $CACHE/ngc-like   an "NGC-like" image: a Debian bookworm root filesystem (mmdebstrap,
#                     variant apt) with python3, numpy, scipy, gcc, g++, gfortran, make,
#                     OpenBLAS, LLVM and perl -- about 1.2 GB unpacked -- split by
#                     directory into 13 gzip layers (base, etc, var, bin, include, docs, share,
#                     gcc, llvm, blas, libs, python stdlib, python dist-packages).
#   $CACHE/busybox    a 2 MB, one-layer image: /bin/busybox (busybox-static) and its applets.
#
# CACHE is ${GANTRY_BENCH_CACHE:-<repo>/.cache/bench}. Each step is cached under a key made
# of its inputs (package list, layer plan, bench/mkoci.py, the busybox binary): a second run
# is instant, a changed input rebuilds only what depends on it. NAME.info.json next to each
# layout holds its size figures (layers, compressed bytes, file bytes, per-layer detail).
#
# Usage: bash bench/ngc-like.sh [--force] [--quiet]
#   --force   rebuild the layouts (the mmdebstrap tarball stays cached; delete it to redo it)
# Needs: mmdebstrap (root, or unprivileged with uidmap for --mode=unshare), pigz, /usr/bin/python3,
# busybox-static, and a Debian mirror (NGC_LIKE_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${GANTRY_BENCH_CACHE:-$REPO/.cache/bench}
MIRROR=${NGC_LIKE_MIRROR:-http://deb.debian.org/debian}
PY=/usr/bin/python3
BUSYBOX_BIN=${BUSYBOX_BIN:-/bin/busybox}
LEVEL=${NGC_LIKE_GZIP_LEVEL:-6}   # gzip's default, as `docker push` / buildkit use

FORCE=0 QUIET=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    --quiet|-q) QUIET=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "ngc-like.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { [[ $QUIET == 1 ]] || echo "ngc-like.sh: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "ngc-like.sh: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need mmdebstrap mmdebstrap; need pigz pigz; need "$PY" python3; need "$BUSYBOX_BIN" busybox-static
key() { sha256sum | cut -c1-16; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

SUITE=bookworm
VARIANT=apt
APTOPT='APT::Install-Recommends "false"'
# scipy pulls in pythran and with it the Boost headers (130 MB); matplotlib would pull in sympy
# (120 MB) and pandas another 85 MB: left out to stay near 1 GB.
PACKAGES=(
  python3 python3-numpy python3-scipy
  gcc g++ gfortran make libopenblas-dev llvm perl
)
# NAME=PREFIX[,PREFIX...]: a path goes to the layer with the longest matching prefix, else to
# the implicit first layer "base" (the top-level directories, usr/lib's remainder, ...).
# shellcheck disable=SC2054  # the commas are inside the words, not between elements
LAYERS=(
  etc=etc
  var=var
  bin=usr/bin,usr/sbin
  include=usr/include
  docs=usr/share/doc,usr/share/locale,usr/share/man,usr/share/info
  share=usr/share
  gcc=usr/lib/gcc,usr/libexec
  llvm=usr/lib/llvm-14
  blas=usr/lib/x86_64-linux-gnu/openblas-pthread,usr/lib/x86_64-linux-gnu/blas,usr/lib/x86_64-linux-gnu/lapack
  libs=usr/lib/x86_64-linux-gnu
  python-stdlib=usr/lib/python3.11
  python-dist=usr/lib/python3
)

mkdir -p "$CACHE"
# one builder at a time (import.sh calls this script too); a read-only cache needs no lock
if [[ -w $CACHE ]]; then exec 9>>"$CACHE/.lock"; flock 9; fi
T0=$(now)

# 1. the root filesystem tarball (the slow step: downloads ~250 MB of packages)
ROOTFS_KEY=$(printf '%s\n' "$SUITE" "$VARIANT" "$APTOPT" "${PACKAGES[@]}" | key)
ROOTFS=$CACHE/ngc-like-rootfs-$ROOTFS_KEY.tar
if [[ ! -s $ROOTFS ]]; then
  log "building the root filesystem with mmdebstrap (a few minutes) -> $ROOTFS"
  t=$(now)
  rm -f "$ROOTFS.part.tar"
  mmdebstrap --variant="$VARIANT" --aptopt="$APTOPT" --include="$(IFS=,; echo "${PACKAGES[*]}")" \
    "$SUITE" "$ROOTFS.part.tar" "$MIRROR" </dev/null >"$CACHE/mmdebstrap.log" 2>&1 \
    || { tail -20 "$CACHE/mmdebstrap.log" >&2; echo "ngc-like.sh: mmdebstrap failed (log: $CACHE/mmdebstrap.log)" >&2; exit 1; }
  mv "$ROOTFS.part.tar" "$ROOTFS"
  log "root filesystem built in $(elapsed "$t") s ($(du -h "$ROOTFS" | cut -f1))"
fi

# build_layout NAME KEY CMD...: run CMD (mkoci.py) into $CACHE/NAME unless its stamp matches KEY
build_layout() {
  local name=$1 k=$2; shift 2
  local out=$CACHE/$name
  if [[ $FORCE == 0 && -f $out.stamp && $(cat "$out.stamp") == "$k" && -f $out/index.json ]]; then
    log "$name: cached ($out)"
    return
  fi
  log "$name: building the OCI layout -> $out"
  local t; t=$(now)
  rm -rf "$out" "$out.parts" "$out.stamp" "$out.info.json"
  "$@" "$out" >/dev/null
  echo "$k" >"$out.stamp"
  log "$name: built in $(elapsed "$t") s"
}

# 2. the NGC-like layout
MKOCI_KEY=$(key <"$HERE/mkoci.py")
NGC_KEY=$( { echo "$ROOTFS_KEY $MKOCI_KEY $LEVEL"; printf '%s\n' "${LAYERS[@]}"; } | key)
layer_args=()
for l in "${LAYERS[@]}"; do layer_args+=(--layer "$l"); done
build_layout ngc-like "$NGC_KEY" "$PY" "$HERE/mkoci.py" split --tag bench --level "$LEVEL" "${layer_args[@]}" "$ROOTFS"

# 3. the busybox layout
BB_KEY=$( { echo "$MKOCI_KEY"; sha256sum <"$BUSYBOX_BIN"; } | key)
build_layout busybox "$BB_KEY" "$PY" "$HERE/mkoci.py" busybox --tag bench "$BUSYBOX_BIN"

if [[ $QUIET == 0 ]]; then
  "$PY" - "$CACHE" <<'EOF' >&2
import json, sys
for name in ('ngc-like', 'busybox'):
    i = json.load(open(f'{sys.argv[1]}/{name}.info.json'))
    print(f"ngc-like.sh: {name}: {i['layers']} layers, {i['compressedBytes']/1e6:.1f} MB compressed, "
          f"{i['fileBytes']/1e6:.1f} MB unpacked ({i['entries']} entries) -> oci:{sys.argv[1]}/{name}:{i['tag']}")
EOF
  log "done in $(elapsed "$T0") s"
fi
