//! The one integration-test binary: every test drives the real `bellwether` binary through
//! its public entry points (HTTP, CLI, the official Segment client libraries).

// Scenario tests drive a real server step by step, each step depending on the ones before;
// they read top to bottom, so their length is the scenario's (STYLE.md: over 100 lines, say why).
#![allow(clippy::too_many_lines)]

mod it {
    pub mod support;

    mod actions;
    mod backup;
    mod browser;
    mod clickhouse;
    mod config_cli;
    mod csm;
    mod dashboard;
    mod demo;
    mod durability;
    mod faults;
    mod health;
    mod hostile;
    mod ingest_http;
    mod listening;
    mod metrics;
    mod openapi;
    mod records;
    mod retention;
    mod segment_clients;
}
