//! How well a model's health ranked and predicted a set of decided renewals: AUCs, Brier
//! scores, top-decile lift and calibration per tier. Pure: the decisions come scored.

use serde_json::{json, Value};

use crate::health;
use crate::health::model::Assessment;

/// One decided renewal of a backtest with the health its account had before it.
pub struct Decision {
    pub segment: String,
    pub renewed: bool,
    /// ARR of the decided subscription, in the report currency.
    pub arr: f64,
    pub health: Assessment,
    pub logins: Option<f64>,
}

impl Decision {
    /// The renewal probability the health gives: a learned score / 100, else the expected
    /// renewal rate.
    fn probability(&self) -> Option<f64> {
        let learned = matches!(
            self.health.score_weights.as_deref(),
            Some("learned" | "pooled")
        );
        match self.health.health_score {
            Some(score) if learned => Some(score / 100.0),
            _ => self.health.expected_renewal_rate,
        }
    }
}

/// What a backtest reports of a group of decisions.
#[derive(Debug, Default)]
pub struct Quality {
    pub auc_expected_rate: Option<f64>,
    pub auc_score: Option<f64>,
    pub auc_tier: Option<f64>,
    pub auc_logins: Option<f64>,
    pub brier_score: Option<f64>,
    pub brier_expected_rate: Option<f64>,
    pub brier_base: Option<f64>,
    pub top_decile_lift: Option<f64>,
}

impl Quality {
    pub fn of(items: &[&Decision]) -> Quality {
        let auc_of = |f: &dyn Fn(&Decision) -> Option<f64>| {
            let points: Vec<(f64, bool, f64)> = items
                .iter()
                .map(|d| (f(d).unwrap_or(0.0), d.renewed, 1.0))
                .collect();
            health::auc(&points)
        };
        let tier_index = |d: &Decision| {
            d.health
                .tier
                .as_deref()
                .and_then(|t| health::TIERS.iter().position(|x| *x == t))
                .map(|i| i as f64)
        };
        let brier = |f: &dyn Fn(&Decision) -> Option<f64>| {
            let errors: Vec<f64> = items
                .iter()
                .filter_map(|d| f(d).map(|p| (p - if d.renewed { 1.0 } else { 0.0 }).powi(2)))
                .collect();
            (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64)
        };
        let n = items.len();
        let base = (n > 0).then(|| items.iter().filter(|d| d.renewed).count() as f64 / n as f64);
        // Top-decile lift: the churn rate of the tenth with the lowest renewal probability
        // over the churn rate of all.
        let mut ranked: Vec<&Decision> = items
            .iter()
            .copied()
            .filter(|d| d.probability().is_some())
            .collect();
        ranked.sort_by(|a, b| {
            a.probability()
                .unwrap_or(0.0)
                .total_cmp(&b.probability().unwrap_or(0.0))
        });
        let decile = ranked.len().div_ceil(10);
        let churn = |group: &[&Decision]| {
            group.iter().filter(|d| !d.renewed).count() as f64 / group.len().max(1) as f64
        };
        let overall_churn = churn(&ranked);
        Quality {
            auc_expected_rate: auc_of(&|d| d.health.expected_renewal_rate),
            auc_score: auc_of(&|d| d.health.health_score),
            auc_tier: auc_of(&tier_index),
            auc_logins: auc_of(&|d| d.logins),
            brier_score: brier(&Decision::probability),
            brier_expected_rate: brier(&|d| d.health.expected_renewal_rate),
            brier_base: base.map(|p| p * (1.0 - p)),
            top_decile_lift: (decile > 0 && overall_churn > 0.0)
                .then(|| churn(&ranked[..decile]) / overall_churn),
        }
    }
}

/// The calibration of a group's tiers: per tier (and `unknown`) the decisions, the mean
/// predicted rate, the observed rate with its 95% (Jeffreys) interval; and the
/// decision-weighted mean |predicted - observed| over tiers with a prediction.
pub fn calibration(items: &[&Decision]) -> (Vec<Value>, Option<f64>, Option<f64>) {
    let (mut error, mut weight) = (0.0, 0.0);
    let mut largest = 0usize;
    let tiers: Vec<Value> = health::TIERS
        .iter()
        .chain(std::iter::once(&health::UNKNOWN))
        .map(|tier| {
            let inside: Vec<&Decision> = items.iter().copied().filter(|d| d.health.tier.as_deref() == Some(*tier)).collect();
            let n = inside.len();
            largest = largest.max(n);
            let renewed = inside.iter().filter(|d| d.renewed).count();
            let observed = (n > 0).then(|| renewed as f64 / n as f64);
            let rates: Vec<f64> = inside.iter().filter_map(|d| d.health.expected_renewal_rate).collect();
            let predicted = (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64);
            if let (Some(p), Some(o)) = (predicted, observed) {
                error += n as f64 * (p - o).abs();
                weight += n as f64;
            }
            let interval = (n > 0).then(|| health::beta_interval(renewed as f64 + 0.5, (n - renewed) as f64 + 0.5));
            json!({"tier": tier, "decided": n, "predicted_renewal_rate": predicted, "observed_renewal_rate": observed,
                   "observed_low": interval.map(|i| i.0), "observed_high": interval.map(|i| i.1)})
        })
        .collect();
    let share = (!items.is_empty()).then(|| largest as f64 / items.len() as f64);
    (tiers, (weight > 0.0).then(|| error / weight), share)
}
