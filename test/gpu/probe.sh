#!/bin/sh
# probe.sh: runs INSIDE a sandbox (copied into the test image as /gpucheck/probe.sh) and lists
# what the sandbox can see of NVIDIA's, one fact per line, for check.sh to parse:
#   probe: ...                  information (ids, /dev listing, ld cache)
#   nvidia-dev: /dev/...        every /dev/nvidia* entry
#   nvidia-file: PATH           every driver file outside /dev, /proc and /sys (libcuda*,
#                               libnvidia*, nvidia-* programs, firmware/nvidia)
# The test image itself has none, so whatever shows up was injected by Gantry.
# Needs only sh, ls, tr, find, sed (busybox or coreutils/findutils).
echo "probe: uid=$(id -u 2>/dev/null) gid=$(id -g 2>/dev/null)"
# shellcheck disable=SC2012
echo "probe: dev: $(ls /dev | tr '\n' ' ')"
for f in /dev/nvidia*; do
  if [ -e "$f" ]; then echo "nvidia-dev: $f"; fi
done
find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
  \( -name 'libcuda.so*' -o -name 'libcuda_*' -o -name 'libnvidia*' -o -name 'libnvcuvid*' \
     -o -name 'nvidia-*' -o -path '*/firmware/nvidia*' \) -print 2>/dev/null | sed 's/^/nvidia-file: /'
if [ -f /etc/ld.so.cache ]; then echo "probe: /etc/ld.so.cache present"; else echo "probe: /etc/ld.so.cache absent"; fi
echo "probe: done"
