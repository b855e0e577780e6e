#!/usr/bin/env bash
# An A/B test between the trending rule and the trained model, driven by the shopper simulator,
# with the existing commands only: `shopstream up` (one stack, its own workdir and free ports),
# `shopstream experiments set`, `shopstream simulate`, `shopstream experiments report`.
# Writes the report (JSON + PNG), the simulator's summary (ground-truth CTR per variant) and the
# console under OUT (default docs/results/ab-trending-vs-model). Run from the repository root
# after `make`:  scripts/ab_trending_vs_model.sh   (SHOPPERS=1500 LISTS=30 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-docs/results/ab-trending-vs-model}
WORK=${WORK:-var/ab-trending-vs-model}   # the stack's models, Redis, logs and stack.json
NAME=${NAME:-ab-trending-vs-model}
SHOPPERS=${SHOPPERS:-1500}
LISTS=${LISTS:-30}                        # lists per shopper
MAX_IN_FLIGHT=${MAX_IN_FLIGHT:-8}
SEED=${SEED:-13}
SS=.venv/bin/shopstream
PY=.venv/bin/python

mkdir -p "$OUT" "$WORK"
rm -rf "$WORK/redis" "$WORK/logs"   # a fresh Redis: counters of an earlier run would add up; the model is kept
export SHOPSTREAM_STACK_FILE="$PWD/$WORK/stack.json"  # the other commands find this stack (and its Redis) here
console="$OUT/console.txt"
: >"$console"
say() { echo "$@" | tee -a "$console"; }

started=$(date -u +%s)
say "==> $(date -u '+%Y-%m-%d %H:%M:%S UTC'): shopstream up --workdir $WORK --free-ports --no-prometheus --users 2000 --rate 1000"
# every replayed user with >= 5 events (1,791 of the 2,000 generated) is known to the ranker before the test
$SS up --workdir "$WORK" --free-ports --no-prometheus --users 2000 --rate 1000 >"$WORK/up.console" 2>&1 &
up_pid=$!
stop_stack() { kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null || true; }
trap stop_stack EXIT
until grep -q "==> running" "$WORK/up.console"; do
  kill -0 "$up_pid" 2>/dev/null || { cat "$WORK/up.console"; echo "shopstream up stopped" >&2; exit 1; }
  sleep 2
done
grep "==> model\|==> services up\|events in" "$WORK/up.console" | tee -a "$console"
say "==> stack up after $(( $(date -u +%s) - started ))s"

model=$(cat "$WORK/models/LATEST")
definition="{\"name\": \"$NAME\", \"variants\": [
  {\"name\": \"trending\", \"kind\": \"trending\", \"weight\": 50},
  {\"name\": \"model\", \"kind\": \"model\", \"model_version\": \"$model\", \"weight\": 50}]}"
echo "$definition" >"$OUT/experiment.json"
$SS experiments set "$OUT/experiment.json" | tee -a "$console"
sleep 3  # gateways poll the definitions every second (SHOPSTREAM_GATEWAY_EXPERIMENTS_POLL_S)

sim_started=$(date -u +%s)
say "==> shopstream simulate --shoppers $SHOPPERS --lists-per-shopper $LISTS --duration 0 --max-in-flight $MAX_IN_FLIGHT --seed $SEED"
$SS simulate --shoppers "$SHOPPERS" --lists-per-shopper "$LISTS" --duration 0 --max-in-flight "$MAX_IN_FLIGHT" \
  --seed "$SEED" --log "$WORK/shoppers.jsonl" | tee -a "$console"
say "==> simulation took $(( $(date -u +%s) - sim_started ))s"
cp "$WORK/shoppers.jsonl.summary.json" "$OUT/shoppers.summary.json"

# The attribution job runs behind the shoppers: wait (at most 120 s) until its counts equal the
# shoppers' own log, then write the report.
gateway_metrics=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['gateway'])" "$SHOPSTREAM_STACK_FILE")
for _ in $(seq 60); do
  $SS experiments report "$NAME" --control trending --json "$WORK/report.json" >/dev/null
  if $PY - "$WORK/report.json" "$OUT/shoppers.summary.json" <<'EOF'
import json, sys
report, summary = (json.load(open(p)) for p in sys.argv[1:3])
counted = ("impressions", "clicks", "add_to_carts", "purchases")
got = {r["variant"]: [int(r[k]) for k in counted] for r in report["variants"]}
want = {v: [t[k] for k in counted] for v, t in summary["variants"].items()}
sys.exit(0 if got == want else 1)
EOF
  then break; fi
  sleep 2
done
$SS experiments report "$NAME" --control trending --json "$OUT/report.json" --chart "$OUT/report.png" \
  --gateway-metrics "$gateway_metrics" | tee -a "$console"

# The measured CTR of each variant against the simulator's ground truth, and the counts against its log.
$PY - "$OUT/report.json" "$OUT/shoppers.summary.json" <<'EOF' | tee -a "$console"
import json, sys
report, summary = (json.load(open(p)) for p in sys.argv[1:3])
counted = ("impressions", "clicks", "add_to_carts", "purchases")
for row in report["variants"]:
    v, truth = row["variant"], summary["variants"][row["variant"]]
    ctr, gt = row["ctr"], truth["expected_ctr"]
    inside = ctr["low"] <= gt <= ctr["high"]
    same = all(int(row[k]) == truth[k] for k in counted)
    print(f"{v}: CTR {ctr['value']:.4f} 95% [{ctr['low']:.4f}, {ctr['high']:.4f}], ground truth {gt:.4f} "
          f"{'inside' if inside else 'OUTSIDE'}; attributed counts {'=' if same else '!='} the shoppers' log "
          f"({', '.join(f'{k} {row[k]}' for k in counted)})")
    test = row.get("tests", {}).get("ctr")
    if test:
        print(f"{v} vs control: {test['test']}, z = {test['z']:.2f}, p = {test['p_value']:.3g}"
              + (" (below double precision)" if test["p_value"] == 0 else ""))
EOF
# The report takes every list as an independent trial, but a user's lists are correlated. The same
# comparison with users as the unit (each shopper's own CTR, Welch's t over users), from the log:
$PY - "$WORK/shoppers.jsonl" <<'EOF' | tee -a "$console"
import json, math, sys
from collections import defaultdict
owner, clicked, variant_of = {}, set(), {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["kind"] == "list":
        owner[r["recommendation_id"]] = r["user_id"]
        variant_of[r["user_id"]] = r["variant"]
    elif r["kind"] == "event" and r["type"] == "click":
        clicked.add(r["recommendation_id"])
per_user = defaultdict(lambda: [0, 0])
for rid, user in owner.items():
    per_user[user][0] += 1
    per_user[user][1] += rid in clicked
arms = defaultdict(list)
for user, (n, c) in per_user.items():
    arms[variant_of[user]].append(c / n)
stats = {}
for v, xs in sorted(arms.items()):
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    stats[v] = (m, var, len(xs))
    print(f"per user: {v}: {len(xs)} users, mean of their CTRs {m:.4f} (sd {math.sqrt(var):.4f})")
(m1, v1, n1), (m0, v0, n0) = stats["model"], stats["trending"]
t = (m1 - m0) / math.sqrt(v1 / n1 + v0 / n0)
df = (v1 / n1 + v0 / n0) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v0 / n0) ** 2 / (n0 - 1))
print(f"per user: model - trending {m1 - m0:+.4f}, Welch t = {t:.2f} on {df:.0f} df "
      f"(normal-approximation p = {math.erfc(abs(t) / math.sqrt(2)):.3g})")
EOF
say "==> total $(( $(date -u +%s) - started ))s; stopping the stack"
