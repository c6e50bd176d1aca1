//! The demo generator and `bellwether demo`: determinism, clean imports, and planted truth
//! recomputed independently from the generated files.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;

use chrono::{NaiveDate, TimeZone};
use serde_json::Value;

use super::support::*;

fn generate(out: &Path, args: &[&str]) {
    let output = command(out)
        .args([
            "generate",
            "--out",
            out.to_str().unwrap(),
            "--end-date",
            "2026-11-20",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "generate: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const FILES: &[&str] = &[
    "events.ndjson.gz",
    "accounts.csv",
    "subscriptions.csv",
    "tickets.csv",
    "survey_responses.csv",
    "suggestions.csv",
    "kpis.csv",
    "csms.csv",
    "truth.json",
    "bellwether.toml",
];

#[test]
fn the_same_seed_gives_byte_identical_output() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(
        a.path(),
        &["--seed", "7", "--accounts", "40", "--years", "2"],
    );
    generate(
        b.path(),
        &["--seed", "7", "--accounts", "40", "--years", "2"],
    );
    generate(
        c.path(),
        &["--seed", "8", "--accounts", "40", "--years", "2"],
    );
    for file in FILES {
        assert!(
            read(&a.path().join(file)) == read(&b.path().join(file)),
            "{file} differs between two runs with the same seed"
        );
    }
    assert!(
        read(&a.path().join("events.ndjson.gz")) != read(&c.path().join("events.ndjson.gz")),
        "another seed, other data"
    );
}

#[derive(serde::Deserialize)]
struct Batch {
    batch: Vec<Message>,
}

#[derive(serde::Deserialize)]
struct Message {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "groupId")]
    group_id: Option<String>,
    event: Option<String>,
    timestamp: String,
}

fn csv_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            headers
                .iter()
                .zip(r.unwrap().iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn generated_files_import_cleanly_and_outcomes_follow_the_planted_power_feature() {
    let out = tempfile::tempdir().unwrap();
    generate(
        out.path(),
        &["--seed", "11", "--accounts", "300", "--years", "3"],
    );
    let truth: Value = serde_json::from_slice(&read(&out.path().join("truth.json"))).unwrap();

    // Every CSV imports into a fresh data dir with the config written beside it.
    let data = tempfile::tempdir().unwrap();
    let config = out.path().join("bellwether.toml");
    for kind in [
        "csms",
        "accounts",
        "subscriptions",
        "tickets",
        "survey_responses",
        "suggestions",
        "kpis",
    ] {
        let file = out.path().join(format!("{kind}.csv"));
        let output = cli(
            data.path(),
            &[
                "--config",
                config.to_str().unwrap(),
                "import",
                kind,
                file.to_str().unwrap(),
            ],
        );
        assert!(
            output.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    // Recompute each decided term's monthly power-feature uses from the events.
    let accounts: HashMap<String, (String, chrono_tz::Tz)> =
        csv_rows(&out.path().join("accounts.csv"))
            .into_iter()
            .map(|r| {
                (
                    r["account_id"].clone(),
                    (r["segment"].clone(), r["timezone"].parse().unwrap()),
                )
            })
            .collect();
    let power: HashMap<String, String> = truth["segments"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(segment, s)| {
            (
                segment.clone(),
                s["power_feature"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut member_of: HashMap<String, String> = HashMap::new();
    let mut uses: HashMap<String, Vec<NaiveDate>> = HashMap::new();
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(out.path().join("events.ndjson.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    for line in text.lines() {
        let batch: Batch = serde_json::from_str(line).unwrap();
        for m in batch.batch {
            if m.kind == "group" {
                member_of.insert(m.user_id.clone().unwrap(), m.group_id.clone().unwrap());
            }
            let (Some(user), Some(event)) = (m.user_id, m.event) else {
                continue;
            };
            let Some(account) = member_of.get(&user) else {
                continue;
            };
            let (segment, tz) = &accounts[account];
            if power[segment] == event {
                let utc = chrono::DateTime::parse_from_rfc3339(&m.timestamp)
                    .unwrap()
                    .with_timezone(&chrono::Utc);
                uses.entry(account.clone())
                    .or_default()
                    .push(tz.from_utc_datetime(&utc.naive_utc()).date_naive());
            }
        }
    }
    let cuts = [1.0, 6.0, 11.0, 16.0];
    let mut observed: BTreeMap<(String, usize), (u64, u64)> = BTreeMap::new();
    for sub in csv_rows(&out.path().join("subscriptions.csv")) {
        if sub["product"] != "platform"
            || !(sub["outcome"] == "renewed" || sub["outcome"] == "churned")
        {
            continue;
        }
        let start = NaiveDate::parse_from_str(&sub["start_date"], "%Y-%m-%d").unwrap();
        let end = NaiveDate::parse_from_str(&sub["end_date"], "%Y-%m-%d").unwrap();
        let count = uses
            .get(&sub["account_id"])
            .map(|d| d.iter().filter(|d| **d >= start && **d <= end).count())
            .unwrap_or(0);
        let monthly = count as f64 * 30.0 / ((end - start).num_days() + 1) as f64;
        let bucket = cuts.iter().filter(|c| monthly.floor() >= **c).count();
        let entry = observed
            .entry((accounts[&sub["account_id"]].0.clone(), bucket))
            .or_default();
        entry.0 += 1;
        entry.1 += u64::from(sub["outcome"] == "renewed");
    }
    let mut checked = 0;
    for (segment, s) in truth["segments"].as_object().unwrap() {
        for (bucket, b) in s["buckets"].as_array().unwrap().iter().enumerate() {
            let (n, renewed) = observed
                .get(&(segment.clone(), bucket))
                .copied()
                .unwrap_or((0, 0));
            assert_eq!(
                (n, renewed),
                (
                    b["decided"].as_u64().unwrap(),
                    b["renewed"].as_u64().unwrap()
                ),
                "{segment} bucket {bucket}: truth.json counts match the files"
            );
            if n >= 40 {
                let p = b["renewal_probability"].as_f64().unwrap();
                let rate = renewed as f64 / n as f64;
                let tolerance = 3.0 * (p * (1.0 - p) / n as f64).sqrt() + 0.01;
                assert!(
                    (rate - p).abs() <= tolerance,
                    "{segment} bucket {bucket}: observed {rate:.3} over {n}, planted {p}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 4,
        "enough buckets with 40+ decisions to check ({checked})"
    );
    // More power usage renews more often, in the segment with the most decisions.
    let starter: Vec<f64> = (0..5)
        .map(|b| {
            observed
                .get(&("starter".into(), b))
                .map(|(n, r)| *r as f64 / *n as f64)
                .unwrap_or(0.0)
        })
        .collect();
    assert!(
        starter[0] < starter[4],
        "starter: 0 uses {:.2} vs 16+ {:.2}",
        starter[0],
        starter[4]
    );
}

#[test]
fn demo_loads_once_serves_and_reuses_its_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let start_demo = || {
        let mut child = command(data.path())
            .args([
                "demo",
                "--accounts",
                "30",
                "--years",
                "1",
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("bellwether demo listening on ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        (child, base)
    };
    let (mut child, base) = start_demo();
    let marker: Value = serde_json::from_slice(&read(&data.path().join("demo.json"))).unwrap();
    let token = marker["api_token"].as_str().unwrap();
    let server = Server::attach(&base);
    let accounts = get(&server, "/api/v1/accounts?limit=1000", Some(token)).body;
    assert_eq!(accounts["items"].as_array().unwrap().len(), 30);
    let loaded = marker["events"].as_f64().unwrap();
    assert!(loaded > 1000.0, "{loaded} events");
    assert_eq!(
        counter(&server, "bellwether_ingest_accepted_total"),
        loaded,
        "every generated event went through ingest"
    );
    // The demo write key takes new events.
    assert_eq!(
        post(
            &server,
            "/v1/track",
            Some("demo-write-key"),
            r#"{"userId":"u","event":"Tried It"}"#
        )
        .status,
        200
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, base) = start_demo();
    let server = Server::attach(&base);
    assert_eq!(
        counter(&server, "bellwether_ingest_accepted_total"),
        0.0,
        "nothing generated or loaded again"
    );
    assert_eq!(
        get(&server, "/api/v1/accounts?limit=1000", Some(token)).body["items"]
            .as_array()
            .unwrap()
            .len(),
        30
    );
    child.kill().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    assert!(stderr.contains("reusing the demo data"), "{stderr}");
}
