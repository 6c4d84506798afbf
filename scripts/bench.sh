#!/usr/bin/env bash
# Per-call overhead benchmark of libnpushim.so; regenerates BENCHMARKS.md.
#
#   scripts/bench.sh [--quick] [--runs N] [--trace-dir DIR] [--no-callgrind] [--output FILE]
#
# Builds libnpushim.so (cargo, release), the no-op libascendcl.so (tests/Makefile),
# the C harness and the plain C interposer used as the baseline, then times
# aclrtMemcpyAsync through each configuration on 1 and 2 threads, and
# aclrtMemcpy, HcclD2DMemcpyAsync, aclrtSynchronizeStream, aclrtMalloc and
# aclrtFree (and copies with 10,000 live allocations in the memory map) on 1
# thread, R runs each (interleaved, so a burst of load elsewhere on the machine
# hits every configuration alike), and reports medians; then what one
# dlsym(handle, "aclrtMemcpyAsync") costs with and without the shim.  A missed budget is reported, not
# fatal: the script exits 0 unless something fails to build or run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat <<'EOF'
usage: scripts/bench.sh [--quick] [--runs N] [--trace-dir DIR] [--no-callgrind] [--output FILE]
  --quick         3 runs with fewer calls (a rough check in about a minute)
  --runs N        runs per configuration (default 5; 3 with --quick)
  --trace-dir DIR where traced runs write their trace files (default: /dev/shm if it
                  is a writable tmpfs, else target/bench/tmp); files are deleted after use
  --no-callgrind  skip the instruction counts (valgrind --tool=callgrind)
  --output FILE   results file (default BENCHMARKS.md in the repository root)
EOF
}

QUICK=0
RUNS=""
TRACE_DIR=""
CALLGRIND=1
OUTPUT="$ROOT/BENCHMARKS.md"
COMMAND="scripts/bench.sh${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) [ $# -ge 2 ] || die "--runs needs a number"; RUNS=$2; shift ;;
        --trace-dir) [ $# -ge 2 ] || die "--trace-dir needs a directory"; TRACE_DIR=$2; shift ;;
        --no-callgrind) CALLGRIND=0 ;;
        --output) [ $# -ge 2 ] || die "--output needs a file name"; OUTPUT=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option '$1'" ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    : "${RUNS:=3}"
    FAST_CALLS=5000000       # direct, C interposer, npushim untraced
    TRACED_CALLS=1000000     # native trace sink
    PACED_CALLS=300000       # paced runs (bursts with idle gaps)
    CHROME_CALLS=50000       # tracing-chrome sink
    MEM_CALLS=2000000        # peak RSS and trace size run
    ALLOC_CALLS=100000       # aclrtMalloc / aclrtFree rows
    DLSYM_LOOKUPS=200000     # dlsym lookups per kind
else
    : "${RUNS:=5}"
    FAST_CALLS=20000000
    TRACED_CALLS=5000000
    PACED_CALLS=1000000
    CHROME_CALLS=200000
    MEM_CALLS=10000000
    ALLOC_CALLS=500000
    DLSYM_LOOKUPS=1000000
fi
case "$RUNS" in ''|*[!0-9]*|0) die "--runs needs a positive number, got '$RUNS'" ;; esac
THREAD_COUNTS="1 2"

BENCH="$ROOT/target/bench"
SIM_OUT="$ROOT/target/bench-sim"
CARGO_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$CARGO_TARGET" in /*) ;; *) CARGO_TARGET="$ROOT/$CARGO_TARGET" ;; esac
SHIM="$CARGO_TARGET/release/libnpushim.so"
NOOP_DIR="$SIM_OUT/noop"
HARNESS="$BENCH/harness"
CINT="$BENCH/c_interposer.so"
CREC="$BENCH/c_recorder.so"
DLSYM_COST="$BENCH/dlsym_cost"
# Live allocations in the memory-map rows.
LIVE=10000
# Paced runs: bursts of PACE_BURST calls, each followed by PACE_GAP_US of idle time.
PACE_BURST=4096
PACE_GAP_US=2000

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------
log "building… (cargo build --release --lib)"
cargo build --release --lib --quiet || die "cargo build failed"
[ -f "$SHIM" ] || die "cargo build did not produce $SHIM"
log "building… (make -C tests OUT=$SIM_OUT noop)"
make -s -C tests OUT="$SIM_OUT" noop >&2 || die "building the no-op libascendcl.so failed"
mkdir -p "$BENCH"
CC=${CC:-gcc}
CFLAGS_BENCH="-std=gnu11 -O2 -g -pipe -Wall -Wextra -Werror"
log "building… (harness, C interposer)"
# shellcheck disable=SC2086
"$CC" $CFLAGS_BENCH -pthread -I"$ROOT/tests/sim/include" -o "$HARNESS.tmp" tests/bench/harness.c \
    -L"$NOOP_DIR" -Wl,--no-as-needed -lascendcl -Wl,-rpath,"$NOOP_DIR" -pthread \
    || die "building the harness failed"
mv -f "$HARNESS.tmp" "$HARNESS"
# shellcheck disable=SC2086
"$CC" $CFLAGS_BENCH -fPIC -shared -o "$CINT.tmp" tests/bench/c_interposer.c -ldl \
    || die "building the C interposer failed"
mv -f "$CINT.tmp" "$CINT"
# shellcheck disable=SC2086
"$CC" $CFLAGS_BENCH -fPIC -shared -o "$CREC.tmp" tests/bench/c_recorder.c -ldl \
    || die "building the C recorder failed"
mv -f "$CREC.tmp" "$CREC"
# shellcheck disable=SC2086
"$CC" $CFLAGS_BENCH -o "$DLSYM_COST.tmp" tests/bench/dlsym_cost.c -ldl \
    || die "building dlsym_cost failed"
mv -f "$DLSYM_COST.tmp" "$DLSYM_COST"

# ---------------------------------------------------------------------------
# Where traces go
# ---------------------------------------------------------------------------
if [ -z "$TRACE_DIR" ]; then
    if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
        TRACE_DIR=/dev/shm
    else
        TRACE_DIR="$BENCH/tmp"
    fi
fi
mkdir -p "$TRACE_DIR"
TMP=$(mktemp -d "$TRACE_DIR/npushim-bench.XXXXXX")
SCRATCH=$(mktemp -d "$BENCH/scratch.XXXXXX")
cleanup() { rm -rf "$TMP" "$SCRATCH"; }
trap cleanup EXIT
TRACE_FS=$(stat -f -c %T "$TMP" 2>/dev/null || echo unknown)

TIME_BIN=""
if [ -x /usr/bin/time ]; then TIME_BIN=/usr/bin/time; fi

# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------
CONFIGS="direct cint crec disabled checks traced chrome dpaced paced devpaced"
# The other hooked functions, and the memory map, on 1 thread.
for fn in memcpy d2d sync; do
    CONFIGS="$CONFIGS direct_$fn cint_$fn disabled_$fn checks_$fn traced_$fn"
done
CONFIGS="$CONFIGS checks_live checks_live_nomap traced_live traced_live_nomap"
for fn in malloc free; do
    CONFIGS="$CONFIGS direct_$fn cint_$fn disabled_$fn checks_$fn traced_$fn"
done
declare -A LABEL ENVS CALLS HARGS THREADS FN
LABEL[direct]="direct (no preload)"
LABEL[cint]="C interposer"
LABEL[crec]="C recorder (C interposer + 2 TSC reads + 64-B record)"
LABEL[dpaced]="direct, paced"
LABEL[paced]="npushim, traced, paced"
LABEL[devpaced]="npushim, traced, paced, device timeline (NPUSHIM_DEVICE=events)"
LABEL[disabled]="npushim, NPUSHIM_DISABLE=1"
LABEL[checks]="npushim, checks on, trace off"
LABEL[traced]="npushim, traced (checks + native trace)"
LABEL[chrome]="npushim, traced, tracing-chrome sink"
ENVS[direct]=""
ENVS[cint]="LD_PRELOAD=$CINT"
ENVS[disabled]="LD_PRELOAD=$SHIM NPUSHIM_DISABLE=1"
ENVS[checks]="LD_PRELOAD=$SHIM NPUSHIM_CHECK=warn NPUSHIM_TRACE=off"
ENVS[traced]="LD_PRELOAD=$SHIM NPUSHIM_CHECK=warn NPUSHIM_TRACE=$TMP/trace-%p.json"
ENVS[chrome]="LD_PRELOAD=$SHIM NPUSHIM_CHECK=warn NPUSHIM_TRACE=$TMP/trace-%p.json NPUSHIM_TRACE_SINK=tracing-chrome"
ENVS[crec]="LD_PRELOAD=$CREC"
ENVS[dpaced]=""
ENVS[paced]="${ENVS[traced]}"
ENVS[devpaced]="${ENVS[traced]} NPUSHIM_DEVICE=events"
CALLS[direct]=$FAST_CALLS
CALLS[cint]=$FAST_CALLS
CALLS[disabled]=$FAST_CALLS
CALLS[checks]=$FAST_CALLS
CALLS[traced]=$TRACED_CALLS
CALLS[chrome]=$CHROME_CALLS
CALLS[crec]=$FAST_CALLS
CALLS[dpaced]=$PACED_CALLS
CALLS[paced]=$PACED_CALLS
CALLS[devpaced]=$PACED_CALLS
HARGS[dpaced]="--burst $PACE_BURST --gap-us $PACE_GAP_US"
HARGS[paced]="${HARGS[dpaced]}"
HARGS[devpaced]="${HARGS[dpaced]}"
# The harness's --fn name, and the function callgrind counts in, of each suffix.
declare -A FN_ARG FN_LOOP FN_NAME
FN_ARG[memcpy]=memcpy; FN_LOOP[memcpy]=memcpy_loop; FN_NAME[memcpy]=aclrtMemcpy
FN_ARG[d2d]=d2d; FN_LOOP[d2d]=d2d_loop; FN_NAME[d2d]=HcclD2DMemcpyAsync
FN_ARG[sync]=sync-stream; FN_LOOP[sync]=sync_loop; FN_NAME[sync]=aclrtSynchronizeStream
FN_ARG[malloc]=malloc; FN_LOOP[malloc]=malloc_batch; FN_NAME[malloc]=aclrtMalloc
FN_ARG[free]=free; FN_LOOP[free]=free_batch; FN_NAME[free]=aclrtFree
for fn in memcpy d2d sync malloc free; do
    calls=$((FAST_CALLS / 4))
    tcalls=$((TRACED_CALLS / 5))
    hargs="--fn ${FN_ARG[$fn]}"
    case $fn in
        malloc | free) calls=$ALLOC_CALLS; tcalls=$ALLOC_CALLS; hargs="$hargs --live $LIVE" ;;
    esac
    for base in direct cint disabled checks traced; do
        cfg=${base}_$fn
        LABEL[$cfg]="${FN_NAME[$fn]}: ${LABEL[$base]}"
        ENVS[$cfg]="${ENVS[$base]}"
        CALLS[$cfg]=$calls
        [ "$base" = traced ] && CALLS[$cfg]=$tcalls
        HARGS[$cfg]="$hargs"
        THREADS[$cfg]=1
        FN[$cfg]=$fn
    done
done
LABEL[checks_live]="memory map: checks on, trace off, $LIVE live allocations"
LABEL[checks_live_nomap]="memory map: same, NPUSHIM_MEMMAP=off"
LABEL[traced_live]="memory map: traced, $LIVE live allocations"
LABEL[traced_live_nomap]="memory map: traced, same, NPUSHIM_MEMMAP=off"
ENVS[checks_live]="${ENVS[checks]}"
ENVS[checks_live_nomap]="${ENVS[checks]} NPUSHIM_MEMMAP=off"
ENVS[traced_live]="${ENVS[traced]}"
ENVS[traced_live_nomap]="${ENVS[traced]} NPUSHIM_MEMMAP=off"
CALLS[checks_live]=$((FAST_CALLS / 4))
CALLS[checks_live_nomap]=$((FAST_CALLS / 4))
CALLS[traced_live]=$((TRACED_CALLS / 5))
CALLS[traced_live_nomap]=$((TRACED_CALLS / 5))
for cfg in checks_live checks_live_nomap traced_live traced_live_nomap; do
    HARGS[$cfg]="--live $LIVE"
    THREADS[$cfg]=1
done

# Every variable that could change what is measured is cleared, then set per run.
CLEAN_ENV=(env -u LD_PRELOAD -u NPUSHIM_TRACE -u NPUSHIM_TRACE_SINK -u NPUSHIM_CHECK -u NPUSHIM_FAULTS
    -u NPUSHIM_SEED -u NPUSHIM_LOG -u NPUSHIM_DISABLE -u NPUSHIM_ACL_LIB -u NPUSHIM_HCCL_LIB
    -u NPUSHIM_MEMMAP -u NPUSHIM_DEVICE)

# field KEY LINE: the value of KEY=... in a harness (or time) line.
field() {
    printf '%s\n' "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k && !done { print $2; done = 1 }'
}

# run_harness CONFIG THREADS CALLS [harness options...]: runs once; prints the harness line
# with time_user= time_sys= time_wall_ns= dropped= appended.
run_harness() {
    local cfg=$1 threads=$2 calls=$3
    shift 3
    local out="$SCRATCH/out" err="$SCRATCH/err" tfile="$SCRATCH/time"
    local -a envs=()
    if [ -n "${ENVS[$cfg]}" ]; then read -r -a envs <<<"${ENVS[$cfg]}"; fi
    local -a timer=()
    if [ -n "$TIME_BIN" ]; then timer=("$TIME_BIN" -f 'time_user=%U time_sys=%S' -o "$tfile"); fi
    rm -f "$TMP"/trace-* "$tfile"
    local t0 t1 rc=0
    t0=$(date +%s%N)
    "${CLEAN_ENV[@]}" "${timer[@]}" env "${envs[@]}" "$HARNESS" --calls "$calls" --threads "$threads" "$@" \
        >"$out" 2>"$err" || rc=$?
    t1=$(date +%s%N)
    if [ "$rc" != 0 ] || ! grep -q '^threads=' "$out"; then
        cat "$err" >&2
        die "harness failed (config $cfg, $threads thread(s), exit $rc)"
    fi
    local line times="" dropped=0 trace
    line=$(grep '^threads=' "$out")
    if [ -f "$tfile" ]; then times=$(tail -n 1 "$tfile"); fi
    trace=$(find "$TMP" -maxdepth 1 -name 'trace-*' -print -quit)
    if [ -n "$trace" ]; then
        dropped=$(grep -o '"dropped":[0-9]*' "$trace" | tail -n 1 | cut -d: -f2 || true)
        dropped=${dropped:-0}
    fi
    printf '%s %s time_wall_ns=%s dropped=%s\n' "$line" "$times" "$((t1 - t0))" "$dropped"
}

# median / min / max of whitespace-separated numbers.
stat_of() {
    local what=$1
    shift
    printf '%s\n' "$@" | sort -g | awk -v w="$what" '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "nan"; exit }
            if (w == "min") print v[1];
            else if (w == "max") print v[NR];
            else if (NR % 2) print v[(NR + 1) / 2];
            else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2;
        }'
}
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
le() { awk "BEGIN { exit !(($1) <= ($2)) }"; }

declare -A WALL CPU PROC DROPPED
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "traces go to $TMP ($TRACE_FS); $RUNS runs per configuration; load average $LOAD_BEFORE"

for ((r = 1; r <= RUNS; r++)); do
    for cfg in $CONFIGS; do
        for t in ${THREADS[$cfg]:-$THREAD_COUNTS}; do
            word=threads
            [ "$t" = 1 ] && word=thread
            log "${LABEL[$cfg]} $t $word run $r/$RUNS…"
            # shellcheck disable=SC2086
            res=$(run_harness "$cfg" "$t" "${CALLS[$cfg]}" ${HARGS[$cfg]:-})
            k="$cfg,$t"
            WALL[$k]="${WALL[$k]:-} $(field ns_per_call "$res")"
            CPU[$k]="${CPU[$k]:-} $(field cpu_ns_per_call "$res")"
            DROPPED[$k]="${DROPPED[$k]:-} $(field dropped "$res")"
            u=$(field time_user "$res")
            s=$(field time_sys "$res")
            if [ -n "$u" ] && [ -n "$s" ]; then
                # Whole-process CPU (writer thread and exit flush included) per call made,
                # warm-up calls counted.
                total=$(awk -v c="${CALLS[$cfg]}" -v t="$t" 'BEGIN { w = int(c / 10); if (w > 1000000) w = 1000000; print (c + w) * t }')
                PROC[$k]="${PROC[$k]:-} $(calc "($u + $s) * 1e9 / $total" 2)"
            fi
        done
    done
done

# ---------------------------------------------------------------------------
# Memory and trace size: one long traced run, and the same run untraced
# ---------------------------------------------------------------------------
MEM_WARMUP=$((MEM_CALLS / 10 < 1000000 ? MEM_CALLS / 10 : 1000000))
log "memory: traced run of $MEM_CALLS calls (1 thread)…"
rm -f "$TMP"/trace-*
mem_err="$SCRATCH/mem.err"
t0=$(date +%s%N)
"${CLEAN_ENV[@]}" env LD_PRELOAD="$SHIM" NPUSHIM_CHECK=warn NPUSHIM_TRACE="$TMP/trace-%p.json" \
    "$HARNESS" --calls "$MEM_CALLS" --threads 1 --rss >"$SCRATCH/mem.out" 2>"$mem_err" \
    || { cat "$mem_err" >&2; die "traced memory run failed"; }
t1=$(date +%s%N)
MEM_TRACED=$(grep '^threads=' "$SCRATCH/mem.out")
MEM_TRACED_WALL_NS=$((t1 - t0))
MEM_TRACED_TAIL_NS=$((t1 - $(field end_realtime_ns "$MEM_TRACED")))
TRACE_FILE=$(find "$TMP" -maxdepth 1 -name 'trace-*' -print -quit)
[ -n "$TRACE_FILE" ] || die "the traced memory run left no trace file in $TMP"
TRACE_BYTES=$(stat -c %s "$TRACE_FILE")
log "memory: counting events in the trace ($((TRACE_BYTES / 1048576)) MiB)…"
TRACE_X=$(grep -c '"ph":"X"' "$TRACE_FILE" || true)
TRACE_DROPPED=$(grep -o '"dropped":[0-9]*' "$TRACE_FILE" | tail -n 1 | cut -d: -f2 || true)
TRACE_DROPPED=${TRACE_DROPPED:-0}
TRACE_CLOSED=no
if [ "$(tail -c 2 "$TRACE_FILE" | head -c 1)" = "]" ]; then TRACE_CLOSED=yes; fi
rm -f "$TRACE_FILE"

log "memory: same run untraced (checks on, trace off)…"
t0=$(date +%s%N)
"${CLEAN_ENV[@]}" env LD_PRELOAD="$SHIM" NPUSHIM_CHECK=warn NPUSHIM_TRACE=off \
    "$HARNESS" --calls "$MEM_CALLS" --threads 1 --rss >"$SCRATCH/mem.out" 2>"$mem_err" \
    || { cat "$mem_err" >&2; die "untraced memory run failed"; }
t1=$(date +%s%N)
MEM_UNTRACED=$(grep '^threads=' "$SCRATCH/mem.out")
MEM_UNTRACED_WALL_NS=$((t1 - t0))
log "memory: same run without any preload…"
"${CLEAN_ENV[@]}" "$HARNESS" --calls "$MEM_CALLS" --threads 1 --rss >"$SCRATCH/mem.out" 2>"$mem_err" \
    || { cat "$mem_err" >&2; die "direct memory run failed"; }
MEM_DIRECT=$(grep '^threads=' "$SCRATCH/mem.out")

HWM_TRACED=$(field vmhwm_kb "$MEM_TRACED")
HWM_UNTRACED=$(field vmhwm_kb "$MEM_UNTRACED")
HWM_DIRECT=$(field vmhwm_kb "$MEM_DIRECT")
RSS_GROWTH_KB=$((HWM_TRACED - HWM_UNTRACED))
if [ "$TRACE_X" -gt 0 ]; then BYTES_PER_EVENT=$(calc "$TRACE_BYTES / $TRACE_X" 1); else BYTES_PER_EVENT=nan; fi

# ---------------------------------------------------------------------------
# Instruction counts (deterministic, immune to load on the machine)
# ---------------------------------------------------------------------------
declare -A INSNS
if [ "$CALLGRIND" = 1 ] && command -v valgrind >/dev/null 2>&1; then
    # Marginal instructions per call: the difference between two loop lengths, so one-time
    # set-up (symbol lookup, trace file creation) cancels out.  The traced runs stay below
    # one ring's capacity, so back-pressure never enters the count.
    for cfg in $CONFIGS; do
        toggle=copy_loop
        if [ -n "${FN[$cfg]:-}" ]; then toggle=${FN_LOOP[${FN[$cfg]}]}; fi
        case $cfg in
            dpaced | paced | devpaced) continue ;; # paced: the same code path as direct / traced
            traced | traced_*) n=5000 ;;
            chrome) n=2000 ;;
            *_malloc | *_free) n=5000 ;;
            *) n=100000 ;;
        esac
        log "callgrind: ${LABEL[$cfg]}…"
        irs=()
        for calls in "$n" "$((2 * n))"; do
            rm -f "$TMP"/trace-*
            cg="$SCRATCH/cg.out"
            envs=()
            if [ -n "${ENVS[$cfg]}" ]; then read -r -a envs <<<"${ENVS[$cfg]}"; fi
            "${CLEAN_ENV[@]}" "${envs[@]}" valgrind --tool=callgrind --callgrind-out-file="$cg" \
                --toggle-collect="$toggle" "$HARNESS" --calls "$calls" --warmup 1000 ${HARGS[$cfg]:-} \
                >"$SCRATCH/cg.stdout" 2>"$SCRATCH/cg.stderr" \
                || { cat "$SCRATCH/cg.stderr" >&2; die "callgrind run failed ($cfg)"; }
            irs+=("$(awk '/^(summary|totals):/ { print $2; exit }' "$cg")")
            rm -f "$cg"*
        done
        INSNS[$cfg]=$(calc "(${irs[1]} - ${irs[0]}) / $n" 0)
    done
fi

# ---------------------------------------------------------------------------
# dlsym(handle, "aclrtMemcpyAsync"): what a lookup costs, with and without the shim
# ---------------------------------------------------------------------------
DLSYM_KINDS="handle-hooked handle-hooked-after-call handle-other default next"
declare -A DLSYM
for ((r = 1; r <= RUNS; r++)); do
    for pre in none cint shim; do
        log "dlsym: lookups, preload $pre, run $r/$RUNS…"
        envs=(LD_LIBRARY_PATH="$NOOP_DIR")
        case $pre in
            cint) envs+=(LD_PRELOAD="$CINT") ;;
            shim) envs+=(LD_PRELOAD="$SHIM" NPUSHIM_CHECK=warn NPUSHIM_TRACE=off) ;;
        esac
        out=$("${CLEAN_ENV[@]}" "${envs[@]}" "$DLSYM_COST" "$DLSYM_LOOKUPS" 2>"$SCRATCH/dlsym.err") \
            || { cat "$SCRATCH/dlsym.err" >&2; die "dlsym_cost failed (preload $pre)"; }
        while read -r line; do
            kind=$(field lookup "$line")
            DLSYM[$pre,$kind]="${DLSYM[$pre,$kind]:-} $(field ns_per_lookup "$line")"
        done <<<"$out"
    done
done

UFTRACE_LINES=""
if command -v uftrace >/dev/null 2>&1; then
    log "uftrace: recording the harness compiled with -pg…"
    # shellcheck disable=SC2086
    if "$CC" $CFLAGS_BENCH -pg -pthread -I"$ROOT/tests/sim/include" -o "$SCRATCH/harness-pg" \
        tests/bench/harness.c -L"$NOOP_DIR" -Wl,--no-as-needed -lascendcl -Wl,-rpath,"$NOOP_DIR" 2>/dev/null; then
        ucalls=$((CALLS[traced] / 5))
        UFTRACE_VERSION=$(uftrace --version 2>/dev/null | awk 'NR == 1 { print $2 }')
        # Each iteration is one library call through the PLT, which uftrace records at
        # entry and exit; the second form also records its six arguments.
        for variant in plain args; do
            uargs=()
            label="entry + exit"
            if [ "$variant" = args ]; then
                uargs=(-A 'aclrtMemcpyAsync@arg1,arg2,arg3,arg4,arg5,arg6')
                label="entry + exit with the 6 arguments"
            fi
            uw=""
            uc=""
            for ((r = 1; r <= RUNS; r++)); do
                log "uftrace: $label, run $r/$RUNS…"
                rm -rf "$TMP/uftrace.data"
                if res=$("${CLEAN_ENV[@]}" uftrace record -d "$TMP/uftrace.data" "${uargs[@]}" \
                    "$SCRATCH/harness-pg" --calls "$ucalls" 2>/dev/null | grep '^threads='); then
                    uw="$uw $(field ns_per_call "$res")"
                    uc="$uc $(field cpu_ns_per_call "$res")"
                fi
            done
            rm -rf "$TMP/uftrace.data"
            if [ -n "$uw" ]; then
                # shellcheck disable=SC2086
                UFTRACE_LINES="$UFTRACE_LINES| uftrace $UFTRACE_VERSION, $label | $(stat_of median $uw) ($(stat_of min $uw)–$(stat_of max $uw)) | $(stat_of median $uc) |
"
            fi
        done
    fi
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
med() { stat_of median ${1:-}; }
mn() { stat_of min ${1:-}; }
mx() { stat_of max ${1:-}; }
sum_of() { printf '%s\n' ${1:-} | awk '{ s += $1 } END { print s + 0 }'; }

MODEL=$(lscpu 2>/dev/null | awk -F: '/^Model name/ && !done { sub(/^[ \t]+/, "", $2); print $2; done = 1 }')
CORES=$(nproc)
KERNEL=$(uname -r)
RUSTC=$(rustc --version 2>/dev/null || echo unknown)
GCC=$("$CC" --version | awk 'NR == 1')
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
# Local changes other than the results file itself (a previous run's output).
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no -- . ":(exclude)${OUTPUT#"$ROOT"/}" 2>/dev/null)" ]; then
    REV="$REV (with local changes)"
fi

declare -A BUDGET_WALL BUDGET_CPU
# The baselines of a row: the same function called directly, and through the C interposer.
direct_of() { if [ -n "${FN[$1]:-}" ]; then echo "direct_${FN[$1]}"; else echo direct; fi; }
cint_of() { if [ -n "${FN[$1]:-}" ]; then echo "cint_${FN[$1]}"; else echo cint; fi; }
verdict() { if le "$1" "$2"; then echo PASS; else echo FAIL; fi; }

# budget_rows LABEL BASE CONFIG SLACK: one budget row per thread count, judging CONFIG's
# medians against BASE's plus SLACK ns, on wall and on CPU time.
budget_rows() {
    local label=$1 base=$2 cfg=$3 slack=$4 t wb cb wx cx
    for t in ${THREADS[$cfg]:-$THREAD_COUNTS}; do
        wb=$(med "${WALL[$base,$t]}"); cb=$(med "${CPU[$base,$t]}")
        wx=$(med "${WALL[$cfg,$t]}"); cx=$(med "${CPU[$cfg,$t]}")
        printf '| %s | %s | %s ≤ %s | %s | %s ≤ %s | %s |\n' "$label" "$t" \
            "$wx" "$(calc "$wb + $slack")" "$(verdict "$wx" "$wb + $slack")" \
            "$cx" "$(calc "$cb + $slack")" "$(verdict "$cx" "$cb + $slack")"
    done
}

# ratio_rows LABEL BASE CONFIG FACTOR: as budget_rows, against FACTOR × BASE's medians.
ratio_rows() {
    local label=$1 base=$2 cfg=$3 factor=$4 t wb cb wx cx
    for t in ${THREADS[$cfg]:-$THREAD_COUNTS}; do
        wb=$(med "${WALL[$base,$t]}"); cb=$(med "${CPU[$base,$t]}")
        wx=$(med "${WALL[$cfg,$t]}"); cx=$(med "${CPU[$cfg,$t]}")
        printf '| %s | %s | %s ≤ %s | %s | %s ≤ %s | %s |\n' "$label" "$t" \
            "$wx" "$(calc "$wb * $factor")" "$(verdict "$wx" "$wb * $factor")" \
            "$cx" "$(calc "$cb * $factor")" "$(verdict "$cx" "$cb * $factor")"
    done
}

{
    cat <<EOF
# Benchmarks

Per-call overhead of \`libnpushim.so\` on \`aclrtMemcpyAsync\`, measured against a no-op
runtime (\`tests/bench/noop_acl.c\`), so the numbers are the cost of the interposer and
nothing else. This file is generated by \`scripts/bench.sh\`; edit the script, not the file.

The harness (\`tests/bench/harness.c\`) calls \`aclrtMemcpyAsync\` in a tight loop through the
PLT with valid arguments (64-byte aligned buffers, \`count <= destMax\`, \`HOST_TO_DEVICE\`,
non-NULL stream), after a warm-up, on 1 and 2 threads. The baseline is the cheapest possible
interposer (\`tests/bench/c_interposer.c\`: \`dlsym(RTLD_NEXT)\` once, then forward). The
**C recorder** (\`tests/bench/c_recorder.c\`) is that interposer plus the least any span
recorder must do per call: two TSC reads and a 64-byte record into a thread-local ring, with
no writer. It measures the floor of a traced call on this machine.

The rows named after another function call it the same way on 1 thread (\`harness --fn\`):
\`aclrtMemcpy\` (the no-op runtime builds it on \`aclrtMemcpyAsync\`, called through the
PLT, so every interposer sees two calls there, the inner one nested), \`HcclD2DMemcpyAsync\`
(two \`DeviceMem\` objects), \`aclrtSynchronizeStream\`, and \`aclrtMalloc\` / \`aclrtFree\`
(4 KiB, in batches of 256 allocations then 256 frees, each half timed on its own, with
$LIVE other allocations live; the no-op runtime's allocation is \`posix_memalign\`, and
the heap is never trimmed, see below). Their
baselines are the same function called directly and through the C interposer. The
**memory map** rows copy from a pinned buffer (\`aclrtMallocHost\`) into a device buffer
(\`aclrtMalloc\`) with $LIVE other allocations live, with the map on (the default) and off.

The **paced** rows call in bursts of $PACE_BURST calls separated by $PACE_GAP_US µs of idle
time and time only the bursts (\`harness --burst\`): a program that computes between copies.
There the trace writer works in the gaps, so the figure is the calling thread's own cost of
a traced call. In the tight-loop rows a traced caller produces spans faster than the writer
can write JSON, so it waits for ring space (back-pressure, by design: nothing is dropped
while the writer makes progress) and the wall figure is the writer's throughput.

Two clocks are reported for every run:

- **wall**: CLOCK_MONOTONIC around each thread's loop, divided by its calls (per-thread
  figures averaged over the threads). This is what a program feels, including any time the
  shim makes it wait for the trace writer, and including time the thread spent preempted by
  other work on the machine.
- **CPU**: the calling thread's own CPU time (CLOCK_THREAD_CPUTIME_ID) over the same loop.
  It leaves out preemption, so it is the steadier figure on a shared machine, but it also
  leaves out waiting for the trace writer (see "process CPU/call" for the writer's share).

## Machine

| | |
|---|---|
| CPU | $MODEL |
| cores | $CORES |
| kernel | $KERNEL |
| rustc | $RUSTC |
| C compiler | $GCC |
| revision | $REV |
| date | $DATE |
| load average (1/5/15 min) | $LOAD_BEFORE before, $LOAD_AFTER after |
| trace files written to | \`$TRACE_DIR\` ($TRACE_FS) |

Command: \`$COMMAND\` — $RUNS runs per configuration and thread count, interleaved;
$FAST_CALLS calls per thread per run for the untraced configurations, $TRACED_CALLS for the
native trace, $CHROME_CALLS for the tracing-chrome sink (it is far slower).

## Per-call cost

Medians over $RUNS runs; (min–max) is the spread over the runs. Ratio and deltas are taken
against the median of the same thread count.

| config | threads | median wall ns/call (min–max) | ratio vs direct | Δ vs C interposer | median CPU ns/call (min–max) | CPU Δ vs C interposer | process CPU/call | dropped events |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
    for cfg in $CONFIGS; do
        for t in ${THREADS[$cfg]:-$THREAD_COUNTS}; do
            k="$cfg,$t"
            w=$(med "${WALL[$k]}")
            c=$(med "${CPU[$k]}")
            wd=$(med "${WALL[$(direct_of "$cfg"),$t]}")
            wc=$(med "${WALL[$(cint_of "$cfg"),$t]}")
            cc=$(med "${CPU[$(cint_of "$cfg"),$t]}")
            ratio=$(calc "$w / $wd" 2)
            dwall=$(calc "$w - $wc" 2)
            dcpu=$(calc "$c - $cc" 2)
            p="n/a"
            if [ -n "${PROC[$k]:-}" ]; then p="$(med "${PROC[$k]}") ns"; fi
            d="—"
            case $cfg in traced | traced_* | chrome | paced | devpaced) d=$(sum_of "${DROPPED[$k]}") ;; esac
            printf '| %s | %s | %s (%s–%s) | %s× | %+.2f | %s (%s–%s) | %+.2f | %s | %s |\n' \
                "${LABEL[$cfg]}" "$t" "$w" "$(mn "${WALL[$k]}")" "$(mx "${WALL[$k]}")" "$ratio" "$dwall" \
                "$c" "$(mn "${CPU[$k]}")" "$(mx "${CPU[$k]}")" "$dcpu" "$p" "$d"
        done
    done
    cat <<EOF

"process CPU/call" is the whole process's user + system time (\`/usr/bin/time\`: the trace
writer thread and the final flush included) divided by every call made, warm-up included.
"dropped events" is the total over all runs of that row, as written into the trace by the
shim: records the writer thread could not take in time (it made no progress for 100 ms,
typically because it got no CPU). A dropped record costs the caller no waiting, so a row
with drops is, if anything, flattered. The tracing-chrome sink never drops.
EOF
    if [ -n "${INSNS[direct]:-}" ]; then
        cat <<EOF

### Instructions per call (callgrind)

Instructions executed on the calling thread per call, counted by
\`valgrind --tool=callgrind\` inside the harness loop (difference between two loop lengths,
so one-time set-up cancels out). Deterministic: unaffected by load on the machine. Every
row is compared with the same function called directly and through the C interposer; the
last column divides by the C recorder's count (the floor of a traced call).

| config | instructions/call | over direct | over C interposer | ÷ C recorder |
|---|---:|---:|---:|---:|
EOF
        for cfg in $CONFIGS; do
            [ -n "${INSNS[$cfg]:-}" ] || continue
            i=${INSNS[$cfg]}
            dcfg=$(direct_of "$cfg")
            ccfg=$(cint_of "$cfg")
            printf '| %s | %s | %+d | %+d | %s× |\n' "${LABEL[$cfg]}" "$i" "$((i - ${INSNS[$dcfg]:-0}))" \
                "$((i - ${INSNS[$ccfg]:-0}))" "$(calc "$i / ${INSNS[crec]:-1}" 2)"
        done
    fi

    cat <<EOF

## Memory and trace file

One traced run of $MEM_CALLS calls on 1 thread (plus $MEM_WARMUP warm-up calls), native sink,
checks on; the same run with the trace off, and with no preload at all, for comparison.
Peak RSS is \`VmHWM\` read from \`/proc/self/status\` by the harness after its loop.

| | value |
|---|---:|
| peak RSS, no preload | $HWM_DIRECT KiB |
| peak RSS, npushim, trace off | $HWM_UNTRACED KiB |
| peak RSS, npushim, traced | $HWM_TRACED KiB |
| peak RSS growth from tracing | $RSS_GROWTH_KB KiB ($(calc "$RSS_GROWTH_KB / 1024" 1) MiB) |
| trace file size | $TRACE_BYTES bytes ($(calc "$TRACE_BYTES / 1048576" 1) MiB) |
| complete events (\`"ph":"X"\`) in the file | $TRACE_X (calls made: $((MEM_CALLS + MEM_WARMUP))) |
| events dropped (npushim_stats) | $TRACE_DROPPED |
| file ends with \`]\` | $TRACE_CLOSED |
| bytes per event on disk | $BYTES_PER_EVENT |
| traced process, wall time start to exit | $(calc "$MEM_TRACED_WALL_NS / 1e9" 2) s |
| untraced process, wall time start to exit | $(calc "$MEM_UNTRACED_WALL_NS / 1e9" 2) s |
| extra wall time from tracing (writing the file) | $(calc "($MEM_TRACED_WALL_NS - $MEM_UNTRACED_WALL_NS) / 1e9" 2) s |
| of which after the loop (final flush at exit) | $(calc "$MEM_TRACED_TAIL_NS / 1e9" 3) s |
| effective write rate | $(calc "$TRACE_BYTES / 1048576 / ($MEM_TRACED_WALL_NS / 1e9)" 0) MiB/s, $(calc "$TRACE_X / ($MEM_TRACED_WALL_NS / 1e9) / 1e6" 2) M events/s |
| traced loop, wall ns/call | $(field ns_per_call "$MEM_TRACED") |
| trace writer thread CPU: user / system | $(field aux_user_ms "$MEM_TRACED") ms / $(field aux_sys_ms "$MEM_TRACED") ms ($(calc "100 * $(field aux_sys_ms "$MEM_TRACED") / ($(field aux_user_ms "$MEM_TRACED") + $(field aux_sys_ms "$MEM_TRACED") + 0.001)" 0)% in the kernel's write path) |
| trace writer user CPU per event | $(calc "$(field aux_user_ms "$MEM_TRACED") * 1e6 / ($TRACE_X + 1)" 0) ns |
EOF
    if [ -n "$UFTRACE_LINES" ]; then
        cat <<EOF

### uftrace, for comparison

The same harness compiled with \`-pg\` and run under \`uftrace record\` ($((CALLS[traced] / 5)) calls,
$RUNS runs, medians; trace data in \`$TRACE_DIR\`). uftrace records each call to
\`aclrtMemcpyAsync\` (a library call through the PLT) as a binary entry and exit record;
npushim's traced rows above check the arguments and write a JSON span with seven of them.

| tracer | wall ns/call (min–max) | CPU ns/call |
|---|---:|---:|
EOF
        printf '%s' "$UFTRACE_LINES"
        printf '| npushim, traced (tight loop, from above) | %s | %s |\n' "$(med "${WALL[traced,1]}")" "$(med "${CPU[traced,1]}")"
        printf '| npushim, traced, paced (from above) | %s | %s |\n' "$(med "${WALL[paced,1]}")" "$(med "${CPU[paced,1]}")"
    fi

    cat <<EOF

## dlsym

\`tests/bench/dlsym_cost\` \`dlopen\`s the no-op \`libascendcl.so\` and times $DLSYM_LOOKUPS lookups of
each kind (wall ns per lookup, medians over $RUNS runs): \`dlsym(handle, "aclrtMemcpyAsync")\`
(a hooked name: npushim answers with its own export, SPEC §3), the same after one call
through the handle (the shim initialised), \`dlsym(handle, "aclInit")\` (a name it does not
hook), \`dlsym(RTLD_DEFAULT, "getpid")\` and \`dlsym(RTLD_NEXT, "getpid")\`. Without a preload,
with the C interposer (which does not interpose \`dlsym\`), and with npushim (checks on,
trace off).

| lookup | no preload | C interposer | npushim | npushim − no preload |
|---|---:|---:|---:|---:|
EOF
    for kind in $DLSYM_KINDS; do
        a=$(med "${DLSYM[none,$kind]:-}"); b=$(med "${DLSYM[cint,$kind]:-}"); c=$(med "${DLSYM[shim,$kind]:-}")
        printf '| %s | %s ns | %s ns | %s ns | %+.1f ns |\n' "$kind" "$a" "$b" "$c" "$(calc "$c - $a" 1)"
    done

    # Budgets
    wd1=$(med "${WALL[direct,1]}"); cd1=$(med "${CPU[direct,1]}")
    cat <<EOF

## Budgets

Each timing budget is judged twice: on the wall-clock medians (what the budget names) and on
the calling thread's CPU-time medians (which leave out preemption by other work on the
machine, and waiting for the trace writer).

| budget | threads | wall: measured vs limit | wall | CPU: measured vs limit | CPU |
|---|---:|---|---|---|---|
EOF
    budget_rows "pass-through (DISABLE=1) ≤ C interposer + 1 ns" cint disabled 1
    for fn in memcpy d2d sync malloc free; do
        budget_rows "${FN_NAME[$fn]} pass-through ≤ C interposer + 1 ns" "cint_$fn" "disabled_$fn" 1
    done
    budget_rows "checks on, trace off ≤ C interposer + 3 ns" cint checks 3
    for fn in memcpy d2d sync; do
        budget_rows "${FN_NAME[$fn]} checks on, trace off ≤ C interposer + 3 ns" "cint_$fn" "checks_$fn" 3
    done
    ratio_rows "traced, paced ≤ 1.75 × C recorder" crec paced 1.75
    ratio_rows "device timeline on, traced, paced ≤ 1.5 × traced, paced (two event records per copy)" paced devpaced 1.5
    budget_rows "memory map: checks on with $LIVE live allocations ≤ NPUSHIM_MEMMAP=off + 5 ns" \
        checks_live_nomap checks_live 5
    budget_rows "memory map: traced with $LIVE live allocations ≤ NPUSHIM_MEMMAP=off + 5 ns" \
        traced_live_nomap traced_live 5
    for fn in malloc free; do
        budget_rows "${FN_NAME[$fn]} hook, checks on, trace off ≤ real + 200 ns" "direct_$fn" "checks_$fn" 200
        budget_rows "${FN_NAME[$fn]} hook, traced ≤ real + 200 ns" "direct_$fn" "traced_$fn" 200
    done
    w1=$(med "${WALL[traced,1]}"); w2=$(med "${WALL[traced,2]}")
    c1=$(med "${CPU[traced,1]}"); c2=$(med "${CPU[traced,2]}")
    printf '| traced, 2 threads per-thread ≤ 1.3 × 1 thread | 2 | %s ≤ %s | %s | %s ≤ %s | %s |\n' \
        "$w2" "$(calc "1.3 * $w1")" "$(verdict "$w2" "1.3 * $w1")" "$c2" "$(calc "1.3 * $c1")" "$(verdict "$c2" "1.3 * $c1")"
    cat <<EOF

| budget | measured | limit | verdict |
|---|---:|---:|---|
EOF
    printf '| peak RSS growth over %s traced calls | %s MiB | 64 MiB | %s |\n' "$MEM_CALLS" \
        "$(calc "$RSS_GROWTH_KB / 1024" 1)" "$(verdict "$RSS_GROWTH_KB" 65536)"
    if [ "$BYTES_PER_EVENT" = nan ]; then
        printf '| bytes per event on disk | no events | 250 | FAIL |\n'
    else
        printf '| bytes per event on disk | %s | 250 | %s |\n' "$BYTES_PER_EVENT" "$(verdict "$BYTES_PER_EVENT" 250)"
    fi
    if [ "$MEM_CALLS" -lt 10000000 ]; then
        printf '\n(RSS budget is stated for 10M calls; this run used %s.)\n' "$MEM_CALLS"
    fi

    cat <<EOF

## Where the traced time goes

- **The floor.** The C recorder row is what two TSC reads and one record cost on this
  machine, with nothing else: $(calc "$(med "${CPU[crec,1]}") - $(med "${CPU[direct,1]}")" 1) ns over a direct call here
  (CPU medians). On a virtual machine a TSC read costs several times what it does on bare
  metal, and this floor moves with it.
- **The memory map.** A copy is classified (its two pointers looked up, the location/kind
  table of SPEC §9 and the memory rules applied) whenever the map is on and checks or the
  trace need it. A copy loop repeats one call, so each thread keeps its last clean verdict,
  keyed on the call's arguments and the map's write generation, in the library's static
  TLS block: the export reads it while the arguments are still in registers and, with the
  trace off, forwards at once on a hit. The memory-map rows give what is left of the
  classification's cost with $LIVE allocations live.
- **The pipeline.** A traced \`aclrtMemcpyAsync\` with valid arguments takes the short
  route: the argument checks, the memo (or, on a miss, the map's lock-free lookup and the
  rules), the depth bookkeeping (one static-TLS word, so that a hooked function the real
  one calls is recorded at depth 1), two TSC reads around the real call, and one 128-byte
  record built in place in the thread's ring, whose next lines are prefetched for writing
  (the writer thread last read them on another core). The callgrind table gives its
  instructions as a multiple of the C recorder's.
- **Allocations and frees.** While no fault rule is active, an allocation or free takes a
  route of its own (no argument rule applies to it): a free closes its map entry before
  the real call, an allocation is entered after it, each a copy-on-write update of one
  chunk of up to 24 entries (now and then the top array), with $LIVE other allocations
  live, plus the span when traced. The callgrind table gives its instructions over the
  real function. The harness sets glibc's trim threshold out of reach before its
  first allocation in these modes (\`mallopt(M_TRIM_THRESHOLD)\`, and the mmap threshold
  pinned at its default), for every configuration alike: otherwise each batch of frees
  hands the top of the no-op runtime's heap (\`posix_memalign\`) back to the kernel and
  the next batch takes about a page fault per allocation, or not, depending on what else
  the process allocated in that arena, and the rows measured the heap (a pass-through that
  runs fewer instructions than the C interposer timed 4 × slower) rather than the hook.
  With the pages the warm-up faulted in kept, the timed loops take no page faults.
- **Bytes per event.** With the memory map on, every copy's span carries \`srcMem\` and
  \`dstMem\` (SPEC §5, §9; \`"unknown"\` for the harness's static buffers), about 37
  bytes of the figure above; the other args are the ones SPEC §5 requires.
- **The writer.** The writer thread formats about $BYTES_PER_EVENT bytes of JSON per span; see its user
  and system time in the memory table. Most of its time is the kernel's write path (page
  cache allocation for the file), which varies a lot between runs on a virtual machine. In a
  loop that does nothing but call, the caller outruns it and waits for ring space; the
  paced rows show the cost when the program does anything between copies.

## How to reproduce

    scripts/bench.sh            # full run: $RUNS runs, about 2–4 minutes on 2 cores once built
    scripts/bench.sh --quick    # 3 runs, fewer calls: a rough check

Needs cargo, gcc, make, awk; valgrind for the instruction counts (skipped with
\`--no-callgrind\` or when absent); \`/usr/bin/time\` for the process CPU column; uftrace
for the comparison (skipped when absent; Debian: \`apt-get install uftrace\`). The script
builds \`libnpushim.so\` (release), the no-op \`libascendcl.so\` into \`target/bench-sim\` and the
harness, C interposer and C recorder into \`target/bench\`. To time one configuration by hand:

    target/bench/harness --calls 20M --threads 1
    LD_PRELOAD=target/bench/c_interposer.so target/bench/harness --calls 20M
    NPUSHIM_DISABLE=1 LD_PRELOAD=target/release/libnpushim.so target/bench/harness --calls 20M
    NPUSHIM_TRACE=off LD_PRELOAD=target/release/libnpushim.so target/bench/harness --calls 20M
    NPUSHIM_TRACE=/dev/shm/t-%p.json LD_PRELOAD=target/release/libnpushim.so target/bench/harness --calls 5M --rss
    NPUSHIM_TRACE=off LD_PRELOAD=target/release/libnpushim.so target/bench/harness --live 10000 --calls 20M
    NPUSHIM_TRACE=off LD_PRELOAD=target/release/libnpushim.so target/bench/harness --fn malloc --live 10000 --calls 1M
    LD_LIBRARY_PATH=target/bench-sim/noop LD_PRELOAD=target/release/libnpushim.so target/bench/dlsym_cost

\`harness --fn\` takes memcpy-async (the default), memcpy, d2d, sync-stream, malloc or free.

On a machine shared with other work the wall-clock figures move with the load (see the
load average above); compare CPU figures and instruction counts across machines, and wall
figures only within one run of this script.
EOF
} >"$OUTPUT.tmp"
mv -f "$OUTPUT.tmp" "$OUTPUT"

# Budget summary on stderr, as in the file.
log "results written to ${OUTPUT#"$ROOT"/}"
awk '/^## Budgets/ { on = 1 } /^## How to reproduce/ { on = 0 } on && /PASS|FAIL/' "$OUTPUT" |
    sed 's/^/bench: /' >&2
exit 0
