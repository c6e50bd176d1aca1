//! Load generator for bench/: sends Segment track messages (single calls or batches) with
//! unique messageIds from many keep-alive connections, closed-loop (as fast as answered)
//! or open-loop at a fixed total rate. Latency in open loop is measured from each
//! request's scheduled send time, so a stalled server cannot hide its queueing delay.
//! Prints one JSON line: events_per_sec, requests, errors, p50_ms, p99_ms, max_ms.
//! With `--file events.ndjson.gz` (what `bellwether generate` writes: one batch body per
//! line) it sends those batches instead, each once, retrying one that is not answered 200
//! (a full queue) until it is, so the whole file lands.

use std::time::{Duration, Instant};

struct Args {
    url: String,
    key: String,
    batch: usize,
    connections: usize,
    seconds: f64,
    rate_events_per_sec: f64,
    total_events: u64,
    file: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        key: "bench-key".into(),
        batch: 100,
        connections: 32,
        seconds: 10.0,
        rate_events_per_sec: 0.0,
        total_events: u64::MAX,
        file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = value,
            "--key" => args.key = value,
            "--batch" => args.batch = value.parse().expect("--batch"),
            "--connections" => args.connections = value.parse().expect("--connections"),
            "--seconds" => args.seconds = value.parse().expect("--seconds"),
            "--rate" => args.rate_events_per_sec = value.parse().expect("--rate"),
            "--total-events" => args.total_events = value.parse().expect("--total-events"),
            "--file" => args.file = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!args.url.is_empty(), "--url is required");
    args
}

fn message(run: u64, thread: usize, n: u64) -> String {
    let user = n % 5_000;
    format!(
        r#"{{"type":"track","userId":"user-{user}","event":"Feature {f}","messageId":"{run}-{thread}-{n}","timestamp":"2026-11-01T10:00:00.000Z","properties":{{"feature":"reports","n":{n}}},"context":{{"groupId":"acct-{a}","library":{{"name":"loadgen","version":"1"}}}}}}"#,
        f = n % 20,
        a = user % 300
    )
}

/// POSTs one body; true on a 200. The response body is read to its end: ureq returns a
/// connection to its pool only then, so every request after the first reuses its
/// keep-alive connection (a dropped body would make each request open a new one).
fn post(agent: &ureq::Agent, url: &str, auth: &str, body: &[u8]) -> bool {
    match agent
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .send(body)
    {
        Ok(mut response) => response.body_mut().read_to_vec().is_ok() && response.status() == 200,
        Err(_) => false,
    }
}

/// Sends every line of a gzipped batch file from `connections` threads; prints the summary.
fn send_file(args: &Args, path: &str, auth: &str) {
    use std::io::BufRead;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let lines =
        std::sync::Mutex::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)).lines());
    let url = format!("{}/v1/batch", args.url);
    let start = Instant::now();
    let results: Vec<(u64, u64, u64, Vec<u64>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.connections)
            .map(|_| {
                let (lines, url) = (&lines, &url);
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let (mut events, mut requests, mut retries, mut latencies_us) =
                        (0_u64, 0_u64, 0_u64, Vec::new());
                    loop {
                        let Some(line) = lines.lock().expect("lines").next() else {
                            break;
                        };
                        let line = line.expect("readable file");
                        if line.trim().is_empty() {
                            continue;
                        }
                        loop {
                            let sent = Instant::now();
                            let ok = post(&agent, url, auth, line.as_bytes());
                            latencies_us.push(sent.elapsed().as_micros() as u64);
                            requests += 1;
                            if ok {
                                break;
                            }
                            retries += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        events += line.matches("\"messageId\"").count() as u64;
                    }
                    (events, requests, retries, latencies_us)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("send thread"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let (events, requests, retries) = results
        .iter()
        .fold((0, 0, 0), |(e, r, x), t| (e + t.0, r + t.1, x + t.2));
    let mut latencies: Vec<u64> = results.into_iter().flat_map(|t| t.3).collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        r#"{{"events_per_sec":{:.0},"events":{events},"requests":{requests},"errors":{retries},"p50_ms":{:.2},"p99_ms":{:.2},"max_ms":{:.2},"seconds":{elapsed:.1}}}"#,
        events as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

// Over 100 lines: A benchmark tool: its flags and its three load modes (closed loop, open loop, file) in one readable place.
#[allow(clippy::too_many_lines)]
fn main() {
    let args = parse_args();
    let run: u64 = rand::random::<u32>() as u64;
    let auth = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", args.key))
        )
    };
    if let Some(file) = &args.file {
        send_file(&args, file, &auth);
        return;
    }
    let (path, per_request) = if args.batch <= 1 {
        ("/v1/track", 1)
    } else {
        ("/v1/batch", args.batch)
    };
    let interval = if args.rate_events_per_sec > 0.0 {
        Some(Duration::from_secs_f64(
            per_request as f64 * args.connections as f64 / args.rate_events_per_sec,
        ))
    } else {
        None
    };
    let per_thread_events = args.total_events / args.connections as u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let threads: Vec<_> = (0..args.connections)
        .map(|thread| {
            let url = format!("{}{}", args.url, path);
            let auth = auth.clone();
            let connections = args.connections as f64;
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut latencies_us = Vec::new();
                let (mut events, mut errors, mut n) = (0_u64, 0_u64, 0_u64);
                let offset = interval
                    .map(|i| i.mul_f64(thread as f64 / connections))
                    .unwrap_or_default();
                let mut scheduled = start + offset;
                while Instant::now() < deadline && events < per_thread_events {
                    if interval.is_some() {
                        let now = Instant::now();
                        if scheduled > now {
                            std::thread::sleep(scheduled - now);
                        }
                    } else {
                        scheduled = Instant::now();
                    }
                    let body = if per_request == 1 {
                        n += 1;
                        message(run, thread, n)
                    } else {
                        let items: Vec<String> = (0..per_request)
                            .map(|_| {
                                n += 1;
                                message(run, thread, n)
                            })
                            .collect();
                        format!(r#"{{"batch":[{}]}}"#, items.join(","))
                    };
                    let ok = post(&agent, &url, &auth, body.as_bytes());
                    latencies_us.push(scheduled.elapsed().as_micros() as u64);
                    if ok {
                        events += per_request as u64;
                    } else {
                        errors += 1;
                    }
                    if let Some(interval) = interval {
                        scheduled += interval;
                    }
                }
                (events, errors, latencies_us)
            })
        })
        .collect();
    let (mut events, mut errors, mut latencies) = (0_u64, 0_u64, Vec::new());
    for t in threads {
        let (e, err, l) = t.join().expect("load thread");
        events += e;
        errors += err;
        latencies.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        r#"{{"events_per_sec":{:.0},"events":{events},"requests":{},"errors":{errors},"p50_ms":{:.2},"p99_ms":{:.2},"max_ms":{:.2},"seconds":{elapsed:.1}}}"#,
        events as f64 / elapsed,
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
