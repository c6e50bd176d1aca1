//! The one integration-test binary: every test drives the real `bellwether` binary through
//! its public entry points (HTTP, CLI, the official Segment client libraries).

mod it {
    pub mod support;

    mod actions;
    mod backup;
    mod browser;
    mod clickhouse;
    mod config_cli;
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
