//! bellwether: self-hosted customer-success analytics.
//!
//! Modules in data-flow order (see ARCHITECTURE.md): configuration and limits, then
//! ingest -> store, then the web and command-line surfaces.

pub mod config;
pub mod limits;
pub mod telemetry;

pub mod records;

pub mod ingest;
pub mod store;
pub mod metrics;
pub mod health;
pub mod actions;
pub mod listening;
pub mod share;

pub mod web;
pub mod demo;
pub mod cli;
