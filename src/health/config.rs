//! `[health]`: the health model's settings, owned by health (the config file layer
//! composes them, `crate::config`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The health model (`[health]`): docs/metrics.md, Health.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Indicators backed by fewer renewals or churns than this carry a warning.
    pub min_outcomes: u64,
    /// A segment with fewer decided renewals gets tier `unknown` (with the reason); from
    /// this many with both outcomes it ranks its own features; with one outcome only it
    /// takes the pooled ranking's best feature that it uses.
    pub min_decided: u64,
    /// Automatic cut points are merged until every usage bucket holds at least this many
    /// decided renewals of the segment (configured `cut_points` are kept as given).
    pub min_bucket_decided: u64,
    /// Monthly power-feature uses where buckets start: `"auto"` (from the data) or a list
    /// such as `[1, 6, 11, 16]`.
    #[serde(deserialize_with = "cut_points")]
    pub cut_points: Option<Vec<f64>>,
    /// Segment -> power feature, overriding the top of the ranking.
    pub power_features: BTreeMap<String, String>,
    /// Measure -> weight of a hand-set 0-100 health score (a weighted mean of points), for
    /// every segment. Empty (the default): the score is learned from decided renewals.
    pub score_weights: BTreeMap<String, f64>,
    /// Segment -> measure -> weight: a hand-set score for that segment alone.
    pub segment_score_weights: BTreeMap<String, BTreeMap<String, f64>>,
    /// Score bands: `poor` below the first, `fair` below the second, `good` below the
    /// third, `strong` from it (a learned score is a renewal estimate in percent).
    pub score_bands: [f64; 3],
    /// Recalibrate when the newest model is older than this many days.
    pub recalibrate_every_days: u32,
    /// Monthly power-feature uses are counted over this many days: before `as_of` for a
    /// live score, before the decision day for a decided renewal the model learns from.
    pub usage_days: u32,
    /// An account's tier changes only once its new tier has held this many days.
    pub tier_hold_days: u32,
    /// A recalibrated model is promoted only if, trained on the renewals decided before the
    /// last `holdout_days`, it is not worse on those held-out renewals than the model in
    /// force and beats the logins baseline.
    pub holdout_days: u32,
    /// How many days of daily score and tier history to compute on first start.
    pub history_days: u32,
    /// Whether this process runs the background health thread (recalibration on schedule,
    /// the daily history and tier changes). Unset: yes on the embedded store, no on
    /// ClickHouse, where one node should (its writes are idempotent, but each pass computes
    /// a full health snapshot).
    pub background: Option<bool>,
}

fn cut_points<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<f64>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Cuts {
        Word(String),
        List(Vec<f64>),
    }
    match Cuts::deserialize(deserializer)? {
        Cuts::Word(word) if word == "auto" => Ok(None),
        Cuts::Word(word) => Err(serde::de::Error::custom(format!(
            "expected \"auto\" or a list of numbers, got {word:?}"
        ))),
        Cuts::List(list) => Ok(Some(list)),
    }
}

/// Measures a health score can weigh, besides the numeric metrics.
pub const SCORE_MEASURES_EXTRA: &[&str] = &["tier", "expected_renewal_rate"];

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            min_outcomes: 20,
            min_decided: 10,
            min_bucket_decided: 5,
            cut_points: None,
            power_features: BTreeMap::new(),
            score_weights: BTreeMap::new(),
            segment_score_weights: BTreeMap::new(),
            score_bands: [60.0, 80.0, 90.0],
            recalibrate_every_days: 91,
            usage_days: 90,
            tier_hold_days: 14,
            holdout_days: 91,
            history_days: 180,
            background: None,
        }
    }
}

fn check_weights(key: &str, weights: &BTreeMap<String, f64>) -> Result<(), (String, String)> {
    for (measure, weight) in weights {
        let known = crate::metrics::COLUMNS.contains(&measure.as_str())
            && crate::metrics::is_numeric(measure)
            || SCORE_MEASURES_EXTRA.contains(&measure.as_str());
        if !known {
            return Err((
                format!("{key}.{measure}"),
                "not a numeric metric, `tier` or `expected_renewal_rate`".into(),
            ));
        }
        if !weight.is_finite() || *weight < 0.0 {
            return Err((
                format!("{key}.{measure}"),
                format!("a weight must be a non-negative number, got {weight}"),
            ));
        }
    }
    if weights.values().sum::<f64>() <= 0.0 {
        return Err((key.into(), "at least one weight must be positive".into()));
    }
    Ok(())
}

impl HealthConfig {
    /// The hand-set score weights of a segment: its own table if configured, else
    /// `score_weights` if set; `None`: the score is learned.
    pub fn weights_for(&self, segment: &str) -> Option<&BTreeMap<String, f64>> {
        self.segment_score_weights
            .get(segment)
            .or((!self.score_weights.is_empty()).then_some(&self.score_weights))
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        if let Some(cuts) = &self.cut_points {
            if cuts.is_empty()
                || cuts.len() > 10
                || cuts.iter().any(|c| !c.is_finite() || *c <= 0.0)
                || cuts.windows(2).any(|w| w[0] >= w[1])
            {
                return Err((
                    "cut_points".into(),
                    "must be \"auto\" or 1 to 10 increasing positive numbers".into(),
                ));
            }
        }
        if !self.score_weights.is_empty() {
            check_weights("score_weights", &self.score_weights)?;
        }
        for (segment, weights) in &self.segment_score_weights {
            check_weights(&format!("segment_score_weights.{segment}"), weights)?;
        }
        let b = self.score_bands;
        if !(0.0 <= b[0] && b[0] <= b[1] && b[1] <= b[2] && b[2] <= 100.0) {
            return Err((
                "score_bands".into(),
                "three increasing numbers from 0 to 100".into(),
            ));
        }
        if !(1..=3660).contains(&self.recalibrate_every_days) {
            return Err((
                "recalibrate_every_days".into(),
                format!("must be 1 to 3660, got {}", self.recalibrate_every_days),
            ));
        }
        if !(7..=730).contains(&self.usage_days) {
            return Err((
                "usage_days".into(),
                format!("must be 7 to 730, got {}", self.usage_days),
            ));
        }
        if !(1..=10_000).contains(&self.min_decided) {
            return Err((
                "min_decided".into(),
                format!("must be 1 to 10000, got {}", self.min_decided),
            ));
        }
        if self.min_bucket_decided > 10_000 {
            return Err((
                "min_bucket_decided".into(),
                format!("must be at most 10000, got {}", self.min_bucket_decided),
            ));
        }
        if !(1..=365).contains(&self.tier_hold_days) {
            return Err((
                "tier_hold_days".into(),
                format!("must be 1 to 365, got {}", self.tier_hold_days),
            ));
        }
        if !(7..=730).contains(&self.holdout_days) {
            return Err((
                "holdout_days".into(),
                format!("must be 7 to 730, got {}", self.holdout_days),
            ));
        }
        if self.history_days > 3660 {
            return Err((
                "history_days".into(),
                format!("must be at most 3660, got {}", self.history_days),
            ));
        }
        Ok(())
    }
}
