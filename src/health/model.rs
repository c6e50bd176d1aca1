//! A stored health model (the analysis of one run), the gate that promoted or rejected it,
//! and the settings health reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::HealthConfig;
use super::SegmentModel;
use crate::metrics::config::{CurrencyConfig, MetricsConfig};

/// Everything health needs from the config.
#[derive(Clone, Copy)]
pub struct Settings<'a> {
    pub metrics: &'a MetricsConfig,
    pub health: &'a HealthConfig,
    pub currency: &'a CurrencyConfig,
}

/// A stored model: the analysis of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    /// `promoted` (in force from `as_of` until a newer promoted one) or `rejected` (kept to
    /// show why: see `gate`). Models stored before the gate existed read as promoted.
    #[serde(default = "promoted")]
    pub status: String,
    pub id: i64,
    pub created_at: String,
    /// Renewals decided before this day trained it; tiers from it apply from this day on.
    pub as_of: String,
    pub reason: String,
    /// First and last day of the renewal terms it learned from.
    pub data_from: Option<String>,
    pub data_to: Option<String>,
    pub decided_renewals: usize,
    /// Subscriptions with a decided outcome ending before `as_of` when it was trained
    /// (whole terms or not), to notice new outcomes.
    #[serde(default)]
    pub subscriptions_decided: i64,
    pub segments: BTreeMap<String, SegmentModel>,
    /// The held-out comparison that promoted or rejected it (see [`gate`]).
    #[serde(default)]
    pub gate: Option<Gate>,
}

fn promoted() -> String {
    PROMOTED.to_string()
}

pub const PROMOTED: &str = "promoted";
pub const REJECTED: &str = "rejected";

/// A candidate model's test on held-out time: trained on the renewals decided before
/// `from`, it and the model in force (its power features and cut points, the rest learned
/// from the same renewals) score every account the day before `from`, against the renewals
/// decided from `from` until the candidate's `as_of`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gate {
    pub from: String,
    pub to: String,
    pub decided: usize,
    pub current_model_id: Option<i64>,
    /// Brier score of the health score (as a renewal probability) over the held-out renewals.
    pub brier_candidate: Option<f64>,
    pub brier_current: Option<f64>,
    pub auc_score_candidate: Option<f64>,
    pub auc_logins: Option<f64>,
    pub promoted: bool,
    pub reason: String,
}
