#!/bin/bash
# Dev aid: compare gantry-untar with GNU tar -x on the same uncompressed tar, on a tmpfs.
#   native/test/bench.sh [TAR] [ROUNDS]
# Without TAR, builds one from /usr (minus a few huge trees) under $BENCH_DIR (default /dev/shm/gantry-bench).
# Prints every run (wall, user, sys) and the best wall time of each tool.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${GANTRY_UNTAR:-$here/../build/Release/gantry-untar}
dir=${BENCH_DIR:-/dev/shm/gantry-bench}
mkdir -p "$dir"
tarf=${1:-$dir/usr.tar}
rounds=${2:-3}
if [ ! -f "$tarf" ]; then
  echo "building $tarf from /usr ..." >&2
  tar -C / -cf "$tarf" --exclude=usr/lib/google-cloud-sdk --exclude=usr/lib/jvm usr 2>/dev/null || true
fi
echo "input: $tarf ($(stat -c %s "$tarf") bytes, $(tar -tf "$tarf" | wc -l) entries)"
declare -A best
for ((i = 1; i <= rounds; i++)); do
  for tool in gantry-untar "tar -x" "tar -x --no-same-owner"; do
    rm -rf "$dir/out"; mkdir "$dir/out"; sync
    case $tool in
      gantry-untar) cmd=("$bin" "$dir/out") ;;
      "tar -x") cmd=(tar -xf - -C "$dir/out") ;;
      *) cmd=(tar --no-same-owner -xf - -C "$dir/out") ;;
    esac
    t=$( { /usr/bin/time -f "%e %U %S" "${cmd[@]}" < "$tarf" >/dev/null; } 2>&1 | tail -1)
    read -r wall user sys <<<"$t"
    printf '%-24s wall %6.2fs  user %5.2fs  sys %5.2fs\n' "$tool" "$wall" "$user" "$sys"
    if [ -z "${best[$tool]:-}" ] || awk "BEGIN{exit !($wall < ${best[$tool]})}"; then best[$tool]=$wall; fi
  done
done
rm -rf "$dir/out"
for tool in gantry-untar "tar -x" "tar -x --no-same-owner"; do printf 'best %-24s %6.2fs\n' "$tool" "${best[$tool]}"; done
