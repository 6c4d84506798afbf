#!/usr/bin/env bash
# Builds npushim and the simulated Ascend runtime, then shows the shim at work on
# unmodified programs: a copy pipeline, an 8-rank ring all-gather (HcclMemcpyAsync and
# HcclD2DMemcpyAsync) and a torch_npu-like tensor program under tracing and checks, a
# training loop surviving injected faults, and a 4-rank job merged into one timeline.
# Everything it leaves is in demo-out/ (traces, merged trace, summaries).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/demo-out
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SIM=$TARGET/sim

say() { printf '\n== %s\n' "$*" >&2; }

say "building libnpushim.so and the npushim tool (cargo build --release)"
cargo build --release --quiet
say "building the simulated Ascend runtime and example programs (tests/Makefile)"
make -s -C tests OUT="$SIM" -j2 >/dev/null
NPUSHIM=$TARGET/release/npushim
BIN=$SIM/bin

rm -rf "$OUT"
mkdir -p "$OUT"
cd "$OUT"

say "1. copy_pipeline: H2D -> D2D -> D2H on 4 streams, pinned and pageable memory"
"$NPUSHIM" run --trace "$OUT/copy_pipeline-%p.json" -- "$BIN/copy_pipeline"

say "2. ring_allgather: 8 simulated devices, HcclMemcpyAsync over HCCS (each nests an aclrtMemcpyAsync)"
NPUSIM_GBPS=50 "$NPUSHIM" run --trace "$OUT/ring_allgather-%p.json" -- "$BIN/ring_allgather"

say "2b. the same all-gather through HcclD2DMemcpyAsync on hccl::DeviceMem (HCCL's hot path)"
NPUSIM_GBPS=50 "$NPUSHIM" run --trace "$OUT/ring_allgather_d2d-%p.json" -- "$BIN/ring_allgather" --d2d

say "2c. torch_like: blocking .to()/.cpu() (aclrtSynchronizeStream + aclrtMemcpy), memset, 2D copy, host waits"
NPUSIM_GBPS=20 "$NPUSHIM" run --trace "$OUT/torch_like-%p.json" -- "$BIN/torch_like" 4194304
echo "(its non_blocking D2H, aclrtMemcpyAsyncWithCondition, is found with dlopen + dlsym(handle))" >&2

say "2d. the device timeline: the same program with NPUSHIM_DEVICE=events (device tracks, arrows, device GB/s)"
NPUSIM_GBPS=20 NPUSHIM_DEVICE=events "$NPUSHIM" run --trace "$OUT/torch_like_device-%p.json" -- "$BIN/torch_like" 4194304 >/dev/null

say "3. checks: a program making one bad call of each kind (warn: reported and forwarded)"
"$NPUSHIM" run --trace "$OUT/bad_calls-%p.json" -- "$BIN/bad_calls" >"$OUT/bad_calls.out" 2>"$OUT/bad_calls.err" || true
grep -c '^case ' "$OUT/bad_calls.out" | xargs printf 'bad_calls: %s calls made; the shim reported:\n' >&2
grep '^npushim: summary' "$OUT/bad_calls.err" >&2 || true

say "4. faults: a training loop whose 3rd device-to-host copy fails, and one whose 6th copy is lost"
"$NPUSHIM" run --seed 42 --trace "$OUT/retry_copy-%p.json" \
    --faults 'aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->1*return(ACL_ERROR_RT_DEVICE_MEM_ERROR)->off' \
    -- "$BIN/retry_copy"
"$NPUSHIM" run --seed 42 --trace "$OUT/retry_copy_skip-%p.json" \
    --faults 'aclrtMemcpyAsync=5*off->1*skip' -- "$BIN/retry_copy"

say "5. a 4-rank job (RANK=0..3, as torchrun or mpirun set it), one trace per rank, merged"
pids=()
for r in 0 1 2 3; do
    RANK=$r "$NPUSHIM" run --trace "$OUT/rank%r-%p.json" -- "$BIN/call_storm" --threads 2 --calls 2000 \
        >"$OUT/rank$r.out" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
"$NPUSHIM" merge -o "$OUT/merged.json" "$OUT"/rank*-*.json
"$NPUSHIM" report "$OUT/merged.json" >"$OUT/merged-report.txt"

say "summary of every trace"
for t in "$OUT"/copy_pipeline-*.json "$OUT"/ring_allgather-*.json "$OUT"/ring_allgather_d2d-*.json \
    "$OUT"/torch_like-*.json "$OUT"/torch_like_device-*.json "$OUT"/retry_copy-*.json; do
    "$NPUSHIM" report "$t" >"${t%.json}-report.txt"
done
cat "$OUT"/ring_allgather-*-report.txt
cat "$OUT"/torch_like-*-report.txt
sed -n '/^Device time/,/^$/p' "$OUT"/torch_like_device-*-report.txt

say "done"
cat >&2 <<TXT
Traces, reports and the merged 4-rank timeline are in $OUT:
$(cd "$OUT" && ls -1 *.json *.txt | sed 's/^/  /')
Open any .json in https://ui.perfetto.dev (or chrome://tracing); merged.json shows all four
ranks on one timeline. Reports: $NPUSHIM report TRACE.
TXT
