//! A stored health model (the analysis of one run), the gate that promoted or rejected it,
//! and the settings health reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::HealthConfig;
use super::score::Component;
use super::{SegmentModel, Standing};
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

/// One account's health on one day under a model: its tier from the power feature's use,
/// the expected renewal rate of that tier, and the score with its breakdown. What the API
/// shows (as JSON, in this field order) and the daily history keeps.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Assessment {
    pub account_id: String,
    pub segment: String,
    pub model_id: i64,
    pub engagement_score: Option<f64>,
    /// True when the segment's feature ranking is not its own; null with no segment model.
    pub model_fallback: Option<bool>,
    pub model_standing: Option<Standing>,
    pub model_note: Option<String>,
    pub power_feature: Option<String>,
    pub power_feature_monthly_uses: Option<f64>,
    /// The held tier (see `history::apply_held`); `usage_tier` is the day's own.
    pub tier: Option<String>,
    pub usage_tier: Option<String>,
    pub expected_renewal_rate: Option<f64>,
    /// The score's usage measures from the window's feature uses, when they were read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_monthly_uses: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_features_used: Option<f64>,
    pub health_score: Option<f64>,
    pub health_band: Option<String>,
    /// `learned`, `pooled` or `config`: where the score's weights came from.
    pub score_weights: Option<String>,
    pub components: Vec<Component>,
}
