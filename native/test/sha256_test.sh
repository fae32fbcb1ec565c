#!/bin/bash
# Dev aid: native/src/sha256.c (SHA-NI and portable paths) against sha256sum, with
# inputs of many lengths fed in random-sized pieces.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -std=c11 -O2 -Wall -Wextra -o "$tmp/sha" "$here/sha256test.c" "$here/../src/sha256.c"
fail=0
for len in 0 1 3 55 56 57 63 64 65 119 120 127 128 1000 4096 100000 3000001 20000000; do
  head -c "$len" /dev/urandom > "$tmp/in"
  want=$(sha256sum < "$tmp/in" | cut -d' ' -f1)
  for impl in accel generic; do
    if [ $impl = generic ]; then export GANTRY_SHA256_GENERIC=1; else unset GANTRY_SHA256_GENERIC; fi
    got=$("$tmp/sha" "$len" < "$tmp/in" 2>/dev/null)
    [ "$got" = "$want" ] || { echo "MISMATCH len=$len impl=$impl"; fail=1; }
  done
done
unset GANTRY_SHA256_GENERIC
"$tmp/sha" < /dev/null 2>&1 >/dev/null | sed 's/^/sha256test: /'
[ $fail = 0 ] && echo "sha256: all lengths match sha256sum (SHA-NI and portable)"
exit $fail
