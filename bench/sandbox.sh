#!/usr/bin/env bash
# Gantry sandbox benchmark: how long `gantry create` and starting a sandbox take, on the
# NGC-like image (bench/ngc-like.sh: 13 layers, ~1.2 GB, has python3) and on busybox (2 MB),
# against bubblewrap on a plain unpacked root filesystem and against the host.
#
#   setup (not timed)  push both images to a loopback docker-registry, gantry import both into a
#                      private store (on a tmpfs when root), gantry unpack each into a plain rootfs
#                      directory (for bwrap), gantry create one sandbox on the NGC-like image
#   create             gantry create --name S ngc-like   vs   gantry create --name S busybox
#                      (the sandbox is removed before every run, with gantry remove -f)
#   start, for CMD in `true` and `python3 -c pass`, on the NGC-like image:
#     a  gantry-exec SANDBOX/plan CMD      the created sandbox's compiled plan, no Node at all
#     b  gantry start SANDBOX CMD          the command line: Node computes the plan, execs (a)
#     c  bwrap --unshare-user --bind ROOTFS / --proc /proc --dev /dev CMD   on the unpacked rootfs
#     d  CMD on the host
#   where `gantry start` spends its time: node -e 0, node bin/gantry.js --version, and
#     GANTRY_LAUNCH=print node bin/gantry.js start SANDBOX true (the plan, computed and printed,
#     not run)
#   user (when root and not --no-user): a and c with `true` as the unprivileged user gantry-test
#     (created if missing), from a store that user imported into a directory they own
#
# Every timing is hyperfine (-N: no shell in between, warmup, --runs N); the raw exports are
# kept when --keep-json DIR is given. Ratios are of medians, with the same ratios of mean
# user+system CPU time beside them (steadier when other work shares the machine).
#
# Usage: bash bench/sandbox.sh [--runs N] [--warmup N] [--json] [--no-user] [--keep-json DIR]
#   --runs N         timed runs per command (default 30)
#   --warmup N       untimed runs first (default 5)
#   --json           print a JSON summary on stdout instead of the table (progress goes to stderr)
#   --no-user        skip the unprivileged-user part (it re-imports the NGC-like image: ~45 s)
#   --keep-json DIR  copy hyperfine's JSON exports to DIR
# Environment: GANTRY (default <repo>/bin/gantry, the shell wrapper), GANTRY_EXEC (default
#   native/build/Release/gantry-exec next to that gantry's bin/), GANTRY_BENCH_CACHE (see ngc-like.sh),
#   BENCH_TMPFS_SIZE (default 8g), BENCH_WORKDIR (default /tmp), BENCH_TIMEOUT (seconds per
#   setup step, default 600), BENCH_USER (default gantry-test).
# Needs: hyperfine bubblewrap docker-registry skopeo pigz curl python3 (+ what ngc-like.sh needs, once).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${GANTRY_BENCH_CACHE:-$REPO/.cache/bench}
GANTRY=${GANTRY:-$REPO/bin/gantry}
GANTRY_JS=$(dirname "$(readlink -f "$GANTRY")")/gantry.js
GANTRY_EXEC=${GANTRY_EXEC:-$(cd "$(dirname "$GANTRY_JS")/.." && pwd)/native/build/Release/gantry-exec}
PY=/usr/bin/python3
TMPFS_SIZE=${BENCH_TMPFS_SIZE:-8g}
STEP_TIMEOUT=${BENCH_TIMEOUT:-600}
TEST_USER=${BENCH_USER:-gantry-test}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

RUNS=30 WARMUP=5 JSON=0 USER_PART=1 KEEP=
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=${2:?--runs needs a number}; shift ;;
    --runs=*) RUNS=${1#*=} ;;
    --warmup) WARMUP=${2:?--warmup needs a number}; shift ;;
    --warmup=*) WARMUP=${1#*=} ;;
    --json) JSON=1 ;;
    --no-user) USER_PART=0 ;;
    --keep-json) KEEP=${2:?--keep-json needs a directory}; shift ;;
    --keep-json=*) KEEP=${1#*=} ;;
    -h|--help) bench_help; exit 0 ;;
    *) echo "sandbox.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
bench_check_timing_options

for t in hyperfine bwrap docker-registry skopeo pigz curl "$PY" timeout node; do
  command -v "$t" >/dev/null 2>&1 || die "$t is missing (apt-get install hyperfine bubblewrap docker-registry skopeo pigz curl python3)"
done
[[ -x $GANTRY ]] || die "no gantry at $GANTRY"
[[ -x $GANTRY_EXEC ]] || die "no launcher at $GANTRY_EXEC (npm run build:native)"
# hyperfine -N splits command lines itself: keep the paths free of anything that needs quoting
for p in "$REPO" "$GANTRY" "$GANTRY_EXEC" "${BENCH_WORKDIR:-/tmp}"; do
  [[ $p =~ ^[A-Za-z0-9_./+-]+$ ]] || die "path '$p' has characters the command lines would need to quote"
done
if [[ $USER_PART == 1 && $EUID != 0 ]]; then log "not root: skipping the $TEST_USER part"; USER_PART=0; fi

# ---------------------------------------------------------------- the images (cached)
bash "$HERE/ngc-like.sh" --quiet
for img in ngc-like busybox; do [[ -f $CACHE/$img/index.json ]] || die "no layout at $CACHE/$img"; done

# ---------------------------------------------------------------- work dir, tmpfs, cleanup
WORK=$(mktemp -d "${BENCH_WORKDIR:-/tmp}/gantry-sandbox-bench.XXXXXX")
MOUNTED=0 REG_PID=
RSB=()   # sandboxes to remove on exit, as root
USB=()   # ... as the test user
# the sandboxes' part of the cleanup (bench_cleanup runs it, after killing the jobs)
remove_sandboxes() {
  if ((${#RSB[@]})); then
    timeout 60 env GANTRY_STORE="$WORK/root/store" GANTRY_DATA="$WORK/root/data" GANTRY_CONFIG="$WORK/root/config" \
      "$GANTRY" remove -f "${RSB[@]}" >/dev/null 2>&1
  fi
  if ((${#USB[@]})); then
    (cd / && timeout 60 runuser -u "$TEST_USER" -- env GANTRY_STORE="$WORK/user/store" GANTRY_DATA="$WORK/user/data" \
      GANTRY_CONFIG="$WORK/user/config" "$GANTRY" remove -f "${USB[@]}" >/dev/null 2>&1)
  fi
}
trap 'bench_cleanup remove_sandboxes' EXIT   # kill the jobs, remove the sandboxes, kill the registry, unmount, remove WORK
trap bench_interrupted INT TERM

if [[ $EUID == 0 ]]; then
  if mount -t tmpfs -o size="$TMPFS_SIZE",mode=0755 tmpfs "$WORK"; then MOUNTED=1
  else log "WARNING: could not mount a tmpfs; working on $(df --output=fstype "$WORK" | tail -1)"; fi
else
  log "WARNING: not root, so no tmpfs: working on $(df --output=fstype "$WORK" | tail -1) at $WORK"
fi
chmod 0755 "$WORK"
mkdir -p "$WORK"/{tmp,results,root/config,root/data}
export TMPDIR=$WORK/tmp   # skopeo and friends spill here, not on the disk
STEP_ERR=$WORK/err   # step's (lib.sh)

# ---------------------------------------------------------------- registry (lib.sh, as in import.sh and gpu.sh)
bench_start_registry "$WORK"
for img in ngc-like busybox; do
  step "push $img to $REG" bench_push_layout "$CACHE/$img" bench "$REG/$img:bench" oci
done

# ---------------------------------------------------------------- import, unpack, create (root)
export GANTRY_STORE=$WORK/root/store GANTRY_DATA=$WORK/root/data GANTRY_CONFIG=$WORK/root/config
cd "$WORK"   # gantry start mounts the current directory when it is inside: keep it neutral
"$GANTRY" --version >/dev/null 2>"$STEP_ERR" || { sed 's/^/  | /' "$STEP_ERR" >&2; die "gantry ($GANTRY) does not run (npm run build?)"; }
for img in ngc-like busybox; do
  step "gantry import $img" "$GANTRY" import "$REG/$img:bench" --name "$img" --quiet
  step "gantry unpack $img" "$GANTRY" unpack "$img" "$WORK/root/rootfs-$img"
done
SB=bench-start CSB=bench-create
RSB=("$SB" "$CSB")
step "gantry create $SB (ngc-like)" "$GANTRY" create --name "$SB" ngc-like
PLAN=$GANTRY_DATA/sandboxes/$SB/plan
[[ -f $PLAN ]] || die "gantry create wrote no compiled plan at $PLAN"
ROOTFS=$WORK/root/rootfs-ngc-like
BWRAP="bwrap --unshare-user --bind $ROOTFS / --proc /proc --dev /dev"
HOST_PY=$PY   # not PATH's python3: that may be a pyenv shim (a shell script, ~1 s)
HOST_TRUE=$(command -v true)

# ---------------------------------------------------------------- hyperfine groups
declare -A FAILED=()
AS=()   # a prefix that runs a command as another user, with that user's GANTRY_* variables
# group FILE PREPARE NAME CMD [NAME CMD]...: check that every CMD succeeds once (a failing one
# is reported and left out), then time the others with hyperfine -N into FILE
group() {
  local file=$1 prepare=$2; shift 2
  local args=() name cmd rc
  while (($#)); do
    name=$1 cmd=$2; shift 2
    [[ -n $prepare ]] && "${AS[@]}" bash -c "$prepare" >/dev/null 2>&1
    rc=0; "${AS[@]}" timeout 120 bash -c "$cmd" >"$WORK/check" 2>&1 || rc=$?
    if [[ $rc == 0 ]]; then
      args+=(-n "$name" "$cmd")
    else
      FAILED[$name]="exit $rc: $(tail -3 "$WORK/check" | tr '\n' ' ')"
      log "$name FAILED (exit $rc), not timed: $cmd"; sed 's/^/  | /' "$WORK/check" | tail -10 >&2
    fi
  done
  ((${#args[@]})) || return 0
  local pre=()
  [[ -n $prepare ]] && pre=(--prepare "bash -c $(printf %q "$prepare")")
  "${AS[@]}" hyperfine -N --style basic --warmup "$WARMUP" --runs "$RUNS" "${pre[@]}" \
    --export-json "$file" "${args[@]}" >&2 || log "hyperfine failed for $file"
}

START=$EPOCHREALTIME LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "timing: $RUNS runs (+$WARMUP warmup) per command"
group "$WORK/results/create.json" "$GANTRY remove -f $CSB || true" \
  create.ngc-like "$GANTRY create --name $CSB ngc-like" \
  create.busybox "$GANTRY create --name $CSB busybox"
"$GANTRY" remove -f "$CSB" >/dev/null 2>&1 || true

# NODE_EXTRA_CA_CERTS makes every node process parse that bundle at startup (tens of ms): when
# it is set, gantry start and node -e 0 are also timed without it
NOCA=()
[[ -n ${NODE_EXTRA_CA_CERTS:-} ]] && NOCA=(true.start.noca "env -u NODE_EXTRA_CA_CERTS $GANTRY start $SB true")
group "$WORK/results/true.json" "" \
  true.exec "$GANTRY_EXEC $PLAN true" \
  true.start "$GANTRY start $SB true" \
  "${NOCA[@]}" \
  true.bwrap "$BWRAP true" \
  true.host "$HOST_TRUE"

# right after the start group, so that the differences between them mean something
NOCA=()
[[ -n ${NODE_EXTRA_CA_CERTS:-} ]] && NOCA=(node.empty.noca "env -u NODE_EXTRA_CA_CERTS node -e 0")
group "$WORK/results/node.json" "" \
  node.empty "node -e 0" \
  "${NOCA[@]}" \
  node.version "node $GANTRY_JS --version" \
  node.plan "env GANTRY_LAUNCH=print node $GANTRY_JS start $SB true"

group "$WORK/results/python.json" "" \
  python.exec "$GANTRY_EXEC $PLAN python3 -c pass" \
  python.start "$GANTRY start $SB python3 -c pass" \
  python.bwrap "$BWRAP python3 -c pass" \
  python.host "$HOST_PY -c pass"

# ---------------------------------------------------------------- the unprivileged user
USER_NOTE=
if [[ $USER_PART == 1 ]]; then
  if ! id "$TEST_USER" >/dev/null 2>&1; then
    useradd -m "$TEST_USER" || { USER_PART=0; USER_NOTE="could not create user $TEST_USER"; log "$USER_NOTE"; }
  fi
fi
if [[ $USER_PART == 1 ]]; then
  U=$WORK/user
  mkdir -p "$U"/{config,data,results,tmp}
  chown -R "$TEST_USER": "$U"
  AS=(runuser -u "$TEST_USER" -- env TMPDIR="$U/tmp" GANTRY_STORE="$U/store" GANTRY_DATA="$U/data" GANTRY_CONFIG="$U/config")
  cd "$U"
  if step "gantry import ngc-like as $TEST_USER" "${AS[@]}" "$GANTRY" import "$REG/ngc-like:bench" --name ngc-like --quiet \
     && step "gantry unpack ngc-like as $TEST_USER" "${AS[@]}" "$GANTRY" unpack ngc-like "$U/rootfs-ngc-like" \
     && USB=("$SB") && step "gantry create $SB as $TEST_USER" "${AS[@]}" "$GANTRY" create --name "$SB" ngc-like; then
    group "$U/results/user.json" "" \
      user.true.exec "$GANTRY_EXEC $U/data/sandboxes/$SB/plan true" \
      user.true.bwrap "bwrap --unshare-user --bind $U/rootfs-ngc-like / --proc /proc --dev /dev true"
    [[ -f $U/results/user.json ]] && cp "$U/results/user.json" "$WORK/results/"
  fi
  AS=()
  cd "$WORK"
fi
TOTAL=$(elapsed "$START")
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
[[ -z $KEEP ]] || cp "$WORK"/results/*.json "$KEEP"/ 2>/dev/null || true

# ---------------------------------------------------------------- report
FAILED_LIST=
for k in "${!FAILED[@]}"; do FAILED_LIST+="$k	${FAILED[$k]}"$'\n'; done
HOST_CPUS=$(nproc) HOST_NODE=$(node --version) HOST_KERNEL=$(uname -r)
HOST_BWRAP=$(bwrap --version | awk '{print $2}') HOST_HYPERFINE=$(hyperfine --version | awk '{print $2}')
export B_JSON=$JSON B_RUNS=$RUNS B_WARMUP=$WARMUP B_TMPFS=$MOUNTED B_TOTAL=$TOTAL B_RESULTS=$WORK/results \
  B_CACHE=$CACHE B_USER_PART=$USER_PART B_USER=$TEST_USER B_USER_NOTE="$USER_NOTE" B_FAILED="$FAILED_LIST" \
  B_NPROC=$HOST_CPUS B_NODE=$HOST_NODE B_KERNEL=$HOST_KERNEL B_BWRAP=$HOST_BWRAP \
  B_HYPERFINE=$HOST_HYPERFINE B_LOAD="$LOAD_START -> $LOAD_END"
"$PY" - <<'EOF'
import glob, json, os
E = os.environ
R = {}
for f in sorted(glob.glob(os.path.join(E['B_RESULTS'], '*.json'))):
    for r in json.load(open(f))['results']:
        R[r['command']] = {'mean': r['mean'] * 1e3, 'median': r['median'] * 1e3, 'stddev': (r.get('stddev') or 0) * 1e3,
                           'min': r['min'] * 1e3, 'max': r['max'] * 1e3, 'cpu': (r['user'] + r['system']) * 1e3,
                           'runs': len(r['times'])}
failed = dict(l.split('\t', 1) for l in E['B_FAILED'].splitlines() if l)
def med(k):
    return R[k]['median'] if k in R else None
def ratio(a, b):
    a, b = med(a), med(b)
    return None if a is None or b is None or b == 0 else a / b
def cpu_ratio(a, b):
    return R[a]['cpu'] / R[b]['cpu'] if a in R and b in R and R[b]['cpu'] > 0 else None
images = {}
for n in ('ngc-like', 'busybox'):
    i = json.load(open(os.path.join(E['B_CACHE'], n + '.info.json')))
    images[n] = {'layers': i['layers'], 'compressedBytes': i['compressedBytes'], 'unpackedBytes': i['fileBytes'], 'entries': i['entries']}
LABELS = [
    ('create.ngc-like', 'gantry create  ngc-like (13 layers)'),
    ('create.busybox', 'gantry create  busybox (1 layer)'),
    None,
    ('true.exec', 'true     a gantry-exec PLAN (compiled plan)'),
    ('true.start', 'true     b gantry start SB'),
    ('true.start.noca', 'true     b gantry start SB, NODE_EXTRA_CA_CERTS unset'),
    ('true.bwrap', 'true     c bwrap on the unpacked rootfs'),
    ('true.host', 'true     d host'),
    None,
    ('python.exec', 'python3  a gantry-exec PLAN (compiled plan)'),
    ('python.start', 'python3  b gantry start SB'),
    ('python.bwrap', 'python3  c bwrap on the unpacked rootfs'),
    ('python.host', 'python3  d host'),
    None,
    ('node.empty', 'node -e 0'),
    ('node.empty.noca', 'node -e 0, NODE_EXTRA_CA_CERTS unset'),
    ('node.version', 'node bin/gantry.js --version'),
    ('node.plan', 'GANTRY_LAUNCH=print node bin/gantry.js start SB true'),
    None,
    ('user.true.exec', f"as {E['B_USER']}: true  a gantry-exec PLAN"),
    ('user.true.bwrap', f"as {E['B_USER']}: true  c bwrap"),
]
# (key, value, target, unit, meaning, the same ratio of mean CPU times)
start_true, start_py = med('true.start'), med('python.start')
RATIOS = [
    ('create_ngc_over_busybox', ratio('create.ngc-like', 'create.busybox'), 1.2, 'x', 'gantry create: ngc-like / busybox', cpu_ratio('create.ngc-like', 'create.busybox')),
    ('exec_over_bwrap_true', ratio('true.exec', 'true.bwrap'), 2.0, 'x', 'compiled plan / bwrap, true', cpu_ratio('true.exec', 'true.bwrap')),
    ('exec_over_bwrap_python', ratio('python.exec', 'python.bwrap'), 2.0, 'x', 'compiled plan / bwrap, python3 -c pass', cpu_ratio('python.exec', 'python.bwrap')),
    ('start_true_ms', start_true, 120.0, 'ms', 'gantry start SB true (ms)', None),
    ('start_python_ms', start_py, None, 'ms', 'gantry start SB python3 -c pass (ms)', None),
    ('exec_python_over_host_python', ratio('python.exec', 'python.host'), None, 'x', 'compiled plan python / host python', cpu_ratio('python.exec', 'python.host')),
    ('start_over_exec_true', ratio('true.start', 'true.exec'), None, 'x', 'gantry start / compiled plan, true', cpu_ratio('true.start', 'true.exec')),
    ('start_noca_true_ms', med('true.start.noca'), 120.0, 'ms', 'gantry start SB true, NODE_EXTRA_CA_CERTS unset (ms)', None),
    ('user_exec_over_bwrap_true', ratio('user.true.exec', 'user.true.bwrap'), 2.0, 'x', f"as {E['B_USER']}: compiled plan / bwrap, true", cpu_ratio('user.true.exec', 'user.true.bwrap')),
]
def met(v, t, unit):
    if v is None or t is None:
        return None
    return v < t if unit == 'ms' else v <= t
if E['B_JSON'] == '1':
    out = {
        'benchmark': 'sandbox', 'runs': int(E['B_RUNS']), 'warmup': int(E['B_WARMUP']), 'tmpfs': E['B_TMPFS'] == '1',
        'timedWallSeconds': float(E['B_TOTAL']), 'images': images,
        'loadAverage': E['B_LOAD'],
        'host': {'cpus': int(E['B_NPROC']), 'node': E['B_NODE'], 'kernel': E['B_KERNEL'], 'bwrap': E['B_BWRAP'], 'hyperfine': E['B_HYPERFINE']},
        'milliseconds': {k: {x: (round(v, 2) if isinstance(v, float) else v) for x, v in R[k].items()} for k in R},
        'ratios': {k: {'value': None if v is None else round(v, 3), 'target': t, 'unit': u, 'meaning': m, 'met': met(v, t, u),
                       'cpuRatio': None if c is None else round(c, 3)}
                   for k, v, t, u, m, c in RATIOS},
        'userPart': E['B_USER_PART'] == '1', 'userNote': E['B_USER_NOTE'] or None,
        'nodeExtraCaCerts': 'node.empty.noca' in R,
        'failed': failed,
    }
    print(json.dumps(out, indent=2))
    raise SystemExit(0)
MB = 1e6
ng, bb = images['ngc-like'], images['busybox']
print('Gantry sandbox benchmark')
print(f"  images: ngc-like {ng['layers']} layers, {ng['unpackedBytes']/MB:.0f} MB unpacked, {ng['entries']} entries; "
      f"busybox {bb['layers']} layer, {bb['unpackedBytes']/MB:.1f} MB")
print(f"  hyperfine -N, {E['B_RUNS']} runs + {E['B_WARMUP']} warmup per command; "
      f"{'store on a tmpfs' if E['B_TMPFS'] == '1' else 'store NOT on a tmpfs'}; {E['B_NPROC']} CPUs, kernel {E['B_KERNEL']}, "
      f"node {E['B_NODE']}, bwrap {E['B_BWRAP']}, hyperfine {E['B_HYPERFINE']}")
print(f"  timing wall {float(E['B_TOTAL']):.0f} s; load average {E['B_LOAD']} (start -> end; above {E['B_NPROC']} means other work competed)")
print()
print(f"  {'ms':54}{'mean':>8}{'± sd':>8}{'median':>8}{'min':>8}{'cpu':>8}")
for row in LABELS:
    if row is None:
        print()
        continue
    k, label = row
    if k in R:
        r = R[k]
        print(f"  {label:54}{r['mean']:8.1f}{r['stddev']:8.1f}{r['median']:8.1f}{r['min']:8.1f}{r['cpu']:8.1f}")
    elif k in failed:
        print(f"  {label:54}  FAILED: {failed[k][:60]}")
    elif not k.endswith('.noca') and (not k.startswith('user.') or E['B_USER_PART'] == '1'):
        print(f"  {label:54}{'–':>8}")
print('  (cpu: mean user + system CPU time of the command and its children, less sensitive to other load)')
print()
print(f"  {'ratios (of medians)':62}{'cpu':>8}")
for k, v, t, u, m, c in RATIOS:
    if v is None:
        if not k.startswith('user_') and 'noca' not in k or k.startswith('user_') and E['B_USER_PART'] == '1':
            print(f"  {m:54}{'n/a':>8}")
        continue
    ok = met(v, t, u)
    val = f"{v:.1f} ms" if u == 'ms' else f"{v:.2f}x"
    target = '' if t is None else f"   {'met' if ok else 'MISSED'} (target {'<' if u == 'ms' else '<='} {t:g}{' ms' if u == 'ms' else 'x'})"
    print(f"  {m:54}{val:>8}{'' if c is None else f'{c:.2f}x':>8}{target}")
def cpu(k):
    return R[k]['cpu'] if k in R else None
keys = ('node.empty', 'node.version', 'node.plan', 'true.start')
if all(k in R for k in keys):
    print()
    print("  where gantry start SB true goes (differences between the rows above, ms: median wall / mean cpu):")
    steps = [('node startup (node -e 0)', None, 'node.empty'), ("loading gantry's modules (--version)", 'node.empty', 'node.version'),
             ('computing and printing the plan', 'node.version', 'node.plan'), ('sh wrapper + gantry-exec + true', 'node.plan', 'true.start')]
    for label, a, b in steps:
        w = med(b) - (med(a) if a else 0)
        c = cpu(b) - (cpu(a) if a else 0)
        print(f"    {label:50}{w:8.0f}{c:8.0f}")
    if 'node.empty.noca' in R:
        print(f"    NODE_EXTRA_CA_CERTS is set: node -e 0 without it {med('node.empty.noca'):.0f} / {cpu('node.empty.noca'):.0f}, "
              f"gantry start SB true without it {med('true.start.noca'):.0f} / {cpu('true.start.noca'):.0f}" if 'true.start.noca' in R else '')
if E['B_USER_NOTE']:
    print(f"  user part skipped: {E['B_USER_NOTE']}")
EOF
