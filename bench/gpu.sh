#!/usr/bin/env bash
# Gantry GPU benchmark: what NVIDIA GPU injection adds to a sandbox start, and how that compares
# with what users would otherwise do, all in one run, on a small Debian image (mmdebstrap
# --variant=apt bookworm, one layer, has glibc and ldconfig):
#
#   A     gantry start IMG true                        no GPU: the baseline
#   B     gantry start --gpus all -e NVIDIA_DRIVER_CAPABILITIES=compute,utility IMG true
#   C     bwrap doing a comparable injection by hand, as Apptainer's --nv does: on the image
#         unpacked with gantry unpack, --dev-bind every /dev/nvidia* node Gantry would bind,
#         --ro-bind every driver library Gantry selects (gantry gpu --json) into one directory
#         (/.singularity.d/libs, a tmpfs) with their soname links, --ro-bind the driver's
#         binaries into /usr/bin, LD_LIBRARY_PATH=that directory; no ldconfig (Apptainer's way)
#   C0    the same bwrap without any of it (what C adds, beside what B adds to A)
#   D(A)  gantry-exec PLAN true                        the launcher alone, A's plan (no Node)
#   D(B)  gantry-exec PLAN true                        the launcher alone, B's plan: the binds,
#                                                      links and the host's static ldconfig
#   D(B-l) gantry-exec PLAN true                       B's plan without its ldconfig op (a copy with
#                                                      that line deleted): D(B) - D(B-l) is ldconfig
#   P(A), P(B)  GANTRY_LAUNCH=print node bin/gantry.js start ... IMG true: Node computing and
#               printing A's and B's plans, not running them (where the rest of B - A goes)
# The plans of D are what P prints (`bin/gantry` itself would exec them: it consumes GANTRY_LAUNCH).
#
# Before timing it checks that the injection works: in B, `ldconfig -p` lists libcuda.so.1 (when
# the image has ldconfig) and, in B and C, `nvidia-smi -L` lists the GPUs (libnvidia-ml resolved
# through the ld cache in B, through LD_LIBRARY_PATH in C). A command whose check fails is
# reported as FAILED and not timed; the script then exits 1 after the report.
#
# The driver: the host's when /proc/driver/nvidia/version exists (GANTRY_DRIVER_ROOT unset), else
# a fake driver tree (test/fixtures/fake-driver.ts: NVIDIA 550.54.15, 2 GPUs, small real
# libraries with the driver's sonames) built in the work directory, with GANTRY_DRIVER_ROOT
# pointing at it. BENCH_FAKE_DRIVER=1 uses the fake one even on a GPU machine.
#
# Every timing is hyperfine -N (no shell in between) with --warmup and --runs; ratios are of
# medians, with the same ratio of mean user+system CPU time beside them (steadier under load).
#
# Usage: bash bench/gpu.sh [--runs N] [--warmup N] [--json] [--keep-json DIR]
#   --runs N         timed runs per command (default 30)
#   --warmup N       untimed runs first (default 5)
#   --json           print a JSON summary on stdout instead of the table (progress goes to stderr)
#   --keep-json DIR  copy hyperfine's JSON export to DIR
# Environment: GANTRY (default <repo>/bin/gantry, the shell wrapper), GANTRY_BENCH_CACHE (image
#   cache, default <repo>/.cache/bench), GPU_BENCH_MIRROR (default http://deb.debian.org/debian),
#   BENCH_TMPFS_SIZE (default 2g), BENCH_WORKDIR (default /tmp), BENCH_TIMEOUT (seconds per
#   setup step, default 600), BENCH_FAKE_DRIVER=1.
# Needs: hyperfine bubblewrap docker-registry skopeo mmdebstrap pigz curl python3, node, a built
#   checkout (npm run build: dist/ and native/build/Release/gantry-exec). Run as root: the fake
#   driver's /dev nodes are then real character devices and the work directory is a tmpfs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${GANTRY_BENCH_CACHE:-$REPO/.cache/bench}
GANTRY=${GANTRY:-$REPO/bin/gantry}
GANTRY_JS=$(dirname "$(readlink -f "$GANTRY")")/gantry.js
GANTRY_EXEC=$(cd "$(dirname "$GANTRY_JS")/.." && pwd)/native/build/Release/gantry-exec   # what gantry execs
FAKE_DRIVER_JS=$REPO/dist/test/fixtures/fake-driver.js
MIRROR=${GPU_BENCH_MIRROR:-http://deb.debian.org/debian}
PY=/usr/bin/python3
TMPFS_SIZE=${BENCH_TMPFS_SIZE:-2g}
STEP_TIMEOUT=${BENCH_TIMEOUT:-600}
CAPS=compute,utility
LIBDIR=/.singularity.d/libs   # where Apptainer's --nv puts the driver's libraries (C)
T0=$EPOCHREALTIME
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

RUNS=30 WARMUP=5 JSON=0 KEEP=
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=${2:?--runs needs a number}; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --warmup) WARMUP=${2:?--warmup needs a number}; shift ;;
    --warmup=*) WARMUP=${1#*=} ;;
    --json) JSON=1 ;;
    --keep-json) KEEP=${2:?--keep-json needs a directory}; shift ;;
    --keep-json=*) KEEP=${1#*=} ;;
    -h|--help) bench_help; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bench_check_timing_options

missing=()
for t in hyperfine bwrap docker-registry skopeo mmdebstrap pigz curl "$PY" node timeout flock; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
((${#missing[@]} == 0)) || die "missing: ${missing[*]} (apt-get install hyperfine bubblewrap docker-registry skopeo mmdebstrap pigz curl python3; node 20+)"
[[ -x $GANTRY ]] || die "no gantry at $GANTRY"
[[ -f $GANTRY_JS ]] || die "no $GANTRY_JS (npm run build)"
[[ -x $GANTRY_EXEC ]] || die "no launcher at $GANTRY_EXEC (npm run build:native, with npm_config_nodedir=/usr)"
# hyperfine -N splits command lines itself: keep every path in them free of anything to quote
safe() { [[ $1 =~ ^[A-Za-z0-9_./+:,=-]+$ ]]; }
for p in "$REPO" "$GANTRY" "${BENCH_WORKDIR:-/tmp}"; do
  safe "$p" || die "path '$p' has characters the command lines would need to quote"
done
[[ $EUID == 0 ]] || log "WARNING: not root: no tmpfs, and the fake driver's /dev nodes are empty files, not devices (run as root for the real setup)"
# the host's NVIDIA_* variables override the image's (as with the container toolkit): A must get
# no GPU and B exactly what its options say
while read -r v; do unset "$v"; done < <(compgen -e | grep '^NVIDIA_' || true)

# ---------------------------------------------------------------- the image (cached)
# mmdebstrap's tarball, then a one-layer OCI layout of it (bench/mkoci.py, as ngc-like.sh does),
# each cached under a key of its inputs: only the first run pays (~2 minutes, mostly downloads).
SUITE=bookworm VARIANT=apt IMG=debian-apt
mkdir -p "$CACHE"
ROOTFS_KEY=$(printf '%s\n' "$SUITE" "$VARIANT" | sha256sum | cut -c1-16)
ROOTFS_TAR=$CACHE/$IMG-rootfs-$ROOTFS_KEY.tar
LAYOUT_KEY=$( { echo "$ROOTFS_KEY"; sha256sum <"$HERE/mkoci.py"; } | sha256sum | cut -c1-16)
LAYOUT=$CACHE/$IMG
(
  # one builder at a time: the other benchmark scripts take the same lock for their images
  if [[ -w $CACHE ]]; then exec 9>>"$CACHE/.lock"; flock 9; fi
  if [[ ! -s $ROOTFS_TAR ]]; then
    log "building the $IMG root filesystem with mmdebstrap (about 2 minutes) -> $ROOTFS_TAR"
    t=$EPOCHREALTIME
    rm -f "$ROOTFS_TAR.part.tar"
    mmdebstrap --variant="$VARIANT" "$SUITE" "$ROOTFS_TAR.part.tar" "$MIRROR" </dev/null >"$CACHE/$IMG-mmdebstrap.log" 2>&1 \
      || { tail -20 "$CACHE/$IMG-mmdebstrap.log" >&2; die "mmdebstrap failed (log: $CACHE/$IMG-mmdebstrap.log)"; }
    mv "$ROOTFS_TAR.part.tar" "$ROOTFS_TAR"
    log "root filesystem built in $(elapsed "$t") s"
  fi
  if [[ ! -f $LAYOUT/index.json || ! -f $LAYOUT.stamp || $(cat "$LAYOUT.stamp") != "$LAYOUT_KEY" ]]; then
    log "building the OCI layout -> $LAYOUT"
    rm -rf "$LAYOUT" "$LAYOUT.parts" "$LAYOUT.stamp" "$LAYOUT.info.json"
    "$PY" "$HERE/mkoci.py" split --tag bench "$ROOTFS_TAR" "$LAYOUT" >/dev/null
    echo "$LAYOUT_KEY" >"$LAYOUT.stamp"
  fi
)
[[ -f $LAYOUT/index.json ]] || die "no layout at $LAYOUT"

# ---------------------------------------------------------------- work dir, tmpfs, cleanup
WORK=$(mktemp -d "${BENCH_WORKDIR:-/tmp}/gantry-gpu-bench.XXXXXX")
MOUNTED=0 REG_PID=
trap bench_cleanup EXIT   # kill the jobs and the registry, unmount, remove WORK
trap bench_interrupted INT TERM

if [[ $EUID == 0 ]]; then
  if mount -t tmpfs -o size="$TMPFS_SIZE",mode=0755 tmpfs "$WORK"; then MOUNTED=1
  else log "WARNING: could not mount a tmpfs; working on $(df --output=fstype "$WORK" | tail -1)"; fi
fi
mkdir -p "$WORK"/{tmp,results,config,data}
export TMPDIR=$WORK/tmp   # skopeo and friends spill here, not on the disk
export GANTRY_STORE=$WORK/store GANTRY_DATA=$WORK/data GANTRY_CONFIG=$WORK/config
cd "$WORK"   # gantry start mounts the current directory when it is inside: keep it neutral
STEP_ERR=$WORK/err   # step's (lib.sh)

# ---------------------------------------------------------------- the driver
if [[ -r /proc/driver/nvidia/version && ${BENCH_FAKE_DRIVER:-0} != 1 ]]; then
  unset GANTRY_DRIVER_ROOT
  DRIVER_KIND=real
  DRIVER_DESC="the host's NVIDIA driver ($(head -1 /proc/driver/nvidia/version | sed 's/  */ /g'))"
else
  [[ -f $FAKE_DRIVER_JS ]] || die "no $FAKE_DRIVER_JS (npm run build)"
  CHARDEV=true; [[ $EUID == 0 ]] || CHARDEV=false
  step "fake driver" node -e "import(process.argv[1]).then((m) => m.makeFakeDriver(process.argv[2], { charDevices: $CHARDEV }))" \
    "$FAKE_DRIVER_JS" "$WORK/driver"
  export GANTRY_DRIVER_ROOT=$WORK/driver
  DRIVER_KIND=fake
  DRIVER_DESC="a fake driver tree (test/fixtures/fake-driver.ts) at GANTRY_DRIVER_ROOT=$WORK/driver$([[ $CHARDEV == true ]] || echo ', /dev nodes as empty files')"
fi

# ---------------------------------------------------------------- registry (lib.sh, as in import.sh and sandbox.sh)
bench_start_registry "$WORK"
step "push $IMG to $REG" bench_push_layout "$LAYOUT" bench "$REG/$IMG:bench" oci

# ---------------------------------------------------------------- import, unpack
"$GANTRY" --version >/dev/null 2>"$STEP_ERR" || { sed 's/^/  | /' "$STEP_ERR" >&2; die "gantry ($GANTRY) does not run (npm run build?)"; }
step "gantry import $IMG" "$GANTRY" import "$REG/$IMG:bench" --name "$IMG" --quiet
ROOTFS=$WORK/rootfs
step "gantry unpack $IMG" "$GANTRY" unpack "$IMG" "$ROOTFS"

# ---------------------------------------------------------------- what Gantry injects -> C's bwrap
step "gantry gpu --json" "$GANTRY" gpu --gpus all --caps "$CAPS" --json
cp "$WORK/out" "$WORK/gpu.json"
DRIVER_DESC+=$("$PY" - "$WORK/gpu.json" <<'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
d, gpus = g['driver'], g['gpus']
print(f": NVIDIA {d['version']} (CUDA {d.get('cuda') or '?'}), {len(gpus)} GPU(s){', ' + gpus[0]['model'] if gpus else ''}")
EOF
)
log "driver: $DRIVER_DESC"
# One word per line: C's injection options, from the same selection Gantry makes (driver root +
# path for the sources). Devices at their paths, libraries at LIBDIR/<file> with their links,
# binaries at /usr/bin/<name> (where Apptainer puts them). Gantry's extra files and directories
# (OpenCL ICD, persistenced socket, firmware) are left out: Apptainer's --nv does not bind them.
mapfile -t INJECT < <("$PY" - "$WORK/gpu.json" "$LIBDIR" <<'EOF'
import json, os, sys
g = json.load(open(sys.argv[1]))
libdir = sys.argv[2]
root = g['driverRoot'].rstrip('/')
s = g['sandbox']
out = []
for d in s['devices']:
    out += ['--dev-bind', root + d, d]
out += ['--tmpfs', libdir]
for lib in s['libraries']:
    name = os.path.basename(lib['path'])
    out += ['--ro-bind', root + lib['path'], f'{libdir}/{name}']
    for link in lib.get('links', []):
        out += ['--symlink', name, f'{libdir}/{link}']
for b in s['binaries']:
    out += ['--ro-bind', root + b, '/usr/bin/' + os.path.basename(b)]
out += ['--setenv', 'LD_LIBRARY_PATH', libdir]
print('\n'.join(out))
EOF
)
for w in "${INJECT[@]}"; do safe "$w" || die "'$w' (from gantry gpu --json) would need quoting in hyperfine's command line"; done
read -r N_DEV N_LIB N_LINK N_BIN N_EXTRA BIN_NAMES < <("$PY" -c '
import json, sys; s = json.load(open(sys.argv[1]))["sandbox"]
print(len(s["devices"]), len(s["libraries"]), sum(len(l.get("links", [])) for l in s["libraries"]), len(s["binaries"]),
      len(s.get("files", [])) + len(s.get("dirs", [])), ",".join(b.rsplit("/", 1)[-1] for b in s["binaries"]) or "-")' "$WORK/gpu.json")
((N_DEV > 0 && N_LIB > 0)) || die "gantry gpu selected no devices or no libraries (see $WORK/gpu.json)"
# bwrap creates missing mount points inside the (writable) rootfs; create them once here, untimed,
# as an Apptainer image carries /.singularity.d, so that no run writes into the rootfs
mkdir -p "$ROOTFS$LIBDIR"
for b in ${BIN_NAMES//,/ }; do
  [[ $b == - || -e $ROOTFS/usr/bin/$b ]] || install -m 0755 /dev/null "$ROOTFS/usr/bin/$b"
done
BWRAP="bwrap --unshare-user --bind $ROOTFS / --proc /proc --dev /dev"
BWRAP_GPU="$BWRAP ${INJECT[*]}"

# ---------------------------------------------------------------- the plans (D)
START_GPU=(start --gpus all -e "NVIDIA_DRIVER_CAPABILITIES=$CAPS")
# node directly: through the wrapper, GANTRY_LAUNCH=print would be consumed and the plan run
GANTRY_LAUNCH=print node "$GANTRY_JS" start "$IMG" true >"$WORK/launch-a" 2>"$STEP_ERR" \
  || { sed 's/^/  | /' "$STEP_ERR" >&2; die "could not get the plan of A"; }
GANTRY_LAUNCH=print node "$GANTRY_JS" "${START_GPU[@]}" "$IMG" true >"$WORK/launch-b" 2>"$STEP_ERR" \
  || { sed 's/^/  | /' "$STEP_ERR" >&2; die "could not get the plan of B"; }
EXEC_A=$(cat "$WORK/launch-a") EXEC_B=$(cat "$WORK/launch-b")
read -r _ PLAN_A _ <<<"$EXEC_A"
read -r _ PLAN_B _ <<<"$EXEC_B"
for p in "$PLAN_A" "$PLAN_B"; do [[ -f $p ]] || die "no plan file at '$p' (launch lines: $EXEC_A | $EXEC_B)"; done
for w in $EXEC_A $EXEC_B; do safe "$w" || die "launch line word '$w' would need quoting"; done
! grep -q nvidia "$PLAN_A" || die "A's plan binds NVIDIA files (an environ.d setting NVIDIA_VISIBLE_DEVICES?): $PLAN_A"
grep -q '^ldconfig ' "$PLAN_B" || log "WARNING: B's plan has no ldconfig step"
# the launcher's share split in two: B's plan with and without the ldconfig op (plans carry no
# checksum: a copy without that line is a valid plan; libcuda.so.1 then resolves only by path)
PLAN_BL=$WORK/plan-b-no-ldconfig
grep -v '^ldconfig ' "$PLAN_B" >"$PLAN_BL"
EXEC_BL=${EXEC_B/"$PLAN_B"/"$PLAN_BL"}
PLAN_EXTRA=$(awk 'NR == FNR { a[$1]++; next } { b[$1]++ } END { for (k in b) if (b[k] > a[k]) printf "%s%d %s", sep, b[k] - a[k], k, sep = ", " }' \
  "$PLAN_A" "$PLAN_B")

# ---------------------------------------------------------------- correctness checks (not timed)
declare -A FAILED=()
CHECKS=()
# check NAME WHAT CMD...: run CMD once; on failure mark NAME failed (it will not be timed)
check() {
  local name=$1 what=$2 rc=0; shift 2
  timeout 120 "$@" >"$WORK/check" 2>&1 || rc=$?
  if [[ $rc == 0 ]]; then
    CHECKS+=("$what: ok ($(grep -c . "$WORK/check") line(s); first: $(head -1 "$WORK/check" | tr -s ' \t' ' ' | sed 's/^ //'))")
  else
    FAILED[$name]="check failed: $what (exit $rc): $(tail -2 "$WORK/check" | tr '\n' ' ')"
    CHECKS+=("$what: FAILED (exit $rc)")
    log "check FAILED: $what (exit $rc):"; sed 's/^/  | /' "$WORK/check" | tail -10 >&2
  fi
}
if [[ -e $ROOTFS/sbin/ldconfig || -e $ROOTFS/usr/sbin/ldconfig ]]; then
  check B "B: ldconfig -p lists libcuda.so.1" "$GANTRY" "${START_GPU[@]}" "$IMG" sh -c 'ldconfig -p | grep -F libcuda.so.1'
else
  CHECKS+=("B: the image has no ldconfig: ldconfig -p not checked")
fi
if [[ ,$BIN_NAMES, == *,nvidia-smi,* ]]; then
  check B "B: nvidia-smi -L" "$GANTRY" "${START_GPU[@]}" "$IMG" sh -c 'nvidia-smi -L | grep "^GPU "'
  # shellcheck disable=SC2086  # word splitting wanted: the same command line hyperfine gets
  check C "C: nvidia-smi -L (libnvidia-ml through LD_LIBRARY_PATH)" $BWRAP_GPU sh -c 'nvidia-smi -L | grep "^GPU "'
fi
# shellcheck disable=SC2086
check C "C: $LIBDIR/libcuda.so.1 is there" $BWRAP_GPU sh -c "test -e $LIBDIR/libcuda.so.1 && ls -l $LIBDIR/libcuda.so.1"
SETUP_S=$(elapsed "$T0")

# ---------------------------------------------------------------- timing
# all in one hyperfine run (each once untimed first, like sandbox.sh's group: a command that
# fails is reported and left out), so that they share the machine's state
args=()
add() {
  local name=$1 cmd=$2 rc=0
  [[ -z ${FAILED[$name]:-} ]] || { log "$name not timed: ${FAILED[$name]}"; return 0; }
  # shellcheck disable=SC2086  # word splitting wanted, as hyperfine -N does
  timeout 120 $cmd >"$WORK/check" 2>&1 || rc=$?
  if [[ $rc == 0 ]]; then args+=(-n "$name" "$cmd")
  else
    FAILED[$name]="exit $rc: $(tail -3 "$WORK/check" | tr '\n' ' ')"
    log "$name FAILED (exit $rc), not timed: $cmd"; sed 's/^/  | /' "$WORK/check" | tail -10 >&2
  fi
}
add A "$GANTRY start $IMG true"
add B "$GANTRY ${START_GPU[*]} $IMG true"
add C0 "$BWRAP true"
add C "$BWRAP_GPU true"
add DA "$EXEC_A"
add DB "$EXEC_B"
add DBL "$EXEC_BL"
add PA "env GANTRY_LAUNCH=print node $GANTRY_JS start $IMG true"
add PB "env GANTRY_LAUNCH=print node $GANTRY_JS ${START_GPU[*]} $IMG true"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T1=$EPOCHREALTIME
log "timing: $RUNS runs (+$WARMUP warmup) per command"
if ((${#args[@]})); then
  hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/results/gpu.json" "${args[@]}" >&2 \
    || log "hyperfine failed"
fi
TIMING_S=$(elapsed "$T1")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
[[ -z $KEEP || ! -f $WORK/results/gpu.json ]] || cp "$WORK/results/gpu.json" "$KEEP/gpu.json"

# ---------------------------------------------------------------- report
FAILED_LIST=
for k in "${!FAILED[@]}"; do FAILED_LIST+="$k	${FAILED[$k]}"$'\n'; done
TOTAL_S=$(elapsed "$T0")
CHECK_LINES=$(printf '%s\n' "${CHECKS[@]}")
HOST_CPUS=$(nproc) HOST_NODE=$(node --version) HOST_KERNEL=$(uname -r)
HOST_BWRAP=$(bwrap --version | awk '{print $2}') HOST_HYPERFINE=$(hyperfine --version | awk '{print $2}')
export B_JSON=$JSON B_RUNS=$RUNS B_WARMUP=$WARMUP B_TMPFS=$MOUNTED B_ROOT=$((EUID == 0)) B_SETUP=$SETUP_S \
  B_TIMING=$TIMING_S B_TOTAL=$TOTAL_S B_RESULTS=$WORK/results/gpu.json B_INFO=$LAYOUT.info.json \
  B_DRIVER_KIND=$DRIVER_KIND B_DRIVER="$DRIVER_DESC" B_FAILED="$FAILED_LIST" B_CHECKS="$CHECK_LINES" \
  B_INJECT="$N_DEV $N_LIB $N_LINK $N_BIN $N_EXTRA" B_PLAN_EXTRA="$PLAN_EXTRA" B_CAPS=$CAPS B_LIBDIR=$LIBDIR \
  B_NPROC=$HOST_CPUS B_NODE=$HOST_NODE B_KERNEL=$HOST_KERNEL B_BWRAP=$HOST_BWRAP B_HYPERFINE=$HOST_HYPERFINE \
  B_LOAD="$LOAD_START -> $LOAD_END"
"$PY" - <<'EOF'
import json, os
E = os.environ
R = {}
if os.path.exists(E['B_RESULTS']):
    for r in json.load(open(E['B_RESULTS']))['results']:
        R[r['command']] = {'mean': r['mean'] * 1e3, 'median': r['median'] * 1e3, 'stddev': (r.get('stddev') or 0) * 1e3,
                           'min': r['min'] * 1e3, 'max': r['max'] * 1e3, 'cpu': (r['user'] + r['system']) * 1e3,
                           'runs': len(r['times'])}
failed = dict(l.split('\t', 1) for l in E['B_FAILED'].splitlines() if l)
checks = [l for l in E['B_CHECKS'].splitlines() if l]
n_dev, n_lib, n_link, n_bin, n_extra = map(int, E['B_INJECT'].split())
info = json.load(open(E['B_INFO']))
LABELS = [
    ('A', 'A  gantry start IMG true (no GPU)'),
    ('B', 'B  gantry start --gpus all -e CAPS IMG true'),
    ('C0', 'C0 bwrap on the unpacked rootfs, no GPU'),
    ('C', 'C  bwrap + Apptainer-style injection'),
    ('DA', "D(A) gantry-exec A's plan true"),
    ('DB', "D(B) gantry-exec B's plan true"),
    ('DBL', "D(B-l) ... without its ldconfig op"),
    ('PA', "P(A) node: A's plan computed, printed"),
    ('PB', "P(B) node: B's plan computed, printed"),
]
def med(k):
    return R[k]['median'] if k in R else None
def ratio(a, b, f='median'):
    return R[a][f] / R[b][f] if a in R and b in R and R[b][f] > 0 else None
def diff(a, b, f='median'):
    return R[a][f] - R[b][f] if a in R and b in R else None
RATIOS = [  # key, numerator, denominator, meaning
    ('B_over_A', 'B', 'A', 'B / A        gantry start, with GPUs / without'),
    ('B_over_C', 'B', 'C', 'B / C        with GPUs, gantry start / bwrap'),
    ('DB_over_DA', 'DB', 'DA', 'D(B) / D(A)  launcher alone, with GPUs / without'),
    ('C_over_C0', 'C', 'C0', 'C / C0       bwrap, with GPUs / without'),
    ('DB_over_C', 'DB', 'C', 'D(B) / C     with GPUs, launcher alone / bwrap'),
]
DIFFS = [
    ('B_minus_A', 'B', 'A', 'B - A        GPU injection in gantry start'),
    ('PB_minus_PA', 'PB', 'PA', 'P(B) - P(A)  ... of it in Node (driver, selection, plan)'),
    ('DB_minus_DA', 'DB', 'DA', 'D(B) - D(A)  ... of it in the launcher (binds, ldconfig)'),
    ('DB_minus_DBL', 'DB', 'DBL', 'D(B) - D(B-l)  ... of that, the ldconfig op'),
    ('C_minus_C0', 'C', 'C0', 'C - C0       GPU injection in bwrap'),
]
r3 = lambda v: None if v is None else round(v, 3)
if E['B_JSON'] == '1':
    out = {
        'benchmark': 'gpu', 'runs': int(E['B_RUNS']), 'warmup': int(E['B_WARMUP']), 'root': E['B_ROOT'] == '1',
        'tmpfs': E['B_TMPFS'] == '1', 'driver': {'kind': E['B_DRIVER_KIND'], 'description': E['B_DRIVER']},
        'capabilities': E['B_CAPS'],
        'injected': {'devices': n_dev, 'libraries': n_lib, 'links': n_link, 'binaries': n_bin, 'gantryOnlyFilesAndDirs': n_extra},
        'planExtraOps': E['B_PLAN_EXTRA'],
        'image': {k: info[k] for k in ('layers', 'compressedBytes', 'fileBytes', 'entries')},
        'seconds': {'setup': float(E['B_SETUP']), 'timing': float(E['B_TIMING']), 'total': float(E['B_TOTAL'])},
        'loadAverage': E['B_LOAD'],
        'host': {'cpus': int(E['B_NPROC']), 'node': E['B_NODE'], 'kernel': E['B_KERNEL'], 'bwrap': E['B_BWRAP'], 'hyperfine': E['B_HYPERFINE']},
        'checks': checks,
        'milliseconds': {k: {x: (round(v, 2) if isinstance(v, float) else v) for x, v in R[k].items()} for k in R},
        'ratios': {k: {'value': r3(ratio(a, b)), 'cpuRatio': r3(ratio(a, b, 'cpu')), 'meaning': m} for k, a, b, m in RATIOS},
        'differencesMs': {k: {'median': r3(diff(a, b)), 'cpu': r3(diff(a, b, 'cpu')), 'meaning': m} for k, a, b, m in DIFFS},
        'failed': failed,
    }
    print(json.dumps(out, indent=2))
    raise SystemExit(0)
print('Gantry GPU injection benchmark')
print(f"  driver: {E['B_DRIVER']}")
print(f"  injected (--gpus all, NVIDIA_DRIVER_CAPABILITIES={E['B_CAPS']}): {n_dev} device nodes, {n_lib} libraries "
      f"+ {n_link} links, {n_bin} binaries (same in C, libraries in {E['B_LIBDIR']}); Gantry also binds {n_extra} more "
      f"files/dirs and runs ldconfig")
print(f"  B's plan over A's: {E['B_PLAN_EXTRA']}")
print(f"  image: mmdebstrap --variant=apt bookworm, {info['layers']} layer, {info['fileBytes']/1e6:.0f} MB unpacked, "
      f"{info['entries']} entries")
print(f"  hyperfine -N, {E['B_RUNS']} runs + {E['B_WARMUP']} warmup per command; "
      f"{'as root' if E['B_ROOT'] == '1' else 'NOT as root'}, {'work dir on a tmpfs' if E['B_TMPFS'] == '1' else 'work dir NOT on a tmpfs'}; "
      f"{E['B_NPROC']} CPUs, kernel {E['B_KERNEL']}, node {E['B_NODE']}, bwrap {E['B_BWRAP']}, hyperfine {E['B_HYPERFINE']}")
print(f"  load average {E['B_LOAD']} (start -> end of timing; above {E['B_NPROC']} means other work competed)")
print(f"  script: setup {float(E['B_SETUP']):.0f} s, timing {float(E['B_TIMING']):.0f} s, total {float(E['B_TOTAL']):.0f} s")
print()
print('  checks (before timing):')
for c in checks:
    print(f'    {c}')
print()
print(f"  {'ms':46}{'mean':>8}{'± sd':>8}{'median':>8}{'min':>8}{'cpu':>8}")
for k, label in LABELS:
    if k in R:
        r = R[k]
        print(f"  {label:46}{r['mean']:8.1f}{r['stddev']:8.1f}{r['median']:8.1f}{r['min']:8.1f}{r['cpu']:8.1f}")
    else:
        print(f"  {label:46}  FAILED: {failed.get(k, 'no result')[:70]}")
print('  (cpu: mean user + system CPU time of the command and its children, less sensitive to other load)')
print()
print(f"  {'ratios':60}{'median':>8}{'cpu':>8}")
for k, a, b, m in RATIOS:
    v, c = ratio(a, b), ratio(a, b, 'cpu')
    print(f"  {m:60}{'n/a' if v is None else f'{v:.2f}x':>8}{'n/a' if c is None else f'{c:.2f}x':>8}")
print()
print(f"  {'differences, ms':60}{'median':>8}{'cpu':>8}")
for k, a, b, m in DIFFS:
    v, c = diff(a, b), diff(a, b, 'cpu')
    print(f"  {m:60}{'n/a' if v is None else f'{v:.1f}':>8}{'n/a' if c is None else f'{c:.1f}':>8}")
EOF
((${#FAILED[@]} == 0)) || exit 1
