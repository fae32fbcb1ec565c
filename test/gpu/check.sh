#!/usr/bin/env bash
# test/gpu/check.sh: Gantry's GPU injection, checked on a real NVIDIA machine.
#
#   bash test/gpu/check.sh               the whole check (about 30 s; exit 0 only if every
#                                        check that ran passed)
#   bash test/gpu/check.sh --build-only  on the build machine: build Gantry if needed and the
#                                        CUDA test programs into test/gpu/.build/ (carry it)
#   bash test/gpu/check.sh --no-gpu      the pipeline only (image, registry, import, plain
#                                        sandbox start); the driver check becomes a SKIP
#   --keep                               keep the temporary directory (its path is printed)
#
# What it does (see test/gpu/README.md):
#  1. Environment facts: kernel, gVisor?, user namespaces, overlay in a user namespace,
#     /proc/driver/nvidia, nvidia_uvm, /dev/nvidia*, libcuda in the host's ld cache, NVIDIA_*
#     variables (which are then removed from the environment, so only the checks set them).
#  2. Gantry: uses the carried node_modules, dist/ and native/build/Release/, else tries
#     `npm install` (the GPU machine may have no network); then a smoke test of bin/gantry.
#  3. cuda-vecadd (CUDA driver API through dlopen("libcuda.so.1"): builds with a C compiler
#     alone; or the prebuilt test/gpu/.build/cuda-vecadd) and, where nvcc exists or a prebuilt
#     one was carried, cuda-vecadd-rt (CUDA runtime, nvcc -cudart static).
#  4. A test image made from this host's files (busybox or sh + coreutils, glibc, the CUDA test
#     programs, probe.sh) with no NVIDIA file in it, as an OCI layout (mkimage.py), served by a
#     read-only registry on 127.0.0.1 (serve-oci.mjs), imported with `gantry import`.
#  5. Sandbox checks with temporary GANTRY_STORE/GANTRY_DATA/GANTRY_CONFIG and HOME: a plain start,
#     then with NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES: nvidia-smi -L (same lines as
#     the host's), cuda-vecadd, void/none/index/UUID selection, `gantry gpu`; as root and again
#     as the unprivileged user nobody (setpriv/runuser) against the same store.
#  6. A report (also $OUT/gpu-check.txt when $OUT is set, with the commands' full output in
#     $OUT/gpu-check-details.txt): PASS name (time) / FAIL name: reason / SKIP name: reason.
#
# Knobs: GPU_CHECK_DEADLINE (seconds, default 210: later checks FAIL as not run), GPU_CHECK_TIMEOUT
# (seconds per sandbox start, default 45), GPU_CHECK_USER (the unprivileged user, default nobody),
# CC, NVCC, BUSYBOX (paths; BUSYBOX=none: an image of sh + coreutils instead of busybox).
# Only to test this script without a GPU: GPU_CHECK_FORCE_GPU=1 (run the GPU checks anyway),
# GPU_CHECK_DRIVER_ROOT=DIR (a fake driver tree from test/fixtures/fake-driver.ts).

# shellcheck disable=SC2317,SC2012 # functions called through traps and wrappers; ls of /dev is fine
set -u -o pipefail
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD_DIR=$HERE/.build
T0=$(date +%s)
DEADLINE=${GPU_CHECK_DEADLINE:-210}
START_TIMEOUT=${GPU_CHECK_TIMEOUT:-45}
UNPRIV_USER=${GPU_CHECK_USER:-nobody}

MODE=full
NO_GPU=0
KEEP=0
for arg in "$@"; do
  case $arg in
  --build-only) MODE=build ;;
  --no-gpu) NO_GPU=1 ;;
  --keep) KEEP=1 ;;
  -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "check.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

# ---------------------------------------------------------------------------------------------
# report helpers

REPORT=()      # the report, line by line
NPASS=0 NFAIL=0 NSKIP=0
START_FAILED=0 # a gantry start failed: print the namespace/overlay hint
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gantry-gpu-check.XXXXXX") || { echo "check.sh: mktemp failed" >&2; exit 1; }
chmod 755 "$WORK"
DETAILS=$WORK/details.log
: >"$DETAILS"
REG_PID=

say() { printf '%s\n' "$*" >&2; }
note() { REPORT+=("$*"); say "$*"; }
pass() { NPASS=$((NPASS + 1)); note "PASS $1${2:+ ($2)}${3:+: $3}"; }
skip() { NSKIP=$((NSKIP + 1)); note "SKIP $1: $2"; }
fail() { NFAIL=$((NFAIL + 1)); note "FAIL $1: $2"; }
# the last (or with a negative count, the first) lines of a file, indented, into the report
# (the error text of a failed command)
excerpt() {
  local file=$1 n=${2:-12} pick=tail
  [ -s "$file" ] || return 0
  if [ "$n" -lt 0 ]; then pick=head n=$((-n)); fi
  while IFS= read -r line; do note "      | $line"; done < <("$pick" -n "$n" "$file" | cut -c1-300)
}
elapsed() { echo $(($(date +%s) - T0)); }
# a check that would start after the time budget is spent is not run, and FAILs (the run did
# not check what it should); returns 1 then
budget() {
  if [ "$(elapsed)" -ge "$DEADLINE" ]; then fail "$1" "not run: the time budget (GPU_CHECK_DEADLINE=${DEADLINE} s) is spent"; return 1; fi
  return 0
}

cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null; fi
  if [ "$KEEP" = 1 ]; then
    say "kept $WORK"
  else
    chmod -R u+rwX "$WORK" 2>/dev/null
    rm -rf "$WORK" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_timed OUTFILE CMD...: runs CMD, stdout+stderr to OUTFILE (and the details log);
# sets RC and MS (wall-clock milliseconds)
RC=0 MS=0
run_timed() {
  local out=$1 t1 t2
  shift
  t1=$(date +%s%N)
  "$@" >"$out" 2>&1 </dev/null
  RC=$?
  t2=$(date +%s%N)
  MS=$(((t2 - t1) / 1000000))
  {
    printf '\n$ %s\n' "$*"
    cat "$out"
    printf '[exit %s, %s ms]\n' "$RC" "$MS"
  } >>"$DETAILS"
}

have() { command -v "$1" >/dev/null 2>&1; }
if ! have timeout; then timeout() { if [ "$1" = -k ]; then shift 2; fi; shift; "$@"; }; fi
first_line() { head -n 1 "$1" 2>/dev/null | cut -c1-200; }

# ---------------------------------------------------------------------------------------------
# 1. environment facts (NVIDIA_* and GANTRY_* variables are removed: the checks set their own)

HOST_NVIDIA_ENV=$(env | grep -E '^(NVIDIA_|CUDA_VISIBLE_DEVICES=)' | sort | tr '\n' ' ')
for v in $(compgen -e | grep -E '^(NVIDIA_|GANTRY_|CUDA_VISIBLE_DEVICES$)'); do unset "$v"; done

ME=$(id -un 2>/dev/null || id -u)
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

GVISOR=no
if dmesg 2>/dev/null | grep -qi gvisor; then GVISOR="yes (dmesg)"
elif [ "$(uname -r)" = 4.4.0 ]; then GVISOR="probably (kernel 4.4.0)"; fi

if unshare --user true 2>"$WORK/userns.err"; then USERNS=works; else USERNS="fails ($(first_line "$WORK/userns.err"))"; fi
mkdir -p "$WORK/ovl"
OVERLAY="fails"
# shellcheck disable=SC2016 # expanded by the inner shell
if unshare --user --map-root-user --mount sh -c 'd=$1; mount -t tmpfs none "$d" && mkdir "$d/l" "$d/u" "$d/w" "$d/m" &&
     { mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w,userxattr" "$d/m" 2>/dev/null ||
       mount -t overlay overlay -o "lowerdir=$d/l,upperdir=$d/u,workdir=$d/w" "$d/m"; }' sh "$WORK/ovl" 2>"$WORK/ovl.err"; then
  OVERLAY=works
else
  OVERLAY="fails ($(first_line "$WORK/ovl.err"))"
fi
USERNS_LIMITS="max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo '?')"
[ -r /proc/sys/kernel/unprivileged_userns_clone ] && USERNS_LIMITS+=" unprivileged_userns_clone=$(cat /proc/sys/kernel/unprivileged_userns_clone)"
[ -r /proc/sys/kernel/apparmor_restrict_unprivileged_userns ] && USERNS_LIMITS+=" apparmor_restrict_unprivileged_userns=$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns)"

# GPU_CHECK_DRIVER_ROOT=DIR (only to test this script without a GPU): the driver is the fake
# tree DIR of test/fixtures/fake-driver.ts: facts are read there, Gantry gets GANTRY_DRIVER_ROOT,
# the host baselines run its nvidia-smi and libraries.
DRV=${GPU_CHECK_DRIVER_ROOT:-}
HOST_ENV=()        # the environment of the host baselines (nvidia-smi, cuda-vecadd on the host)
GANTRY_ENV=()      # added to every gantry command
if [ -n "$DRV" ]; then
  DRV=$(cd "$DRV" && pwd) || exit 2
  HOST_ENV=(LD_LIBRARY_PATH="$DRV/usr/lib/x86_64-linux-gnu" GANTRY_FAKE_DRIVER_DEV="$DRV/dev")
  GANTRY_ENV=(GANTRY_DRIVER_ROOT="$DRV")
fi
if [ -d "$DRV/proc/driver/nvidia" ]; then PROC_NVIDIA=present; else PROC_NVIDIA=missing; fi
if [ -r "$DRV/proc/modules" ]; then
  MODULES=$(awk '$1 ~ /^nvidia/ {print $1}' "$DRV/proc/modules" | sort | tr '\n' ' ')
  MODULES=${MODULES:-"no nvidia module listed"}
else
  MODULES="no /proc/modules"
fi
UVM=no
grep -q '^nvidia_uvm ' "$DRV/proc/modules" 2>/dev/null && UVM=yes
DEVS=$(ls -d "$DRV"/dev/nvidia* 2>/dev/null | tr '\n' ' ')
LDCACHE_CUDA=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | awk '/libcuda\.so\.1 / {print $NF}' | tr '\n' ' ')
if [ -n "$DRV" ]; then
  HOST_SMI=$DRV/usr/bin/nvidia-smi
  [ -x "$HOST_SMI" ] || HOST_SMI=''
else
  HOST_SMI=$(command -v nvidia-smi 2>/dev/null || true)
fi

# the driver
HAVE_DRIVER=0 DRIVER_VERSION='' DRIVER_LINE='' DRIVER_NOTE=''
if [ -r "$DRV/proc/driver/nvidia/version" ]; then
  HAVE_DRIVER=1
  DRIVER_LINE=$(head -n 1 "$DRV/proc/driver/nvidia/version")
  DRIVER_VERSION=$(grep -oE '[0-9]{3,}\.[0-9]+(\.[0-9]+)?' <<<"$DRIVER_LINE" | head -n 1)
  [ -n "$DRV" ] && DRIVER_NOTE="fake driver tree $DRV (GPU_CHECK_DRIVER_ROOT)"
elif [ -e "$DRV/dev/nvidiactl" ]; then
  HAVE_DRIVER=1
  DRIVER_NOTE="/proc/driver/nvidia/version is missing but /dev/nvidiactl exists (gVisor nvproxy?)"
  [ -n "$HOST_SMI" ] && DRIVER_VERSION=$(env ${HOST_ENV[@]+"${HOST_ENV[@]}"} timeout 30 "$HOST_SMI" --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
  DRIVER_LINE="version from nvidia-smi: ${DRIVER_VERSION:-unknown}"
fi
FORCED=0
if [ "$HAVE_DRIVER" = 0 ] && [ "${GPU_CHECK_FORCE_GPU:-}" = 1 ]; then HAVE_DRIVER=1 FORCED=1; fi

# the host's GPUs: nvidia-smi -L, else /proc/driver/nvidia/gpus
HOST_L=$WORK/host-smi-L.txt
: >"$HOST_L"
HOST_SMI_RC=none
if [ "$HAVE_DRIVER" = 1 ] && [ -n "$HOST_SMI" ]; then
  run_timed "$WORK/host-smi.out" env ${HOST_ENV[@]+"${HOST_ENV[@]}"} timeout -k 5 30 "$HOST_SMI" -L
  HOST_SMI_RC=$RC
  grep -E '^(GPU [0-9]+:|  MIG )' "$WORK/host-smi.out" >"$HOST_L"
fi
# UUIDs as nvidia-smi shows them (compared with nvidia-smi in the sandbox), and as the driver's
# /proc lists them in PCI order (what NVIDIA_VISIBLE_DEVICES=<UUID> is resolved against); the two
# agree on a real driver
mapfile -t GPU_UUIDS < <(sed -n 's/^GPU [0-9]*:.*(UUID: \(GPU-[^)]*\)).*/\1/p' "$HOST_L")
mapfile -t PROC_UUIDS < <(cat "$DRV"/proc/driver/nvidia/gpus/*/information 2>/dev/null | sed -n 's/^GPU UUID:[[:space:]]*//p')
[ "${#GPU_UUIDS[@]}" = 0 ] && GPU_UUIDS=(${PROC_UUIDS[@]+"${PROC_UUIDS[@]}"})
[ "${#PROC_UUIDS[@]}" = 0 ] && PROC_UUIDS=(${GPU_UUIDS[@]+"${GPU_UUIDS[@]}"})
NGPUS=${#GPU_UUIDS[@]}

note "==== gantry GPU check ($(date -u +%Y-%m-%dT%H:%M:%SZ), $REPO) ===="
note "host:    $(uname -srm), gVisor: $GVISOR, running as $ME"
note "driver:  ${DRIVER_LINE:-none (/proc/driver/nvidia/version is missing)}${DRIVER_NOTE:+ [$DRIVER_NOTE]}${DRIVER_VERSION:+ => $DRIVER_VERSION}"
if [ -s "$HOST_L" ]; then
  while IFS= read -r l; do note "GPU:     $l"; done <"$HOST_L"
else
  note "GPUs:    ${NGPUS} found${GPU_UUIDS[*]:+ (${GPU_UUIDS[*]})} (host nvidia-smi: ${HOST_SMI:-not installed}, exit ${HOST_SMI_RC})"
fi
note "facts:   unshare --user true: $USERNS; overlay in a user namespace: $OVERLAY; $USERNS_LIMITS"
note "facts:   /proc/driver/nvidia: $PROC_NVIDIA; nvidia_uvm in /proc/modules: $UVM (nvidia modules: $MODULES)"
note "facts:   /dev/nvidia*: ${DEVS:-none}; libcuda.so.1 in the host ld cache: ${LDCACHE_CUDA:-no}; nvidia-smi: ${HOST_SMI:-not on PATH}"
note "facts:   NVIDIA variables in the environment: ${HOST_NVIDIA_ENV:-none} (removed for the checks)"
[ -d /etc/gantry ] && note "facts:   /etc/gantry exists (system configuration applies to every check): $(ls /etc/gantry | tr '\n' ' ')"
[ "$FORCED" = 1 ] && note "note:    GPU_CHECK_FORCE_GPU=1: GPU checks run without a driver (testing this script)"

if [ "$MODE" = full ]; then
  if [ "$HAVE_DRIVER" = 1 ]; then
    [ "$FORCED" = 1 ] || pass driver "${DRIVER_VERSION:-version unknown}, $NGPUS GPU(s)"
  elif [ "$NO_GPU" = 1 ]; then
    skip driver "--no-gpu (no NVIDIA driver: /proc/driver/nvidia/version is missing)"
  else
    fail driver "no NVIDIA driver: /proc/driver/nvidia/version is missing (and no /dev/nvidiactl); the GPU checks will be skipped, the sandbox pipeline still runs"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 2. node and Gantry

GANTRY_OK=0
NODE_OK=0
if ! have node; then
  fail node "node is not on PATH (Gantry needs Node >= 18; package.json asks for >= 20.18.1)"
else
  NODE_V=$(node -p 'process.versions.node' 2>/dev/null)
  NODE_MAJOR=${NODE_V%%.*}
  if [ -z "$NODE_V" ] || [ "${NODE_MAJOR:-0}" -lt 18 ]; then
    fail node "node ${NODE_V:-(does not run)} at $(command -v node) is too old: Gantry needs >= 18"
  else
    NODE_OK=1
    extra=
    IFS=. read -r _ nmin _ <<<"$NODE_V"
    if [ "$NODE_MAJOR" -lt 20 ] || { [ "$NODE_MAJOR" = 20 ] && [ "${nmin:-0}" -lt 18 ]; }; then extra="older than package.json's >= 20.18.1"; fi
    pass node "v$NODE_V, $(command -v node)" "$extra"
  fi
fi

GANTRY=$REPO/bin/gantry
EXEC_BIN=$REPO/native/build/Release/gantry-exec
UNTAR_BIN=$REPO/native/build/Release/gantry-untar
built_parts() {
  MISSING=()
  [ -d "$REPO/node_modules" ] || MISSING+=(node_modules)
  [ -f "$REPO/dist/src/cli/main.js" ] || MISSING+=(dist)
  { [ -x "$EXEC_BIN" ] && [ -x "$UNTAR_BIN" ]; } || MISSING+=(native/build/Release)
}
npm_step() { # npm_step OUTFILE TIMEOUT ARGS...
  local out=$1 t=$2
  shift 2
  (cd "$REPO" && export npm_config_nodedir=${npm_config_nodedir:-/usr} && run_timed "$out" timeout -k 5 "$t" npm "$@"; exit "$RC")
}
if [ "$NODE_OK" = 1 ]; then
  built_parts
  how="existing node_modules, dist, native/build/Release"
  build_err=''
  excerpt_file=''
  if [ "${#MISSING[@]}" -gt 0 ]; then
    how="built here (missing: ${MISSING[*]})"
    if ! have npm; then
      build_err="missing ${MISSING[*]} and npm is not on PATH: carry node_modules, dist and native/build from the build machine"
    elif [ ! -d "$REPO/node_modules" ]; then
      say "... npm install --no-audit --no-fund (the GPU machine may have no network)"
      if ! npm_step "$WORK/npm-install.out" 120 install --no-audit --no-fund; then
        build_err="npm install --no-audit --no-fund failed (no network? carry node_modules, dist and native/build from the build machine)"
        excerpt_file=$WORK/npm-install.out
      fi
    else
      if [ ! -f "$REPO/dist/src/cli/main.js" ] && ! npm_step "$WORK/npm-build-ts.out" 180 run build:ts; then
        build_err="npm run build:ts failed"
        excerpt_file=$WORK/npm-build-ts.out
      fi
      if [ -z "$build_err" ] && { [ ! -x "$EXEC_BIN" ] || [ ! -x "$UNTAR_BIN" ]; } &&
        ! npm_step "$WORK/npm-build-native.out" 180 run build:native; then
        build_err="npm run build:native failed (needs g++, make and the Node headers: npm_config_nodedir)"
        excerpt_file=$WORK/npm-build-native.out
      fi
    fi
    built_parts
    if [ -z "$build_err" ] && [ "${#MISSING[@]}" -gt 0 ]; then build_err="still missing after the build: ${MISSING[*]}"; fi
  fi
  if [ -z "$build_err" ]; then
    # smoke test: every module bin/gantry loads (a carried node_modules may lack one)
    mkdir -p "$WORK/smoke"
    run_timed "$WORK/smoke.out" env HOME="$WORK/smoke" GANTRY_STORE="$WORK/smoke/store" GANTRY_DATA="$WORK/smoke/data" \
      GANTRY_CONFIG="$WORK/smoke/config" timeout -k 5 60 "$GANTRY" images
    if [ "$RC" != 0 ]; then build_err="bin/gantry images (smoke test) exited $RC"; excerpt_file=$WORK/smoke.out; fi
  fi
  if [ -n "$build_err" ]; then
    fail build "$build_err"
    if [ -n "$excerpt_file" ]; then
      # npm's own summary lines first (its stack traces are in the details)
      grep -m 10 -E '^npm (error|ERR!) (code|errno|network|syscall|[A-Za-z].*(failed|not found|missing))' "$excerpt_file" >"$excerpt_file.short"
      if [ -s "$excerpt_file.short" ]; then excerpt "$excerpt_file.short"; else excerpt "$excerpt_file"; fi
    fi
  else
    GANTRY_OK=1
    stale=$(find "$REPO/src" -name '*.ts' -newer "$REPO/dist/src/cli/main.js" 2>/dev/null | head -n 1)
    pass build "$how" "${stale:+note: ${stale#"$REPO"/} is newer than dist/ (npm run build?)}"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 3. the CUDA test programs

find_cc() {
  local c
  for c in ${CC:-} cc gcc clang; do have "$c" && { command -v "$c"; return 0; }; done
  return 1
}
find_nvcc() {
  local c
  for c in ${NVCC:-} nvcc /usr/local/cuda/bin/nvcc; do have "$c" && { command -v "$c"; return 0; }; done
  return 1
}
if [ "$MODE" = build ]; then BIN_DIR=$BUILD_DIR; else BIN_DIR=$WORK/bin; fi
mkdir -p "$BIN_DIR"
CVA='' CVA_RT=''
if CCBIN=$(find_cc); then
  run_timed "$WORK/cc.out" "$CCBIN" -O2 -Wall -o "$BIN_DIR/cuda-vecadd" "$HERE/cuda-vecadd.c" -ldl
  if [ "$RC" = 0 ]; then
    CVA=$BIN_DIR/cuda-vecadd
    pass cuda-vecadd-build "$MS ms" "$CCBIN -> ${CVA#"$REPO"/}"
  elif [ -x "$BUILD_DIR/cuda-vecadd" ] && [ "$MODE" = full ]; then
    CVA=$BUILD_DIR/cuda-vecadd
    pass cuda-vecadd-build "prebuilt" "$CCBIN failed (see details), using ${CVA#"$REPO"/}"
  else
    fail cuda-vecadd-build "$CCBIN failed"
    excerpt "$WORK/cc.out"
  fi
elif [ "$MODE" = full ] && [ -x "$BUILD_DIR/cuda-vecadd" ]; then
  CVA=$BUILD_DIR/cuda-vecadd
  pass cuda-vecadd-build "prebuilt" "no C compiler here, using ${CVA#"$REPO"/}"
else
  fail cuda-vecadd-build "no C compiler (cc, gcc, clang) and no prebuilt test/gpu/.build/cuda-vecadd: run 'bash test/gpu/check.sh --build-only' on the build machine and carry test/gpu/.build"
fi
if NVCCBIN=$(find_nvcc); then
  run_timed "$WORK/nvcc.out" timeout -k 5 90 "$NVCCBIN" -O2 -cudart static -o "$BIN_DIR/cuda-vecadd-rt" "$HERE/cuda-vecadd-rt.cu"
  if [ "$RC" = 0 ]; then
    CVA_RT=$BIN_DIR/cuda-vecadd-rt
    pass cuda-vecadd-rt-build "$MS ms" "$NVCCBIN ($("$NVCCBIN" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/CUDA \1/p'))"
  elif [ -x "$BUILD_DIR/cuda-vecadd-rt" ] && [ "$MODE" = full ]; then
    CVA_RT=$BUILD_DIR/cuda-vecadd-rt
    pass cuda-vecadd-rt-build "prebuilt" "nvcc failed (see details), using ${CVA_RT#"$REPO"/}"
  elif [ "$MODE" = build ]; then
    fail cuda-vecadd-rt-build "$NVCCBIN -cudart static failed"
    excerpt "$WORK/nvcc.out"
  else
    skip cuda-vecadd-rt-build "$NVCCBIN -cudart static failed (optional; output below)"
    excerpt "$WORK/nvcc.out" 6
  fi
elif [ "$MODE" = full ] && [ -x "$BUILD_DIR/cuda-vecadd-rt" ]; then
  CVA_RT=$BUILD_DIR/cuda-vecadd-rt
  pass cuda-vecadd-rt-build "prebuilt" "${CVA_RT#"$REPO"/}"
else
  skip cuda-vecadd-rt-build "no nvcc and no prebuilt test/gpu/.build/cuda-vecadd-rt (optional)"
fi

finish() {
  local status=0 verdict
  [ "$NFAIL" -gt 0 ] && status=1
  [ "$NPASS" = 0 ] && status=1
  if [ "$status" = 0 ]; then verdict=PASS; else verdict=FAIL; fi
  if [ "$START_FAILED" = 1 ]; then
    note "hint: a gantry start failed with the error shown above (Gantry's own). It needs user namespaces (unshare --user true: $USERNS) and overlayfs inside a user namespace ($OVERLAY)${GVISOR:+; gVisor: $GVISOR}. Under gVisor or with user namespaces disabled (max_user_namespaces=0, AppArmor's restriction) sandboxes cannot start at all; the GPU checks then tell nothing about GPU injection."
  fi
  note "result: $verdict: $NPASS passed, $NFAIL failed, $NSKIP skipped ($(elapsed) s)"
  {
    echo
    echo "==================== report ===================="
    printf '%s\n' "${REPORT[@]}"
  }
  if [ -n "${OUT:-}" ] && mkdir -p "$OUT" 2>/dev/null; then
    printf '%s\n' "${REPORT[@]}" >"$OUT/gpu-check.txt"
    cp "$DETAILS" "$OUT/gpu-check-details.txt" 2>/dev/null
    echo "(report written to $OUT/gpu-check.txt, command output to $OUT/gpu-check-details.txt)"
  fi
  exit "$status"
}

# a prebuilt program from another machine may need libraries (or a glibc) this one lacks
lib_problem() { ldd "$1" 2>&1 | grep -m 3 'not found' | sed 's/^[[:space:]]*//' | tr '\n' ' '; }
if [ "$MODE" = full ] && [ -n "$CVA" ] && missing=$(lib_problem "$CVA") && [ -n "$missing" ]; then
  fail cuda-vecadd-libs "${CVA#"$REPO"/} cannot run here: $missing"
  CVA=''
fi
if [ "$MODE" = full ] && [ -n "$CVA_RT" ] && missing=$(lib_problem "$CVA_RT") && [ -n "$missing" ]; then
  skip cuda-vecadd-rt-build "${CVA_RT#"$REPO"/} cannot run here: $missing"
  CVA_RT=''
fi

if [ "$MODE" = build ]; then
  [ -n "$CVA" ] && note "built: ${CVA#"$REPO"/}${CVA_RT:+ and ${CVA_RT#"$REPO"/}} (carry test/gpu/.build to the GPU machine)"
  finish
fi

# ---------------------------------------------------------------------------------------------
# 4. the test image, the registry, the import

IMPORTED=0
if [ "$GANTRY_OK" = 1 ] && [ -n "$CVA" ]; then
  IMG_ARGS=()
  BB=
  if [ "${BUSYBOX:-}" != none ]; then
    for c in ${BUSYBOX:-} /bin/busybox /usr/bin/busybox /sbin/busybox "$(command -v busybox 2>/dev/null)"; do
      if [ -n "$c" ] && [ -x "$c" ] && "$c" --list >/dev/null 2>&1; then BB=$c; break; fi
    done
  fi
  if [ -n "$BB" ]; then
    IMG_ARGS+=(--busybox "$BB")
    img_kind="busybox $BB"
  else
    img_kind="sh + coreutils"
    for t in sh ls cat echo env id uname head tail tr sed grep find sleep true false mkdir; do
      p=$(type -P "$t") && IMG_ARGS+=(--tool "$p")
    done
  fi
  IMG_ARGS+=(--add "$CVA=/cuda-vecadd" --add "$HERE/probe.sh=/gpucheck/probe.sh:755")
  [ -n "$CVA_RT" ] && IMG_ARGS+=(--add "$CVA_RT=/cuda-vecadd-rt")
  if ! have python3; then
    fail image "python3 is not on PATH (mkimage.py needs it)"
  else
    run_timed "$WORK/mkimage.out" timeout -k 5 60 python3 "$HERE/mkimage.py" "$WORK/layout" "${IMG_ARGS[@]}"
    if [ "$RC" != 0 ]; then
      fail image "mkimage.py exited $RC"
      excerpt "$WORK/mkimage.out"
    else
      summary=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%d entries, %.1f MB gzip, %s" % (d["entries"], d["gzipBytes"]/1e6, d["architecture"]))' "$WORK/mkimage.out" 2>/dev/null)
      pass image "$MS ms" "$img_kind, ${summary:-?}, no NVIDIA files"
      # the registry
      node "$HERE/serve-oci.mjs" "$WORK/layout" --port-file "$WORK/port" >"$WORK/registry.out" 2>"$WORK/registry.log" &
      REG_PID=$!
      for _ in $(seq 50); do [ -s "$WORK/port" ] && break; sleep 0.1; done
      PORT=$(cat "$WORK/port" 2>/dev/null)
      if [ -z "$PORT" ]; then
        fail registry "serve-oci.mjs did not start"
        excerpt "$WORK/registry.log"
      else
        pass registry "127.0.0.1:$PORT"
        REF=127.0.0.1:$PORT/gpucheck:latest
        export GANTRY_STORE=$WORK/store GANTRY_DATA=$WORK/data GANTRY_CONFIG=$WORK/config
        mkdir -p "$WORK/home" "$WORK/config"
        run_timed "$WORK/import.out" env HOME="$WORK/home" timeout -k 5 90 "$GANTRY" import "$REF" --name gpucheck
        if [ "$RC" = 0 ]; then
          IMPORTED=1
          pass import "$MS ms" "$REF"
        else
          fail import "gantry import $REF exited $RC"
          excerpt "$WORK/import.out"
          excerpt "$WORK/registry.log" 5
        fi
      fi
    fi
  fi
else
  skip image "no Gantry build or no cuda-vecadd"
fi

# ---------------------------------------------------------------------------------------------
# 5. the sandbox checks

# the unprivileged user: same store (read-only for it), its own data, config and home
UNPRIV=0 UNPRIV_WHY='' RUN_AS=()
UNPRIV_GANTRY=$GANTRY
if [ "$IMPORTED" = 1 ]; then
  if [ "$IS_ROOT" != 1 ]; then
    UNPRIV_WHY="this script runs as $ME, not root: the checks above already ran unprivileged"
  elif ! getent passwd "$UNPRIV_USER" >/dev/null 2>&1; then
    UNPRIV_WHY="no user $UNPRIV_USER"
  else
    NB_UID=$(id -u "$UNPRIV_USER") NB_GID=$(id -g "$UNPRIV_USER")
    if have setpriv; then RUN_AS=(setpriv --reuid="$NB_UID" --regid="$NB_GID" --clear-groups --)
    elif have runuser; then RUN_AS=(runuser -u "$UNPRIV_USER" --)
    else UNPRIV_WHY="neither setpriv nor runuser is installed"; fi
  fi
  if [ -z "$UNPRIV_WHY" ] && ! (cd / && "${RUN_AS[@]}" test -x "$WORK/store") 2>/dev/null; then
    UNPRIV_WHY="$UNPRIV_USER cannot reach $WORK (set TMPDIR to a directory everyone can traverse)"
  fi
  if [ -z "$UNPRIV_WHY" ]; then
    mkdir -p "$WORK/unpriv/home" "$WORK/unpriv/data" "$WORK/unpriv/config"
    chown -R "$NB_UID:$NB_GID" "$WORK/unpriv"
    # shellcheck disable=SC2016 # expanded by the inner shell
    if ! (cd "$WORK" && "${RUN_AS[@]}" sh -c 'test -r "$1/dist/src/cli/main.js" && test -x "$1/native/build/Release/gantry-exec" && test -r "$1/node_modules"' sh "$REPO") 2>/dev/null; then
      # the checkout is not readable for that user (e.g. under /root): a readable copy
      mkdir -p "$WORK/gantry/native/build"
      if cp -a "$REPO/bin" "$REPO/dist" "$REPO/node_modules" "$REPO/package.json" "$WORK/gantry/" &&
        cp -a "$REPO/native/build/Release" "$WORK/gantry/native/build/"; then
        chmod -R a+rX "$WORK/gantry"
        UNPRIV_GANTRY=$WORK/gantry/bin/gantry
        note "note:    $UNPRIV_USER cannot read $REPO: using a copy in $WORK/gantry"
      else
        UNPRIV_WHY="cannot copy Gantry to a place $UNPRIV_USER can read"
      fi
    fi
  fi
  if [ -z "$UNPRIV_WHY" ] && ! (cd "$WORK" && "${RUN_AS[@]}" node --version) >/dev/null 2>&1; then
    UNPRIV_WHY="node ($(command -v node)) does not run as $UNPRIV_USER"
  fi
  [ -z "$UNPRIV_WHY" ] && UNPRIV=1
  if [ "$UNPRIV" = 1 ]; then
    if (cd "$WORK" && "${RUN_AS[@]}" unshare --user true) 2>"$WORK/userns-unpriv.err"; then
      note "facts:   unshare --user true as $UNPRIV_USER: works"
    else
      note "facts:   unshare --user true as $UNPRIV_USER: fails ($(first_line "$WORK/userns-unpriv.err"))"
    fi
  fi
fi

# gantry_as WHO [VAR=VALUE...] -- ARGS...: bin/gantry ARGS as root/the caller (WHO=self) or as
# the unprivileged user, with the temporary store and only the given NVIDIA variables
gantry_as() {
  local who=$1
  local envs=()
  shift
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  if [ "$who" = self ]; then
    (cd "$WORK" && timeout -k 5 "$START_TIMEOUT" env -u XDG_DATA_HOME -u XDG_CONFIG_HOME HOME="$WORK/home" \
      ${GANTRY_ENV[@]+"${GANTRY_ENV[@]}"} ${envs[@]+"${envs[@]}"} "$GANTRY" "$@")
  else
    (cd "$WORK" && timeout -k 5 "$START_TIMEOUT" "${RUN_AS[@]}" env -u XDG_DATA_HOME -u XDG_CONFIG_HOME \
      HOME="$WORK/unpriv/home" USER="$UNPRIV_USER" LOGNAME="$UNPRIV_USER" GANTRY_STORE="$WORK/store" \
      GANTRY_DATA="$WORK/unpriv/data" GANTRY_CONFIG="$WORK/unpriv/config" \
      ${GANTRY_ENV[@]+"${GANTRY_ENV[@]}"} ${envs[@]+"${envs[@]}"} "$UNPRIV_GANTRY" "$@")
  fi
}

# a failed start: the reason, Gantry's error text, and the hint at the end
start_failed() {
  local name=$1 out=$2 what=$3
  fail "$name" "$what"
  excerpt "$out"
  if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then note "      (killed after ${START_TIMEOUT} s)"; fi
  if grep -qE '^error:' "$out" || [ "$RC" = 125 ]; then START_FAILED=1; fi
}

check_sandbox_start() { # WHO SUFFIX
  local name="sandbox-start$2" out=$WORK/start$2.out
  budget "$name" || return
  run_timed "$out" gantry_as "$1" -- start gpucheck /bin/sh -c 'echo hi'
  if [ "$RC" = 0 ] && grep -qx hi "$out"; then pass "$name" "$MS ms"
  else start_failed "$name" "$out" "gantry start gpucheck /bin/sh -c 'echo hi' exited $RC"; fi
}

# probe_check NAME WHO EXPECT [VAR=VALUE...]: runs probe.sh (and nvidia-smi -L when EXPECT is
# one:UUID) in a sandbox. EXPECT: nothing (no /dev/nvidia*, no driver file), no-gpu (no
# /dev/nvidia<N>), one:UUID (exactly one /dev/nvidia<N>, and nvidia-smi lists only that GPU)
probe_check() {
  local name=$1 who=$2 expect=$3 out=$WORK/$1.out cmd
  shift 3
  budget "$name" || return
  cmd='/bin/sh /gpucheck/probe.sh'
  [ "${expect%%:*}" = one ] && cmd="$cmd; echo '--- nvidia-smi -L'; nvidia-smi -L"
  run_timed "$out" gantry_as "$who" "$@" -- start gpucheck /bin/sh -c "$cmd"
  if ! grep -q '^probe: done' "$out"; then
    start_failed "$name" "$out" "gantry start ($*) exited $RC before the probe finished"
    return
  fi
  local devs files gpudevs
  devs=$(grep -c '^nvidia-dev: ' "$out")
  files=$(grep -c '^nvidia-file: ' "$out")
  gpudevs=$(grep -cE '^nvidia-dev: /dev/nvidia[0-9]+$' "$out")
  case $expect in
  nothing)
    if [ "$devs" = 0 ] && [ "$files" = 0 ]; then pass "$name" "$MS ms" "no /dev/nvidia*, no driver file"
    else
      fail "$name" "$* still shows $devs /dev/nvidia* entries and $files driver files"
      grep -E '^nvidia-(dev|file): ' "$out" | head -n 12 >"$out.bad"; excerpt "$out.bad"
    fi ;;
  no-gpu)
    if [ "$gpudevs" = 0 ]; then pass "$name" "$MS ms" "no /dev/nvidia<N>; $devs other /dev/nvidia* entries, $files driver files"
    else
      fail "$name" "$* shows $gpudevs GPU device nodes"
      grep -E '^nvidia-dev: ' "$out" >"$out.bad"; excerpt "$out.bad"
    fi ;;
  one:*)
    local uuid=${expect#one:} listed
    listed=$(sed -n '/^--- nvidia-smi -L/,$p' "$out" | grep -c '^GPU [0-9]*:')
    if [ "$gpudevs" = 1 ] && [ "$listed" = 1 ] && { [ -z "$uuid" ] || grep -q "UUID: $uuid)" "$out"; }; then
      pass "$name" "$MS ms" "$(grep -E '^nvidia-dev: /dev/nvidia[0-9]+$' "$out" | cut -d' ' -f2), $(sed -n '/^--- nvidia-smi -L/,$p' "$out" | grep -m1 '^GPU ' | cut -c1-120)"
    else
      fail "$name" "$* gives $gpudevs /dev/nvidia<N> (want 1) and nvidia-smi lists $listed GPU(s) (want 1${uuid:+: $uuid})"
      excerpt "$out"
    fi ;;
  esac
}

check_smi_L() { # WHO SUFFIX
  local name="nvidia-smi-L$2" out=$WORK/smi$2.out
  budget "$name" || return
  if [ -z "$HOST_SMI" ]; then skip "$name" "the host has no nvidia-smi to inject"; return; fi
  run_timed "$out" gantry_as "$1" NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility -- start gpucheck nvidia-smi -L
  grep -E '^(GPU [0-9]+:|  MIG )' "$out" >"$out.L"
  if [ "$RC" = 0 ] && [ -s "$out.L" ] && cmp -s "$out.L" "$HOST_L"; then
    pass "$name" "$MS ms" "$(grep -c '^GPU ' "$out.L") GPU(s), same lines as the host"
  elif [ "$RC" = 0 ]; then
    fail "$name" "nvidia-smi -L in the sandbox differs from the host's (host: $(wc -l <"$HOST_L") lines)"
    excerpt "$out"
  else
    start_failed "$name" "$out" "NVIDIA_VISIBLE_DEVICES=all gantry start gpucheck nvidia-smi -L exited $RC"
  fi
}

HOST_CVA_OK=0 HOST_RT=none
check_vecadd() { # WHO SUFFIX PROGRAM
  local prog=$3 name="${3}$2" out=$WORK/${3}$2.out
  budget "$name" || return
  run_timed "$out" gantry_as "$1" NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility -- start gpucheck "/$prog" -v
  local ok
  ok=$(grep -m1 "^$prog: OK " "$out")
  if [ "$RC" = 0 ] && [ -n "$ok" ]; then
    pass "$name" "$MS ms" "${ok#"$prog: OK "}"
  else
    local why="NVIDIA_VISIBLE_DEVICES=all gantry start gpucheck /$prog exited $RC"
    [ "$prog" = cuda-vecadd ] && [ "$HOST_CVA_OK" = 0 ] && why+=" (it fails on the host too)"
    if grep -q "^$prog: " "$out"; then fail "$name" "$why"; excerpt "$out"
    else start_failed "$name" "$out" "$why"; fi
  fi
}

if [ "$IMPORTED" = 1 ]; then
  check_sandbox_start self ""
  probe_check no-gpu-by-default self nothing
  [ "$UNPRIV" = 1 ] && check_sandbox_start unpriv "[$UNPRIV_USER]"

  if [ "$HAVE_DRIVER" = 0 ]; then
    why="no NVIDIA driver"
    [ "$NO_GPU" = 1 ] && why="--no-gpu"
    for c in host-cuda-vecadd gantry-gpu nvidia-smi-L cuda-vecadd cuda-vecadd-rt visible-void visible-none visible-0 visible-uuid visible-1; do skip "$c" "$why"; done
  else
    # host baselines: what the sandbox must reproduce
    if budget host-cuda-vecadd; then
      run_timed "$WORK/host-cva.out" env ${HOST_ENV[@]+"${HOST_ENV[@]}"} timeout -k 5 45 "$CVA" -v
      if [ "$RC" = 0 ] && grep -q '^cuda-vecadd: OK' "$WORK/host-cva.out"; then
        HOST_CVA_OK=1
        pass host-cuda-vecadd "$MS ms" "$(grep -m1 '^cuda-vecadd: OK' "$WORK/host-cva.out" | cut -c18-)"
      else
        fail host-cuda-vecadd "cuda-vecadd fails on the host itself (exit $RC): not Gantry's doing"
        excerpt "$WORK/host-cva.out"
      fi
    fi
    if [ -n "$CVA_RT" ] && budget host-cuda-vecadd-rt; then
      run_timed "$WORK/host-rt.out" env ${HOST_ENV[@]+"${HOST_ENV[@]}"} timeout -k 5 45 "$CVA_RT"
      if [ "$RC" = 0 ] && grep -q '^cuda-vecadd-rt: OK' "$WORK/host-rt.out"; then
        HOST_RT=ok
        pass host-cuda-vecadd-rt "$MS ms" "$(grep -m1 '^cuda-vecadd-rt: driver' "$WORK/host-rt.out" | cut -c17-)"
      elif grep -q 'cudaErrorInsufficientDriver' "$WORK/host-rt.out"; then
        HOST_RT=old-driver
        skip host-cuda-vecadd-rt "the driver is older than the CUDA runtime it was built with: $(grep -m1 '^cuda-vecadd-rt: driver' "$WORK/host-rt.out" | cut -c17-)"
      else
        HOST_RT=fails
        fail host-cuda-vecadd-rt "cuda-vecadd-rt fails on the host itself (exit $RC)"
        excerpt "$WORK/host-rt.out"
      fi
    fi

    # gantry gpu: the driver and GPUs as Gantry sees them
    if budget gantry-gpu; then
      run_timed "$WORK/gantry-gpu.out" gantry_as self -- gpu
      if [ "$RC" = 0 ]; then
        seen="$(wc -l <"$WORK/gantry-gpu.out") lines"
        [ -n "$DRIVER_VERSION" ] && { grep -qF "$DRIVER_VERSION" "$WORK/gantry-gpu.out" && seen+=", shows driver $DRIVER_VERSION" || seen+=", does not show driver $DRIVER_VERSION"; }
        for u in ${PROC_UUIDS[@]+"${PROC_UUIDS[@]}"}; do grep -qF "$u" "$WORK/gantry-gpu.out" || seen+=", does not show $u"; done
        pass gantry-gpu "$MS ms" "$seen"
        excerpt "$WORK/gantry-gpu.out" -12
      else
        fail gantry-gpu "bin/gantry gpu exited $RC"
        excerpt "$WORK/gantry-gpu.out"
      fi
    fi

    check_smi_L self ""
    check_vecadd self "" cuda-vecadd
    if [ -z "$CVA_RT" ]; then skip cuda-vecadd-rt "not built (no nvcc)"
    elif [ "$HOST_RT" = old-driver ]; then skip cuda-vecadd-rt "the driver is older than its CUDA runtime (see host-cuda-vecadd-rt)"
    else check_vecadd self "" cuda-vecadd-rt; fi
    probe_check visible-void self nothing NVIDIA_VISIBLE_DEVICES=void NVIDIA_DRIVER_CAPABILITIES=compute,utility
    probe_check visible-none self no-gpu NVIDIA_VISIBLE_DEVICES=none NVIDIA_DRIVER_CAPABILITIES=compute,utility
    if [ -z "$HOST_SMI" ]; then
      for c in visible-0 visible-uuid visible-1; do skip "$c" "the host has no nvidia-smi (used inside to tell which GPU is visible)"; done
    else
      probe_check visible-0 self "one:${GPU_UUIDS[0]:-}" NVIDIA_VISIBLE_DEVICES=0 NVIDIA_DRIVER_CAPABILITIES=compute,utility
      if [ "$NGPUS" -ge 1 ]; then
        # the last GPU, by its UUID
        probe_check visible-uuid self "one:${GPU_UUIDS[$((NGPUS - 1))]}" \
          NVIDIA_VISIBLE_DEVICES="${PROC_UUIDS[$((${#PROC_UUIDS[@]} - 1))]}" NVIDIA_DRIVER_CAPABILITIES=compute,utility
      else
        skip visible-uuid "no GPU UUID known on the host"
      fi
      if [ "$NGPUS" -ge 2 ]; then
        probe_check visible-1 self "one:${GPU_UUIDS[1]}" NVIDIA_VISIBLE_DEVICES=1 NVIDIA_DRIVER_CAPABILITIES=compute,utility
      else
        skip visible-1 "this machine has $NGPUS GPU(s): NVIDIA_VISIBLE_DEVICES=1 needs two"
      fi
    fi

    if [ "$UNPRIV" = 1 ]; then
      S="[$UNPRIV_USER]"
      check_smi_L unpriv "$S"
      check_vecadd unpriv "$S" cuda-vecadd
      probe_check "visible-void$S" unpriv nothing NVIDIA_VISIBLE_DEVICES=void NVIDIA_DRIVER_CAPABILITIES=compute,utility
    fi
  fi
  [ "$UNPRIV" = 0 ] && skip "unprivileged ($UNPRIV_USER)" "${UNPRIV_WHY:-not possible}"
else
  skip sandbox "nothing imported: no sandbox check can run"
fi

finish
