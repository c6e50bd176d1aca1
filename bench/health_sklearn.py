#!/usr/bin/env python3
"""The gradient-boosting baseline of bench/health.sh (issue 7). Prints numbers, asserts nothing.

Reproduces the setup of `bellwether backtest --as-of AS_OF --horizon-days H` from the same
SQLite database (read only, python sqlite3) and trains scikit-learn's
HistGradientBoostingClassifier (default parameters, random_state=0) on it:

  train: subscriptions with outcome renewed/churned ended before AS_OF whose usage window (the
         90 days ending with end_date, cut at the account's first subscription start) lies in
         the data; features: the account's uses of every feature in that window
         (user_day_features) x 30 / days, plus the account's segment one-hot; label: renewed.
  test:  subscriptions with outcome renewed/churned and AS_OF <= end_date < AS_OF + H days, of
         accounts whose first subscription started before AS_OF;
         features: the account's uses in the 90 days ending the day before AS_OF x 30 / 90
         ("90d", the primary reading), and, as bellwether scores, over the same window cut
         at the account's first subscription start when that is later ("since").

Also for diagnosis (no model): the AUC of each segment's renewal rate in train (what the segment
alone tells apart, the same for every account of a segment), and the AUC of the raw monthly uses of each segment's power
feature (taken from bellwether's backtest JSON) on the same test rows, i.e. what the tiers
bucket. Writes a JSON report to OUT and prints nothing else but progress to stderr.

Usage: health_sklearn.py DB AS_OF HORIZON_DAYS BACKTEST_JSON OUT_JSON [RUNS]
"""
import datetime
import json
import os
import resource
import sqlite3
import statistics
import sys
import time

import numpy as np
import sklearn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

EPOCH = 719163  # date(1970, 1, 1).toordinal(): day numbers count days since 1970-01-01
WINDOW = 90  # [health] usage_days default


def day_number(text):
    return datetime.date.fromisoformat(text).toordinal() - EPOCH


def auc(labels, scores):
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, scores))


def main():
    db, as_of_text, horizon, backtest_json, out_path = sys.argv[1:6]
    runs = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    as_of = day_number(as_of_text)
    horizon_end = as_of + int(horizon)
    scored = as_of - 1  # bellwether scores with the data through the day before AS_OF
    backtest = json.load(open(backtest_json))
    power = backtest["model"]["power_features"]

    started = time.monotonic()
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rollups = os.path.join(os.path.dirname(db), "rollups.db")  # the rollup tables' own file
    c.execute("ATTACH DATABASE ? AS rollups", (f"file:{rollups}?mode=ro",))
    data_start = c.execute("SELECT min(day) FROM user_days").fetchone()[0]
    segment_of = dict(c.execute("SELECT account_id, coalesce(segment, plan, 'unknown') FROM accounts"))
    since = {a: day_number(d) for a, d in c.execute("SELECT account_id, min(start_date) FROM subscriptions GROUP BY account_id") if d}
    subs = c.execute("SELECT account_id, start_date, end_date, outcome FROM subscriptions "
                     "WHERE outcome IN ('renewed', 'churned') AND end_date IS NOT NULL ORDER BY account_id, start_date").fetchall()
    usage = "SELECT feature, sum(uses) FROM user_day_features WHERE account_id = ? AND day BETWEEN ? AND ? GROUP BY feature"

    def monthly(account, first, last):
        days = max(last - first + 1, 1)
        return {f: u * 30.0 / days for f, u in c.execute(usage, (account, first, last))}

    train, test = [], []
    for account, start, end, outcome in subs:
        if account not in segment_of:
            continue
        first, last = day_number(start), day_number(end)
        renewed = outcome == "renewed"
        # The window bellwether learns from: the WINDOW days ending with the term's last
        # day, cut at the account's first subscription, inside the data.
        window_first = max(last - WINDOW + 1, since.get(account, last - WINDOW + 1))
        if window_first >= data_start and last < as_of and last >= window_first:
            train.append((account, renewed, monthly(account, window_first, last)))
        # Scored: accounts that were customers before AS_OF, as the backtest does.
        if as_of <= last < horizon_end and since.get(account, as_of) < as_of:
            lo = scored - WINDOW + 1
            lo_since = max(lo, since.get(account, lo))
            test.append((account, renewed, monthly(account, lo, scored), monthly(account, lo_since, scored)))
    extract_s = time.monotonic() - started

    features = sorted({f for _, _, m in train for f in m})
    segments = sorted(set(segment_of.values()))

    def matrix(rows, index):
        x = np.zeros((len(rows), len(features) + len(segments)))
        for i, row in enumerate(rows):
            uses = row[index]
            for j, f in enumerate(features):
                x[i, j] = uses.get(f, 0.0)
            x[i, len(features) + segments.index(segment_of[row[0]])] = 1.0
        return x

    x_train, y_train = matrix(train, 2), np.array([r[1] for r in train], dtype=int)
    x_test = {"90d": matrix(test, 2), "since": matrix(test, 3)}
    y_test = np.array([r[1] for r in test], dtype=int)

    fit_times, predict_times = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        model = HistGradientBoostingClassifier(random_state=0).fit(x_train, y_train)
        t1 = time.monotonic()
        probs = {k: model.predict_proba(x)[:, 1] for k, x in x_test.items()}
        t2 = time.monotonic()
        fit_times.append(t1 - t0)
        predict_times.append(t2 - t1)

    test_segments = np.array([segment_of[r[0]] for r in test])
    # Baseline without usage: each test row scored with its segment's renewal rate in train.
    seg_rate = {}
    for account, renewed, _ in train:
        n, k = seg_rate.get(segment_of[account], (0, 0))
        seg_rate[segment_of[account]] = (n + 1, k + renewed)
    overall_rate = float(y_train.mean()) if len(train) else 0.0
    base = np.array([seg_rate[s][1] / seg_rate[s][0] if s in seg_rate else overall_rate for s in test_segments])
    report_segments = {}
    for segment in ["all"] + sorted(set(test_segments)):
        mask = np.ones(len(test), dtype=bool) if segment == "all" else test_segments == segment
        p = power.get(segment) or power.get("all")
        entry = {"decided": int(mask.sum()), "renewed": int(y_test[mask].sum())}
        for k in x_test:
            entry[f"auc_gbm_{k}"] = auc(y_test[mask], probs[k][mask])
        # The power feature's raw monthly uses (each row with its own segment's power feature).
        raw = []
        for r, keep in zip(test, mask):
            if keep:
                own = power.get(segment_of[r[0]]) or power.get("all")
                raw.append(r[2].get(own, 0.0))
        entry["auc_segment_base_rate"] = auc(y_test[mask], base[mask])
        entry["power_feature"] = p if segment != "all" else "each segment's"
        entry["auc_power_feature_raw_90d"] = auc(y_test[mask], raw)
        report_segments[segment] = entry

    out = {
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "data_start": str(datetime.date.fromordinal(data_start + EPOCH)),
        "train": {"decided": len(train), "renewed": int(y_train.sum())},
        "test": {"decided": len(test), "renewed": int(y_test.sum())},
        "features": len(features),
        "segments": segments,
        "extract_s": extract_s,
        "fit_s": statistics.median(fit_times),
        "predict_s": statistics.median(predict_times),
        "fit_predict_s": statistics.median(f + p for f, p in zip(fit_times, predict_times)),
        "runs": runs,
        "n_iter": int(model.n_iter_),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "by_segment": report_segments,
    }
    json.dump(out, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main()
