#!/usr/bin/env bash
# Health benchmark (issue 7). Prints numbers, asserts nothing. In one run on the same data:
#   1. loads a generated customer base through the demo (generate + HTTP ingest path, untimed)
#      and waits until the rollups have caught up with every event; the server is then stopped;
#   2. indicator discovery + tiering for every segment, `bellwether indicators --as-of
#      INDICATORS_AS_OF --format json` (it analyses fresh when --as-of is given): median wall
#      time and peak RSS of RUNS runs;
#   3. `bellwether backtest --as-of AS_OF --horizon-days HORIZON --format json` (a model from
#      the renewals decided before AS_OF, every account scored with the data before it, against
#      the renewals decided in the HORIZON days after): median wall time and peak RSS of RUNS
#      runs, and its per-segment AUCs of the tier, the calibrated expected renewal rate, the
#      health score and the logins baseline;
#   4. scikit-learn's HistGradientBoostingClassifier (default parameters, random_state=0) on
#      the same examples from the same database (bench/health_sklearn.py): every feature's
#      monthly uses in the term + segment one-hot for training, the last 90 days before AS_OF
#      for scoring; its AUC overall and per segment, feature extraction and fit+predict times.
# Targets (issue 7): calibrated tiers within 0.03 AUC of the gradient-boosting model; discovery
# + tiering in under 10 s. Issue 27, per segment with at least 30 decided renewals: score AUC
# no more than 0.05 below the expected rate's, calibration error <= 0.08, no tier with 90% or
# more of the decisions, expected-rate AUC no more than 0.03 below gradient boosting. The issue's size, 5,000 accounts x 3 years of rollups, is the
# default: with the 2026-11-24 build it is 56.5 M events, a 19.1 GB database and 20 min of
# load (1,500 accounts: 17.9 M events, 6.0 GB, 286 s), so check `df -h /tmp` first. The
# generator changes: the counts loaded are printed, and a smaller ACCOUNTS prints what 5,000
# would be by linear scaling (the load is slightly worse than linear).
# Usage: [ACCOUNTS=5000] [YEARS=3] [END_DATE=2026-11-20] [SEED=42] [RUNS=3] [AS_OF=2025-11-20]
#        [HORIZON=365] [INDICATORS_AS_OF=2026-11-21] [BIN=path/to/bellwether (skips the build)]
#        [OUT=dir (keeps the indicators, backtest and scikit-learn JSON there)] bench/health.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS=${ACCOUNTS:-5000}
YEARS=${YEARS:-3}
END_DATE=${END_DATE:-2026-11-20}
SEED=${SEED:-42}
RUNS=${RUNS:-3}
AS_OF=${AS_OF:-2025-11-20}
HORIZON=${HORIZON:-365}
INDICATORS_AS_OF=${INDICATORS_AS_OF:-2026-11-21}
python3 -c 'import sklearn' 2>/dev/null || pip install --quiet scikit-learn==1.9.1 >&2

. bench/lib.sh

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ); HEAD $(git rev-parse --short HEAD 2>/dev/null || echo "?") (binary built $(date -u -r "$BIN" +%Y-%m-%dT%H:%MZ)); scikit-learn $(python3 -c 'import sklearn; print(sklearn.__version__)')"

# 1. Load (untimed for the targets) and wait for the rollups.
echo "loading $ACCOUNTS accounts x $YEARS years to $END_DATE through the demo..." >&2
load_started=$(date +%s)
BELLWETHER_LOG=warn "$B" demo --data-dir "$DATA" --accounts "$ACCOUNTS" --years "$YEARS" --end-date "$END_DATE" --seed "$SEED" \
    --listen 127.0.0.1:0 > "$work/load.out" 2> "$work/load.err" &
PID=$!; pids+=("$PID")
until grep -q 'listening on http://' "$work/load.out" 2>/dev/null; do
    kill -0 "$PID" 2>/dev/null || { echo "demo exited" >&2; tail -20 "$work/load.err" >&2; exit 1; }
    sleep 1
done
listen_s=$(( $(date +%s) - load_started ))
while [ "$(sql 'SELECT (SELECT last_event_id FROM rollup_state) >= (SELECT coalesce(max(id), 0) FROM events)')" != 1 ]; do sleep 1; done
load_s=$(( $(date +%s) - load_started ))
load_hwm=$(hwm_mb "$PID")
load_avg=$(cut -d' ' -f1-3 /proc/loadavg)
stop "$PID"
IFS='|' read -r n_accounts n_users n_events n_user_days n_feature_rows <<< "$(sql "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM users),
    (SELECT count(*) FROM events), (SELECT count(*) FROM user_days), (SELECT count(*) FROM user_day_features)")"
db_mb=$(du -sm "$DATA" --exclude=demo-input | cut -f1)

# 2. Indicator discovery + tiering, every segment.
echo "bellwether indicators x $RUNS..." >&2
ind_times=(); ind_rss=0
for i in $(seq 1 "$RUNS"); do
    read -r t rss <<< "$(timed "$work/indicators-$i.json" "$B" indicators --data-dir "$DATA" --as-of "$INDICATORS_AS_OF" --format json)"
    ind_times+=("$t"); [ "$rss" -gt "$ind_rss" ] && ind_rss=$rss
done
ind_median=$(median "${ind_times[@]}")
ind_avg=$(cut -d' ' -f1-3 /proc/loadavg)

# 3. Backtest.
echo "bellwether backtest x $RUNS..." >&2
bt_times=(); bt_rss=0
for i in $(seq 1 "$RUNS"); do
    read -r t rss <<< "$(timed "$work/backtest-$i.json" "$B" backtest --data-dir "$DATA" --as-of "$AS_OF" --horizon-days "$HORIZON" --format json)"
    bt_times+=("$t"); [ "$rss" -gt "$bt_rss" ] && bt_rss=$rss
    cmp -s "$work/backtest-1.json" "$work/backtest-$i.json" || echo "note: backtest run $i differs from run 1"
done
bt_median=$(median "${bt_times[@]}")
bt_avg=$(cut -d' ' -f1-3 /proc/loadavg)

# 4. The gradient-boosting baseline on the same database (fit + predict x RUNS inside).
echo "scikit-learn HistGradientBoostingClassifier..." >&2
read -r sk_wall sk_rss <<< "$(timed "$work/sklearn.out" python3 bench/health_sklearn.py "$DATA/bellwether.db" "$AS_OF" "$HORIZON" "$work/backtest-1.json" "$work/sklearn.json" "$RUNS")"
sk_avg=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp "$work/indicators-1.json" "$work/backtest-1.json" "$work/sklearn.json" "$OUT/"; fi

echo
echo "dataset: $n_accounts accounts, $n_users users, $n_events events; rollups $n_user_days user-days, $n_feature_rows user-day-feature rows; database $db_mb MB; load (generate + ingest + rollups, untimed) $load_s s (listening after $listen_s s), server VmHWM $load_hwm MB"
echo "load average after: loading $load_avg; indicators $ind_avg; backtest $bt_avg; scikit-learn $sk_avg (other work on the 2 cores skews the times; scikit-learn's OpenMP threads suffer most)"
if [ "$ACCOUNTS" -lt 5000 ]; then
    echo "note: $ACCOUNTS accounts, not the issue's 5,000: loading scales about linearly ($(python3 -c "print(f'{$n_events / $ACCOUNTS / 1000:.1f} k events, {$db_mb / $ACCOUNTS:.2f} MB and {$load_s / $ACCOUNTS:.2f} s of load per account')")), so 5,000 would be ~$(python3 -c "print(f'{$n_events * 5000 / $ACCOUNTS / 1e6:.0f} M events, {$db_mb * 5000 / $ACCOUNTS / 1024:.0f} GB and {$load_s * 5000 / $ACCOUNTS / 60:.0f} min of load')")"
fi
python3 - "$work" "$ind_median" "$ind_rss" "$bt_median" "$bt_rss" "$sk_wall" "$sk_rss" "$RUNS" "${ind_times[*]}" "${bt_times[*]}" <<'EOF'
import json, sys
work, ind_median, ind_rss, bt_median, bt_rss, sk_wall, sk_rss, runs, ind_times, bt_times = sys.argv[1:]
ind = json.load(open(f"{work}/indicators-1.json"))
bt = json.load(open(f"{work}/backtest-1.json"))
sk = json.load(open(f"{work}/sklearn.json"))
f = lambda x, d=3: "-" if x is None else f"{x:.{d}f}"
segments = {s["segment"]: s for s in bt["segments"]}
powers = {r["segment"]: (r["feature"], r["model_fallback"]) for r in ind if r["power_feature"]}
print(f"indicators --as-of: {len({r['segment'] for r in ind})} segments, {len(ind)} indicator rows; power features: "
      + ", ".join(f"{s} {p}{' (all-accounts model)' if fb else ''}" for s, (p, fb) in sorted(powers.items())))
m = bt["model"]
print(f"backtest model: {m['decided_renewals']} decided renewals (terms {m['data_from']} to {m['data_to']}); power features: "
      + ", ".join(f"{s} {p}" for s, p in sorted(m["power_features"].items())))
print(f"examples: train {sk['train']['decided']} decided ({sk['train']['renewed']} renewed) [bellwether: {m['decided_renewals']}], "
      f"test {sk['test']['decided']} ({sk['test']['renewed']} renewed) [bellwether: {segments['all']['decided']}]; "
      f"{sk['features']} features + {len(sk['segments'])} segment columns")
print(f"bellwether indicators (discovery + tiering, every segment): {ind_median} s (median of {runs}: {ind_times}), peak RSS {ind_rss} MB (target < 10 s: {'met' if float(ind_median) < 10 else 'not met'})")
print(f"bellwether backtest (model + scoring every account + AUCs): {bt_median} s (median of {runs}: {bt_times}), peak RSS {bt_rss} MB (target < 10 s: {'met' if float(bt_median) < 10 else 'not met'})")
print(f"scikit-learn {sk['sklearn']}: feature extraction from SQLite {f(sk['extract_s'], 2)} s, fit {f(sk['fit_s'], 3)} s + predict {f(sk['predict_s'], 3)} s = {f(sk['fit_predict_s'], 3)} s (median of {sk['runs']}, {sk['n_iter']} iterations); whole script {sk_wall} s, peak RSS {sk_rss} MB")
print()
print("| segment | decided (renewed) | bw auc_tier | bw auc_expected_renewal_rate | bw auc_health_score | bw auc_logins_per_user_week | GBM AUC (90 d) | GBM AUC (since 1st sub.) | raw power-feature uses AUC | segment base rate AUC |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name in ["all"] + sorted(s for s in segments if s != "all"):
    s, g = segments[name], sk["by_segment"].get(name, {})
    print(f"| {name} | {s['decided']} ({s['renewed']}) | {f(s['auc_tier'])} | {f(s['auc_expected_renewal_rate'])} | {f(s['auc_health_score'])} | "
          f"{f(s['auc_logins_per_user_week'])} | {f(g.get('auc_gbm_90d'))} | {f(g.get('auc_gbm_since'))} | {f(g.get('auc_power_feature_raw_90d'))} | {f(g.get('auc_segment_base_rate'))} |")
print()
# Issue 27's targets, in every segment with at least 30 decided renewals.
print("| segment | decided | AUC expected rate | AUC score | GBM (90 d) | top-decile lift | Brier skill (score) | calibration error | largest tier | targets |")
print("|---|---|---|---|---|---|---|---|---|---|")
for name in ["all"] + sorted(s for s in segments if s != "all"):
    s, g = segments[name], sk["by_segment"].get(name, {})
    er, sc, gbm = s.get("auc_expected_renewal_rate"), s.get("auc_health_score"), g.get("auc_gbm_90d")
    checks = []
    if s["decided"] >= 30:
        checks.append("score " + ("ok" if er is not None and sc is not None and sc >= er - 0.05 else "MISSED"))
        checks.append("calibration " + ("ok" if s.get("calibration_error") is not None and s["calibration_error"] <= 0.08 else "MISSED"))
        checks.append("tier share " + ("ok" if s.get("largest_tier_share") is not None and s["largest_tier_share"] < 0.9 else "MISSED"))
        checks.append("vs GBM " + ("ok" if er is not None and gbm is not None and er >= gbm - 0.03 else "MISSED"))
    print(f"| {name} | {s['decided']} | {f(er)} | {f(sc)} | {f(gbm)} | {f(s.get('top_decile_lift'), 2)} | {f(s.get('brier_skill_health_score'))} | "
          f"{f(s.get('calibration_error'))} | {f(s.get('largest_tier_share'), 2)} | {', '.join(checks) or 'under 30 decided'} |")
print()
a, g = segments["all"], sk["by_segment"]["all"]
for key, what in [("auc_gbm_90d", "GBM (90-day window)"), ("auc_gbm_since", "GBM (window cut at the first subscription, as bellwether scores)")]:
    for bw_key, bw_what in [("auc_expected_renewal_rate", "calibrated expected renewal rate (the target's reading)"), ("auc_tier", "4-level tier")]:
        if g[key] is None or a[bw_key] is None:
            continue
        d = g[key] - a[bw_key]
        print(f"overall: {what} {g[key]:.3f} - bellwether {bw_what} {a[bw_key]:.3f} = {d:+.3f}: |difference| <= 0.03 {'yes' if abs(d) <= 0.03 else 'no'}; "
              f"bellwether no more than 0.03 below {'yes' if d <= 0.03 else 'no'}")
print()
print("bellwether calibration (all): " + "; ".join(
    f"{c['tier']} {c['decided']} predicted {f(c['predicted_renewal_rate'], 2)} observed {f(c['observed_renewal_rate'], 2)}" for c in a["calibration"]))
EOF
