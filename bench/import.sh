#!/usr/bin/env bash
# Gantry import benchmark: cold pull of the NGC-like image (bench/ngc-like.sh) from a loopback
# registry, by three tools, in the same run, alternating A B C for N rounds:
#
#   A  gantry import URI --quiet           (into an empty GANTRY_STORE), then gantry unpack NAME DIR
#   B  skopeo copy docker://... oci:DIR     then /usr/bin/umoci unpack --rootless
#   C  the floor: curl the manifest, then per layer, all in parallel,
#      curl BLOB | pigz -d | tar -x -C DIR/LAYER   (every layer in its own directory)
#
# Every run is cold in the sense that matters here: a fresh, empty destination (store, layout,
# bundle, directories); nothing else is dropped (the registry's blobs stay in the page cache, as
# they would on a registry host). Work directories and the registry's storage live on a tmpfs
# when run as root (the ext4 disks of our machines are erratic for write-heavy timing).
#
# Usage: bash bench/import.sh [--rounds N] [--json] [--image ngc-like|busybox] [--only ABC]
#                              [--format oci|v2s2]
#   --rounds N   rounds of A B C (default 3)
#   --json       print a JSON summary on stdout instead of the table (progress goes to stderr)
#   --image      which cached image to pull (default ngc-like; busybox makes a quick smoke test)
#   --only       run a subset of the tools, e.g. --only BC
#   --format     the manifest type pushed to the registry (default oci; v2s2 = Docker schema 2)
# Environment: GANTRY (default <repo>/bin/gantry.js, run with node when it ends in .js),
#   GANTRY_BENCH_CACHE (image cache, see ngc-like.sh), BENCH_TMPFS_SIZE (default 12g),
#   BENCH_WORKDIR (parent of the work directory, default /tmp), BENCH_TIMEOUT (seconds per
#   step, default 900).
# Needs: docker-registry skopeo umoci pigz curl python3 (+ what ngc-like.sh needs, once).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${GANTRY_BENCH_CACHE:-$REPO/.cache/bench}
GANTRY=${GANTRY:-$REPO/bin/gantry.js}
PY=/usr/bin/python3
UMOCI=/usr/bin/umoci
TMPFS_SIZE=${BENCH_TMPFS_SIZE:-12g}
STEP_TIMEOUT=${BENCH_TIMEOUT:-900}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

ROUNDS=3 JSON=0 IMAGE=ngc-like ONLY=ABC FORMAT=oci
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
    --rounds=*) ROUNDS=${1#*=} ;;
    --json) JSON=1 ;;
    --image) IMAGE=${2:?--image needs a name}; shift ;;
    --image=*) IMAGE=${1#*=} ;;
    --only) ONLY=${2:?--only needs tools, e.g. BC}; shift ;;
    --only=*) ONLY=${1#*=} ;;
    --format) FORMAT=${2:?--format needs oci or v2s2}; shift ;;
    --format=*) FORMAT=${1#*=} ;;
    -h|--help) bench_help; exit 0 ;;
    *) echo "import.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "import.sh: --rounds wants a positive integer" >&2; exit 2; }
[[ $IMAGE == ngc-like || $IMAGE == busybox ]] || { echo "import.sh: --image is ngc-like or busybox" >&2; exit 2; }
[[ $FORMAT == oci || $FORMAT == v2s2 ]] || { echo "import.sh: --format is oci or v2s2" >&2; exit 2; }
ONLY=${ONLY^^}
[[ $ONLY =~ ^[ABC]+$ ]] || { echo "import.sh: --only takes letters among A, B, C" >&2; exit 2; }
has() { [[ $ONLY == *$1* ]]; }

for t in docker-registry skopeo "$UMOCI" pigz curl tar "$PY" timeout; do
  command -v "$t" >/dev/null 2>&1 || die "$t is missing (apt-get install docker-registry skopeo umoci pigz curl python3)"
done

# ---------------------------------------------------------------- the image (cached)
bash "$HERE/ngc-like.sh" --quiet
LAYOUT=$CACHE/$IMAGE
[[ -f $LAYOUT/index.json ]] || die "no layout at $LAYOUT"

# ---------------------------------------------------------------- work dir, tmpfs, cleanup
WORK=$(mktemp -d "${BENCH_WORKDIR:-/tmp}/gantry-bench.XXXXXX")
MOUNTED=0 REG_PID=
trap bench_cleanup EXIT   # kill the jobs and the registry, unmount, remove WORK
trap bench_interrupted INT TERM

if [[ $EUID == 0 ]]; then
  if mount -t tmpfs -o size="$TMPFS_SIZE" tmpfs "$WORK"; then MOUNTED=1
  else log "WARNING: could not mount a tmpfs; timing on $(df --output=fstype "$WORK" | tail -1)"; fi
else
  log "WARNING: not root, so no tmpfs: timing on $(df --output=fstype "$WORK" | tail -1) at $WORK, which can be erratic for write-heavy runs"
fi
mkdir -p "$WORK"/{tmp,gantry-config,gantry-data}
export TMPDIR=$WORK/tmp   # skopeo and friends spill here, not on the disk

# ---------------------------------------------------------------- registry (lib.sh, as in sandbox.sh and gpu.sh)
bench_start_registry "$WORK"

REPO_NAME=$IMAGE
REF=$REG/$REPO_NAME:bench
t=$EPOCHREALTIME
bench_push_layout "$LAYOUT" bench "$REF" "$FORMAT" >&2 || die "skopeo could not push $LAYOUT to $REF"
log "pushed $IMAGE ($FORMAT manifest) to $REF in $(elapsed "$t") s"

# what the floor asks for: exactly the type pushed (registry 2.8 wants it listed in Accept)
if [[ $FORMAT == oci ]]; then OCI_ACCEPT='application/vnd.oci.image.manifest.v1+json'
else OCI_ACCEPT='application/vnd.docker.distribution.manifest.v2+json'; fi
# the manifest as the registry serves it: layer count and compressed size come from here
read -r NLAYERS COMPRESSED < <(curl -sf -H "Accept: $OCI_ACCEPT" "http://$REG/v2/$REPO_NAME/manifests/bench" |
  "$PY" -c 'import json,sys; m=json.load(sys.stdin); print(len(m["layers"]), sum(l["size"] for l in m["layers"]))')
read -r FILEBYTES ENTRIES < <("$PY" -c 'import json,sys; i=json.load(open(sys.argv[1])); print(i["fileBytes"], i["entries"])' "$CACHE/$IMAGE.info.json")

# ---------------------------------------------------------------- the tools
# timed VAR CMD...: run CMD (a command, under a timeout, or a shell function), its stderr to
# $WORK/err; VAR = seconds; returns CMD's status. CMD runs as a background job that the script
# waits for, so Ctrl-C reaches the trap at once (timeout shields its child from the terminal).
timed() {
  local __var=$1; shift
  local t0=$EPOCHREALTIME rc=0
  if declare -F "$1" >/dev/null; then "$@" 2>"$WORK/err" & else timeout "$STEP_TIMEOUT" "$@" 2>"$WORK/err" & fi
  wait $! || rc=$?
  printf -v "$__var" '%s' "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')"
  return $rc
}

if [[ $GANTRY == *.js ]]; then GANTRY_CMD=(node "$GANTRY"); else GANTRY_CMD=("$GANTRY"); fi
GANTRY_ENV=(env GANTRY_STORE="$WORK/r/store" GANTRY_DATA="$WORK/gantry-data" GANTRY_CONFIG="$WORK/gantry-config")

floor() {  # floor DEST: the manifest, then every layer in parallel into DEST/N
  local dest=$1 digests d i=0 pids=() rc=0
  digests=$(curl -sf -H "Accept: $OCI_ACCEPT" "http://$REG/v2/$REPO_NAME/manifests/bench" |
    "$PY" -S -c 'import json,sys; print(" ".join(l["digest"] for l in json.load(sys.stdin)["layers"]))') || return 1
  for d in $digests; do
    mkdir -p "$dest/$i"
    curl -sf "http://$REG/v2/$REPO_NAME/blobs/$d" | pigz -d | tar -x -C "$dest/$i" &
    pids+=($!)
    i=$((i + 1))
  done
  for d in "${pids[@]}"; do wait "$d" || rc=1; done   # pipefail: any stage failing fails the layer
  return $rc
}

declare -A T   # T[key] = space-separated seconds, one per round
add() { T[$1]="${T[$1]:-} $2"; }
fail() { add "$1" failed; }
GANTRY_OK=1 GANTRY_ERROR='' SKOPEO_ERROR='' FLOOR_ERROR=''
declare -A TREE  # "entries bytes" of each tool's unpacked tree, from round 1 (not timed)
tree_size() { echo "$(find "$@" -mindepth 1 | wc -l) $(du -sbc "$@" | tail -1 | cut -f1)"; }

run_gantry() {
  local ti tu name rc=0
  if [[ $GANTRY_OK == 0 ]]; then fail gantry_import; fail gantry_unpack; return; fi
  mkdir -p "$WORK/r"
  timed ti "${GANTRY_ENV[@]}" "${GANTRY_CMD[@]}" import "$REF" --quiet >"$WORK/out" || rc=$?
  if [[ $rc == 0 ]]; then
    add gantry_import "$ti"
    name=$(tail -1 "$WORK/out")
    timed tu "${GANTRY_ENV[@]}" "${GANTRY_CMD[@]}" unpack "$name" "$WORK/r/rootfs" || rc=$?
    if [[ $rc == 0 ]]; then
      add gantry_unpack "$tu"
      [[ -n ${TREE[gantry]:-} ]] || TREE[gantry]=$(tree_size "$WORK/r/rootfs")
    else
      fail gantry_unpack
      log "gantry unpack $name failed (status $rc). Its stderr:"; sed 's/^/  | /' "$WORK/err" | tail -20 >&2
      GANTRY_ERROR="unpack exited $rc: $(tail -3 "$WORK/err" | tr '\n' ' ')"
    fi
  else
    fail gantry_import; fail gantry_unpack
    log "gantry import failed (status $rc); skipping gantry from now on. Its stderr:"
    sed 's/^/  | /' "$WORK/err" | tail -30 >&2
    GANTRY_OK=0 GANTRY_ERROR="import exited $rc: $(tail -3 "$WORK/err" | tr '\n' ' ')"
  fi
  rm -rf "$WORK/r"
}

run_skopeo() {
  local tc tu
  mkdir -p "$WORK/r"
  if timed tc skopeo copy --quiet --insecure-policy --src-tls-verify=false "docker://$REF" "oci:$WORK/r/oci:bench"; then
    add skopeo_copy "$tc"
    if timed tu "$UMOCI" unpack --rootless --image "$WORK/r/oci:bench" "$WORK/r/bundle"; then
      add umoci_unpack "$tu"
      [[ -n ${TREE[umoci]:-} ]] || TREE[umoci]=$(tree_size "$WORK/r/bundle/rootfs")
    else
      fail umoci_unpack; SKOPEO_ERROR="umoci: $(tail -3 "$WORK/err" | tr '\n' ' ')"
      log "umoci unpack failed:"; sed 's/^/  | /' "$WORK/err" | tail -20 >&2
    fi
  else
    fail skopeo_copy; fail umoci_unpack; SKOPEO_ERROR="skopeo: $(tail -3 "$WORK/err" | tr '\n' ' ')"
    log "skopeo copy failed:"; sed 's/^/  | /' "$WORK/err" | tail -20 >&2
  fi
  rm -rf "$WORK/r"
}

run_floor() {
  local tf
  mkdir -p "$WORK/r/floor"
  if timed tf floor "$WORK/r/floor"; then
    add floor "$tf"
    [[ -n ${TREE[floor]:-} ]] || TREE[floor]=$(tree_size "$WORK/r/floor"/*)
  else
    fail floor; FLOOR_ERROR=$(tail -3 "$WORK/err" | tr '\n' ' ')
    log "floor failed:"; sed 's/^/  | /' "$WORK/err" | tail -20 >&2
  fi
  rm -rf "$WORK/r"
}

# is gantry runnable at all? (a missing build is reported once, not timed)
if has A && ! "${GANTRY_CMD[@]}" --version >/dev/null 2>"$WORK/err"; then
  log "gantry ($GANTRY) does not run; its figures will be marked failed:"; sed 's/^/  | /' "$WORK/err" | tail -10 >&2
  GANTRY_OK=0 GANTRY_ERROR="gantry --version failed: $(tail -2 "$WORK/err" | tr '\n' ' ')"
fi

log "image $IMAGE: $NLAYERS layers, $((COMPRESSED / 1000000)) MB compressed, $((FILEBYTES / 1000000)) MB unpacked; $ROUNDS rounds of $ONLY on $(df --output=fstype "$WORK" | tail -1)"
START=$EPOCHREALTIME
for ((r = 1; r <= ROUNDS; r++)); do
  if has A; then run_gantry; log "round $r A gantry: import ${T[gantry_import]##* } s, unpack ${T[gantry_unpack]##* } s"; fi
  if has B; then run_skopeo; log "round $r B skopeo: copy ${T[skopeo_copy]##* } s, umoci unpack ${T[umoci_unpack]##* } s"; fi
  if has C; then run_floor; log "round $r C floor: ${T[floor]##* } s"; fi
done
TOTAL=$(elapsed "$START")

# ---------------------------------------------------------------- report
HOST_CPUS=$(nproc) HOST_NODE=$(node --version 2>/dev/null || echo none)
HOST_SKOPEO=$(skopeo --version | awk '{print $3}') HOST_UMOCI=$("$UMOCI" --version | awk '{print $3}')
export B_JSON=$JSON B_FORMAT=$FORMAT B_IMAGE=$IMAGE B_REF=$REF B_ROUNDS=$ROUNDS B_NLAYERS=$NLAYERS B_COMPRESSED=$COMPRESSED \
  B_FILEBYTES=$FILEBYTES B_ENTRIES=$ENTRIES B_TMPFS=$MOUNTED B_TOTAL=$TOTAL B_ONLY=$ONLY \
  B_GANTRY="$GANTRY" B_GANTRY_ERROR="$GANTRY_ERROR" B_SKOPEO_ERROR="$SKOPEO_ERROR" B_FLOOR_ERROR="$FLOOR_ERROR" \
  B_NPROC=$HOST_CPUS B_NODE=$HOST_NODE B_SKOPEO=$HOST_SKOPEO B_UMOCI=$HOST_UMOCI
for k in gantry_import gantry_unpack skopeo_copy umoci_unpack floor; do export "B_T_$k=${T[$k]:-}"; done
for k in gantry umoci floor; do export "B_TREE_$k=${TREE[$k]:-}"; done
"$PY" - <<'EOF'
import json, os, statistics
E = os.environ
def runs(k):
    v = E.get('B_T_' + k, '').split()
    return [None if x == 'failed' else float(x) for x in v]
def r3(x):
    return None if x is None else round(x, 3)
def pair(a, b):  # per-round sums; a round where either failed is failed
    return [None if x is None or y is None else round(x + y, 3) for x, y in zip(a, b)]
R = {
    'gantry_import': runs('gantry_import'),
    'gantry_unpack': runs('gantry_unpack'),
    'skopeo_copy': runs('skopeo_copy'),
    'umoci_unpack': runs('umoci_unpack'),
    'floor': runs('floor'),
}
R['gantry_import_unpack'] = pair(R['gantry_import'], R['gantry_unpack'])
R['skopeo_umoci'] = pair(R['skopeo_copy'], R['umoci_unpack'])
def med(k):
    v = R[k]
    return None if not v or any(x is None for x in v) else statistics.median(v)
def ratio(a, b):
    a, b = med(a), med(b)
    return None if a is None or b is None or b == 0 else a / b
ratios = {
    'gantry_import_over_floor': (ratio('gantry_import', 'floor'), 1.3, 'cold import within 1.3x of the floor'),
    'gantry_import_unpack_over_skopeo_umoci': (ratio('gantry_import_unpack', 'skopeo_umoci'), 1.0, 'import+unpack faster than skopeo+umoci'),
    'gantry_import_over_skopeo_umoci': (ratio('gantry_import', 'skopeo_umoci'), None, 'import alone vs skopeo copy + umoci unpack'),
}
def tree(k):
    v = E.get('B_TREE_' + k, '').split()
    return {'entries': int(v[0]), 'bytes': int(v[1])} if v else None
image = {'name': E['B_IMAGE'], 'reference': E['B_REF'], 'manifestFormat': E['B_FORMAT'], 'layers': int(E['B_NLAYERS']),
         'compressedBytes': int(E['B_COMPRESSED']), 'unpackedBytes': int(E['B_FILEBYTES']),
         'entries': int(E['B_ENTRIES'])}
errors = {k: E['B_' + k.upper() + '_ERROR'] for k in ('gantry', 'skopeo', 'floor') if E['B_' + k.upper() + '_ERROR']}
if E['B_JSON'] == '1':
    out = {
        'benchmark': 'import', 'image': image, 'rounds': int(E['B_ROUNDS']), 'tools': E['B_ONLY'],
        'tmpfs': E['B_TMPFS'] == '1', 'wallSeconds': float(E['B_TOTAL']),
        'host': {'cpus': int(E['B_NPROC']), 'node': E['B_NODE'], 'skopeo': E['B_SKOPEO'], 'umoci': E['B_UMOCI'], 'gantry': E['B_GANTRY']},
        'seconds': {k: {'median': r3(med(k)), 'runs': v} for k, v in R.items() if v},
        'ratios': {k: {'value': r3(v), 'target': t, 'meaning': m, 'met': None if v is None or t is None else v <= t}
                   for k, (v, t, m) in ratios.items()},
        'unpackedTrees': {k: tree(k) for k in ('gantry', 'umoci', 'floor') if tree(k)},
        'errors': errors,
    }
    print(json.dumps(out, indent=2))
    raise SystemExit(0)
MB = 1e6
print(f"Gantry import benchmark: {image['name']} ({image['reference']}, {image['manifestFormat']} manifest)")
print(f"  image: {image['layers']} layers, {image['compressedBytes']/MB:.1f} MB compressed (gzip), "
      f"{image['unpackedBytes']/MB:.1f} MB unpacked, {image['entries']} entries")
print(f"  {E['B_ROUNDS']} rounds, alternating {' '.join(E['B_ONLY'])}, cold (empty destination each run), "
      f"{'on a tmpfs' if E['B_TMPFS'] == '1' else 'NOT on a tmpfs'}; {E['B_NPROC']} CPUs, node {E['B_NODE']}, "
      f"skopeo {E['B_SKOPEO']}, umoci {E['B_UMOCI']}; wall {float(E['B_TOTAL']):.0f} s")
print()
rows = [
    ('A', 'gantry import', 'gantry_import'),
    ('A', 'gantry unpack', 'gantry_unpack'),
    ('A', 'gantry import + unpack', 'gantry_import_unpack'),
    ('B', 'skopeo copy', 'skopeo_copy'),
    ('B', 'umoci unpack', 'umoci_unpack'),
    ('B', 'skopeo copy + umoci unpack', 'skopeo_umoci'),
    ('C', 'floor (curl | pigz -d | tar -x)', 'floor'),
]
fmt = lambda x: 'failed' if x is None else f'{x:.2f}'
print(f"  {'':2}{'seconds':34}{'median':>8}   runs")
for tool, label, k in rows:
    if tool not in E['B_ONLY']:
        continue
    print(f"  {tool} {label:34}{fmt(med(k)):>8}   {' '.join(fmt(x) for x in R[k])}")
print()
for k, (v, t, m) in ratios.items():
    label = {'gantry_import_over_floor': 'gantry import / floor',
             'gantry_import_unpack_over_skopeo_umoci': '(gantry import + unpack) / (skopeo + umoci)',
             'gantry_import_over_skopeo_umoci': 'gantry import / (skopeo copy + umoci unpack)'}[k]
    verdict = '' if v is None or t is None else ('  met' if v <= t else '  MISSED')
    target = f"  (target {'<' if t == 1.0 else '<='} {t:g}x: {m})" if t else ''
    print(f"  {label:46}{'n/a' if v is None else f'{v:.2f}':>6}{verdict}{target}")
trees = [(k, tree(k)) for k in ('gantry', 'umoci', 'floor') if tree(k)]
if trees:
    print()
    print('  unpacked trees (round 1, not timed): ' + '; '.join(f"{k} {t['entries']} entries {t['bytes']/MB:.1f} MB" for k, t in trees))
for k, v in errors.items():
    print(f"  {k} FAILED: {v}")
EOF
