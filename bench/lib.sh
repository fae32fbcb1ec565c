# shellcheck shell=bash
# What the Gantry benchmarks (gpu.sh, import.sh, sandbox.sh) share, sourced by each after it sets
# HERE:  . "$HERE/lib.sh"
# Functions only. They read the caller's WORK (the work directory), MOUNTED (1 when a tmpfs is
# mounted on WORK), REG_PID, STEP_TIMEOUT, STEP_ERR and PY where their comments say so, and report
# errors under the script's name ("gpu.sh: ...").

# log MSG...: a progress line on stderr
log() { echo "bench: $*" >&2; }

# die MSG...: an error line on stderr, under the script's name, then exit 1
die() { echo "${0##*/}: $*" >&2; exit 1; }

# elapsed START: the seconds since START (an $EPOCHREALTIME), with one decimal
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# bench_help: print the script's header comment (its usage), for -h/--help
bench_help() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

# bench_check_timing_options: exit 2 unless RUNS (--runs) is a positive integer and WARMUP
# (--warmup) an integer; make KEEP (--keep-json), when set, an absolute path to a directory there is
bench_check_timing_options() {
  [[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "${0##*/}: --runs wants a positive integer" >&2; exit 2; }
  [[ $WARMUP =~ ^[0-9]+$ ]] || { echo "${0##*/}: --warmup wants an integer" >&2; exit 2; }
  [[ -z $KEEP ]] || KEEP=$(mkdir -p "$KEEP" && cd "$KEEP" && pwd)
}

# bench_interrupted: the INT and TERM trap: say so and exit 130 (the EXIT trap then cleans up)
bench_interrupted() { echo "${0##*/}: interrupted" >&2; exit 130; }

# bench_cleanup [FUNCTION]: the EXIT trap (trap 'bench_cleanup [FUNCTION]' EXIT), best effort:
# kill the background jobs, run FUNCTION (the script's own clean-up), stop the registry (REG_PID),
# unmount the tmpfs on WORK (when MOUNTED=1) and remove WORK; then exit with the script's status
bench_cleanup() {
  local rc=$? pids
  set +e   # best effort from here: every step must run
  trap - EXIT INT TERM
  pids=$(jobs -pr)
  # shellcheck disable=SC2086  # a list of pids
  [[ -n $pids ]] && kill $pids 2>/dev/null
  [[ -z ${1:-} ]] || "$1"
  [[ -n ${REG_PID:-} ]] && kill "$REG_PID" 2>/dev/null
  wait 2>/dev/null
  cd /
  if [[ ${MOUNTED:-0} == 1 ]]; then umount "$WORK" 2>/dev/null || umount -l "$WORK"; fi
  rm -rf "$WORK"
  exit "$rc"
}

# step WHAT CMD...: run a setup step, its stdout to $WORK/out and its stderr to STEP_ERR, under a
# timeout of STEP_TIMEOUT seconds (a shell function sets its own); log how long it took, or, when
# it fails, its status and the end of its stderr, and return 1 (set -e then stops the script)
step() {
  local what=$1; shift
  local t=$EPOCHREALTIME rc=0
  if declare -F "$1" >/dev/null; then "$@" >"$WORK/out" 2>"$STEP_ERR" || rc=$?
  else timeout "$STEP_TIMEOUT" "$@" >"$WORK/out" 2>"$STEP_ERR" || rc=$?; fi
  if [[ $rc != 0 ]]; then
    log "$what failed (status $rc):"; sed 's/^/  | /' "$STEP_ERR" | tail -20 >&2
    return 1
  fi
  log "$what: $(elapsed "$t") s"
}

# bench_free_port: print a TCP port that is free on 127.0.0.1 (the one the kernel picks for port 0)
bench_free_port() {
  "${PY:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# bench_start_registry DIR: start a no-auth docker-registry on a free loopback port, in the
# background, its storage in DIR/registry, its configuration DIR/registry.yml, its log
# DIR/registry.log; set REG (127.0.0.1:PORT) and REG_PID (bench_cleanup kills it) and wait, 10 s
# at most, for it to answer GET /v2/. When it exits or does not answer: die, after its log.
bench_start_registry() {
  local dir=$1 port
  port=$(bench_free_port)
  mkdir -p "$dir/registry"
  cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
  REG_PID=$!
  REG=127.0.0.1:$port
  for _ in $(seq 100); do
    curl -sf "http://$REG/v2/" >/dev/null 2>&1 && return 0
    kill -0 "$REG_PID" 2>/dev/null || { cat "$dir/registry.log" >&2; die "docker-registry exited"; }
    sleep 0.1
  done
  curl -sf "http://$REG/v2/" >/dev/null || { cat "$dir/registry.log" >&2; die "docker-registry did not answer on $REG"; }
}

# bench_push_layout LAYOUT TAG REF FORMAT: push the image tagged TAG in the OCI layout LAYOUT to
# docker://REF (on a registry from bench_start_registry: plain HTTP) as a FORMAT manifest (oci or
# v2s2), with skopeo under a timeout of STEP_TIMEOUT seconds; a background job waited for, so
# that an interrupt reaches the script's trap at once (timeout shields its child from the terminal)
bench_push_layout() {
  timeout "$STEP_TIMEOUT" skopeo copy --quiet --insecure-policy --dest-tls-verify=false --format "$4" \
    "oci:$1:$2" "docker://$3" &
  wait $!
}
