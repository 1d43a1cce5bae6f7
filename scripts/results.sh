#!/usr/bin/env bash
# The README's benchmark results, reproducible: every bench run behind docs/results.md, then the summary.
#
#   scripts/results.sh               # all runs (~10-15 min on 2 cores) + summary -> out/results/summary.md,
#                                    # plots -> docs/img/results/ (PLOTS=dir to write them elsewhere)
#   scripts/results.sh summary       # only re-print the summary from existing out/results/*/results.json
#   scripts/results.sh find-load     # the target-load searches that chose the rate scales below (~25 min)
#
# EXTRA_SEEDS="1 2" (default) reruns the five scenarios with those seeds too; EXTRA_SEEDS= skips them.
# Needs ../shared (the Mooncake trace) for the mooncake scenarios; without it they are skipped with a message
# and the summary averages over the scenarios that ran. Outputs go to out/results/<run>/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
LV=(.venv/bin/lodestar-vllm)
OUT=${RESULTS_OUT:-out/results}
JOBS=${JOBS:-2}
SEED=0

BASELINES=roundrobin,session,prefixaware,least-request,least-kv,power-of-two,aibrix-prefix-load,llmd-default
BASELINES=$BASELINES,llmd-weighted,cache-aware,dynamo-cost
ALL=learned,$BASELINES,oracle-greedy

# Rate scales where the best heuristic's mean TTFT is >= 3x its idle TTFT (found by `find-load`, see
# docs/results.md); durations keep >= 5 virtual minutes of traffic so learning curves mean something.
HET_PREFIX_RATE=1.46; PREFIX_DURATION=300
HOM_PREFIX_RATE=1.6
HET_MOONCAKE_RATE=0.48; MOONCAKE_DURATION=600
HOM_MOONCAKE_RATE=0.52
MIXED_MRQA_RATE=11; MRQA_DURATION=300
SLOWDOWN_RATE=1.0  # the slowed fleet still has a steady state at this load (at 1.41 queues grow without end)
IDLE=(--rate-scale 0.02 --max-requests 150 --policies "$BASELINES")  # the target-load search's idle point

SHARED=${LODESTAR_SHARED:-../shared}
have_mooncake() {
    if [[ -d "$SHARED/data/traces/mooncake" ]]; then return 0; fi
    echo "SKIP $1: the Mooncake trace is not under $SHARED/data/traces/mooncake (set LODESTAR_SHARED)" >&2
    return 1
}

bench() {  # bench <run name> <bench args...>; seed $SEED, into $RUN_OUT (default $OUT)
    local name=$1 dir=${RUN_OUT:-$OUT}; shift
    mkdir -p "$dir"
    echo "== $name: lodestar-vllm bench $* --seed $SEED --jobs $JOBS --out $dir/$name" >&2
    "${LV[@]}" bench "$@" --seed "$SEED" --jobs "$JOBS" --no-progress --out "$dir/$name" > "$dir/$name.log"
    tail -n 3 "$dir/$name.log" >&2
}

summary() {
    "$PY" scripts/summarize_results.py --root "$OUT" --plots "${PLOTS:-docs/img/results}" \
        | tee "$OUT/summary.md"
}

find_load() {  # heuristics only; prints every evaluated rate scale
    local dir=$OUT/target-load; mkdir -p "$dir"
    local args=(--target-load 3 --policies "$BASELINES" --jobs "$JOBS" --no-progress)
    "${LV[@]}" bench --cluster paper-heterogeneous --workload prefix-sharing --duration $PREFIX_DURATION \
        --rate-scale 1 "${args[@]}" --out "$dir/het-prefix"
    "${LV[@]}" bench --cluster paper-homogeneous --workload prefix-sharing --duration $PREFIX_DURATION \
        --rate-scale 1 "${args[@]}" --out "$dir/hom-prefix"
    if have_mooncake find-load; then
        "${LV[@]}" bench --cluster paper-heterogeneous --workload mooncake-conversation \
            --duration $MOONCAKE_DURATION --rate-scale 0.25 "${args[@]}" --out "$dir/het-mooncake"
        "${LV[@]}" bench --cluster paper-homogeneous --workload mooncake-conversation \
            --duration $MOONCAKE_DURATION --rate-scale 0.5 "${args[@]}" --out "$dir/hom-mooncake"
    fi
    "${LV[@]}" bench --cluster mixed-fleet --workload multi-round-qa --duration $MRQA_DURATION \
        --rate-scale 8 "${args[@]}" --out "$dir/mixed-mrqa"
}

case "${1:-all}" in
    summary) summary; exit 0 ;;
    find-load) mkdir -p "$OUT"; find_load; exit 0 ;;
    all) ;;
    *) echo "usage: $0 [all|summary|find-load]" >&2; exit 2 ;;
esac

mkdir -p "$OUT/ckpt"
# the code the runs depend on (everything but the production-stack / k8s / real-vLLM integrations)
CODE=(lodestar_vllm/core lodestar_vllm/policies lodestar_vllm/sim lodestar_vllm/bench lodestar_vllm/workloads
      lodestar_vllm/tokenizer.py)
DIRTY=$(git diff --quiet -- "${CODE[@]}" || echo ' (+ uncommitted changes in the code it runs)')
echo "code at commit $(git rev-parse --short HEAD)$DIRTY" \
    "($(date -u +%FT%TZ))" | tee "$OUT/commit.txt" >&2

# Issue 3 + 4: every baseline, learned and the oracle on the five scenarios; <name>-idle is the same
# scenario nearly idle (the summary prints best heuristic / idle to show the load is >= 3x idle)
scenarios() {
    bench het-prefix --cluster paper-heterogeneous --workload prefix-sharing --rate-scale $HET_PREFIX_RATE \
        --duration $PREFIX_DURATION --policies $ALL
    bench het-prefix-idle --cluster paper-heterogeneous --workload prefix-sharing "${IDLE[@]}"
    bench hom-prefix --cluster paper-homogeneous --workload prefix-sharing --rate-scale $HOM_PREFIX_RATE \
        --duration $PREFIX_DURATION --policies $ALL
    bench hom-prefix-idle --cluster paper-homogeneous --workload prefix-sharing "${IDLE[@]}"
    if have_mooncake het-mooncake; then
        bench het-mooncake --cluster paper-heterogeneous --workload mooncake-conversation \
            --rate-scale $HET_MOONCAKE_RATE --duration $MOONCAKE_DURATION --policies $ALL
        bench het-mooncake-idle --cluster paper-heterogeneous --workload mooncake-conversation "${IDLE[@]}"
        bench hom-mooncake --cluster paper-homogeneous --workload mooncake-conversation \
            --rate-scale $HOM_MOONCAKE_RATE --duration $MOONCAKE_DURATION --policies $ALL
        bench hom-mooncake-idle --cluster paper-homogeneous --workload mooncake-conversation "${IDLE[@]}"
    fi
    bench mixed-mrqa --cluster mixed-fleet --workload multi-round-qa --rate-scale $MIXED_MRQA_RATE \
        --duration $MRQA_DURATION --policies $ALL
    bench mixed-mrqa-idle --cluster mixed-fleet --workload multi-round-qa "${IDLE[@]}"
}
scenarios  # seed 0: the tables

# Warm start: a model trained on other traffic (seed 1) routes the seed-0 traffic from its first request
"${LV[@]}" bench --cluster paper-heterogeneous --workload prefix-sharing --rate-scale $HET_PREFIX_RATE \
    --duration $PREFIX_DURATION --policies learned --seed 1 --jobs 1 --no-progress \
    --save-checkpoint "$OUT/ckpt/learned.ckpt" --out "$OUT/het-prefix-ckpt" > "$OUT/het-prefix-ckpt.log"
bench het-prefix-warm --cluster paper-heterogeneous --workload prefix-sharing --rate-scale $HET_PREFIX_RATE \
    --duration $PREFIX_DURATION --policies learned --warm-start "$OUT/ckpt/learned.ckpt"

# Adaptation: the four A30s become 2x slower at half the run (a longer run: 4 min after the change)
bench het-slowdown --cluster paper-heterogeneous-slowdown --workload prefix-sharing \
    --rate-scale $SLOWDOWN_RATE --duration 480 \
    --policies learned,aibrix-prefix-load,llmd-weighted,llmd-default,dynamo-cost,least-request,oracle-greedy

# Router replicas: 4 replicas (sessions split by hash), without and with model sharing every 30 s; the two
# best heuristics run as 4 replicas too, for comparison
bench het-replicas --cluster paper-heterogeneous --workload prefix-sharing --rate-scale $HET_PREFIX_RATE \
    --duration $PREFIX_DURATION --policies learned,aibrix-prefix-load,llmd-weighted --replicas 4
bench het-replicas-shared --cluster paper-heterogeneous --workload prefix-sharing \
    --rate-scale $HET_PREFIX_RATE --duration $PREFIX_DURATION --policies learned --replicas 4 \
    --share-interval 30

# The five scenarios again with other seeds (other arrival jitter and sampling): how much of a verdict is
# one draw. The summary averages each policy's TTFT over all seeds and re-checks the targets on that.
for SEED in ${EXTRA_SEEDS-1 2}; do
    RUN_OUT=$OUT/seed$SEED scenarios
done
SEED=0

summary
