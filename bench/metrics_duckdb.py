#!/usr/bin/env python3
"""The DuckDB side of bench/metrics.sh (issue 6).

  metrics_duckdb.py export SQLITE_DB DUCKDB_FILE
      Copies, untimed, the tables bench/metrics_reference.sql reads from bellwether's SQLite
      database into DuckDB native tables (through CSV files next to DUCKDB_FILE, deleted after).

  metrics_duckdb.py query DUCKDB_FILE SQL_FILE AS_OF RUNS BELLWETHER_CSV SUMMARY_JSON
      Runs the reference query RUNS times (each: execute and fetch every row), prints each
      time, then compares the last result with bellwether's export CSV cell by cell (integers
      exactly, floats with relative tolerance 1e-9, an empty CSV cell is NULL) and prints how
      many accounts and cells differ, per column, with examples. Writes the numbers to
      SUMMARY_JSON. Asserts nothing.

Only the Python standard library and the `duckdb` package are used.
"""

import csv
import json
import math
import os
import resource
import sqlite3
import statistics
import sys
import time

import duckdb

NULL = "\\N"

# DuckDB table -> (SQLite query, DuckDB column types)
TABLES = {
    "events": (
        "SELECT id, type, user_id, anonymous_id, group_id, event, timestamp_ms FROM events",
        {"id": "BIGINT", "type": "VARCHAR", "user_id": "VARCHAR", "anonymous_id": "VARCHAR",
         "group_id": "VARCHAR", "event": "VARCHAR", "timestamp_ms": "BIGINT"},
    ),
    "memberships": (
        "SELECT user_id, anonymous_id, account_id, timestamp_ms, event_id FROM memberships",
        {"user_id": "VARCHAR", "anonymous_id": "VARCHAR", "account_id": "VARCHAR",
         "timestamp_ms": "BIGINT", "event_id": "BIGINT"},
    ),
    "identity_links": (
        "SELECT previous_id, user_id, timestamp_ms, event_id FROM identity_links",
        {"previous_id": "VARCHAR", "user_id": "VARCHAR", "timestamp_ms": "BIGINT", "event_id": "BIGINT"},
    ),
    "accounts": (
        "SELECT account_id, segment, plan, timezone, parent_id FROM accounts",
        {"account_id": "VARCHAR", "segment": "VARCHAR", "plan": "VARCHAR", "timezone": "VARCHAR",
         "parent_id": "VARCHAR"},
    ),
    "subscriptions": (
        "SELECT account_id, seats, start_date, end_date FROM subscriptions",
        {"account_id": "VARCHAR", "seats": "BIGINT", "start_date": "DATE", "end_date": "DATE"},
    ),
}

COLUMNS = [
    "account_id", "active_days_14d", "active_minutes_14d", "active_users_14d", "active_users_30d",
    "dau", "wau", "mau", "logins_per_user_week", "seats", "license_utilization",
    "features_used_30d", "transactions_30d", "education_events_30d", "user_adoption_growth",
]


def export(sqlite_path, duck_path):
    started = time.monotonic()
    if os.path.exists(duck_path):
        os.remove(duck_path)
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    con = duckdb.connect(duck_path)
    for table, (query, types) in TABLES.items():
        path = f"{duck_path}.{table}.csv"
        rows = 0
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            cursor = src.execute(query)
            while True:
                chunk = cursor.fetchmany(100_000)
                if not chunk:
                    break
                out.writerows([NULL if v is None else v for v in row] for row in chunk)
                rows += len(chunk)
        con.execute(
            f"CREATE TABLE {table} AS SELECT * FROM read_csv(?, header = false, nullstr = ?, quote = '\"', escape = '\"', columns = ?)",
            [path, NULL, types],
        )
        os.remove(path)
        print(f"  exported {rows:>9} {table}", file=sys.stderr)
    con.execute("CHECKPOINT")
    con.close()
    print(f"  export to DuckDB took {time.monotonic() - started:.1f} s", file=sys.stderr)


def parse_cell(text):
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    a, b = float(a), float(b)
    return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)


def query(duck_path, sql_path, as_of, runs, bellwether_csv, summary_path):
    sql = open(sql_path).read()
    con = duckdb.connect(duck_path, read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    times = []
    result = None
    for run in range(runs):
        started = time.monotonic()
        result = con.execute(sql, {"as_of": as_of}).fetchall()
        times.append(time.monotonic() - started)
        print(f"  duckdb run {run + 1}: {times[-1]:.3f} s ({len(result)} rows)", file=sys.stderr)
    names = [d[0] for d in con.description]
    assert names == COLUMNS, names
    duck = {row[0]: row for row in result}

    with open(bellwether_csv, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        index = [header.index(c) for c in COLUMNS]
        bw = {}
        for row in reader:
            cells = [row[i] for i in index]
            bw[cells[0]] = [cells[0]] + [parse_cell(c) for c in cells[1:]]

    only_bw = sorted(set(bw) - set(duck))
    only_duck = sorted(set(duck) - set(bw))
    per_column = {c: 0 for c in COLUMNS[1:]}
    examples = []
    accounts_differing = 0
    for account in sorted(set(bw) & set(duck)):
        differs = False
        for i, column in enumerate(COLUMNS[1:], start=1):
            if not same(bw[account][i], duck[account][i]):
                per_column[column] += 1
                differs = True
                if len(examples) < 10:
                    examples.append((account, column, bw[account][i], duck[account][i]))
        accounts_differing += differs
    cells = sum(per_column.values())
    compared = len(set(bw) & set(duck))
    print(
        f"cross-check: {compared} accounts x {len(COLUMNS) - 1} columns compared; "
        f"{accounts_differing} accounts and {cells} cells differ; "
        f"{len(only_bw)} accounts only in bellwether's CSV, {len(only_duck)} only in DuckDB's result"
    )
    for column, n in per_column.items():
        if n:
            print(f"  {column}: {n} accounts differ")
    for account, column, b, d in examples:
        print(f"  e.g. {account} {column}: bellwether {b!r}, duckdb {d!r}")
    for account in only_bw[:5]:
        print(f"  only in bellwether: {account}")
    for account in only_duck[:5]:
        print(f"  only in duckdb: {account}")

    summary = {
        "times_s": times,
        "median_s": statistics.median(times),
        "best_s": min(times),
        "threads": threads,
        "rows": len(result),
        "accounts_compared": compared,
        "accounts_differing": accounts_differing,
        "cells_differing": cells,
        "per_column": per_column,
        "only_bellwether": len(only_bw),
        "only_duckdb": len(only_duck),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    with open(summary_path, "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "export" and len(sys.argv) == 4:
        export(sys.argv[2], sys.argv[3])
    elif command == "query" and len(sys.argv) == 8:
        query(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6], sys.argv[7])
    else:
        sys.exit(__doc__)
