//! `[metrics]` and `[currency]`: everything docs/metrics.md leaves open, owned by the
//! metrics (the config file layer composes them, `crate::config`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::limits;

/// ARR keeps its own currency; reports convert it into `report` with `rates`.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrencyConfig {
    /// ISO 4217 code money is reported in.
    pub report: String,
    /// Value of one unit of each other currency in the report currency (`EUR = 1.08`).
    pub rates: BTreeMap<String, f64>,
}

impl Default for CurrencyConfig {
    fn default() -> Self {
        CurrencyConfig {
            report: "USD".into(),
            rates: BTreeMap::new(),
        }
    }
}

impl CurrencyConfig {
    /// An amount in `currency` converted to the report currency. A missing rate is an
    /// error, never a silent 1.0.
    pub fn to_report(&self, amount: f64, currency: &str) -> Result<f64, String> {
        if currency == self.report {
            return Ok(amount);
        }
        self.rates.get(currency).map(|rate| amount * rate).ok_or_else(|| {
            format!("no exchange rate for {currency} to the report currency {}: add it to [currency.rates] in the config", self.report)
        })
    }

    pub fn check(&self, currency: &str) -> Result<(), String> {
        self.to_report(0.0, currency).map(|_| ())
    }
}

/// Everything docs/metrics.md leaves open (`[metrics]` in the config file). Changing
/// a key that shapes the rollups (names, features, key actions, education) rebuilds them at
/// the next start; see [`MetricsConfig::rollup_fingerprint`].
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// The track event that is a login.
    pub login_event: String,
    /// The track event that is a logout (never a feature).
    pub logout_event: String,
    /// The heartbeat event sent by /js/activity.js: activity, never a feature.
    pub heartbeat_event: String,
    /// Event names (or globs) stored but counted for no activity metric.
    pub passive_events: Vec<String>,
    /// Event name or glob -> feature. Unmapped names are their own feature.
    pub features: BTreeMap<String, String>,
    /// Features that are key actions (for `rate_of_adoption`).
    pub key_actions: Vec<String>,
    /// The feature whose first use is the value moment when no go_live_at is known.
    pub value_feature: Option<String>,
    /// Plan -> features available on it (for `feature_breadth`).
    pub plan_features: BTreeMap<String, Vec<String>>,
    /// Event-name prefixes that make an event an education event.
    pub education_prefixes: Vec<String>,
    /// A login session ends after this many minutes without activity.
    pub session_idle_minutes: u32,
    /// `usage_frequency` is `daily` from this many active days in the 14-day window.
    pub daily_min_active_days: u32,
    /// Full adoption: at least this many logins in each of the last `adoption_weeks` weeks.
    pub adoption_logins_per_week: u32,
    pub adoption_weeks: u32,
    /// Weights of the engagement score's components.
    pub engagement_weights: EngagementWeights,
    /// Window lengths; the column names keep the default's number.
    pub windows: Windows,
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Windows {
    /// active_days_14d, active_minutes_14d, active_users_14d, usage_frequency.
    pub engagement_days: u32,
    /// The 30-day adoption metrics, active_users_30d, and initial_adoption after the value moment.
    pub adoption_days: u32,
    /// logins_per_user_week counts logins over this many days (a whole number of weeks).
    pub logins_days: u32,
    /// The 90-day support, CSAT, CES and suggestion metrics.
    pub support_days: u32,
    /// NPS.
    pub nps_days: u32,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            engagement_days: 14,
            adoption_days: 30,
            logins_days: 28,
            support_days: 90,
            nps_days: 180,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngagementWeights {
    pub active_days_14d: f64,
    pub active_minutes_14d: f64,
    pub active_users_14d: f64,
    pub license_utilization: f64,
}

impl Default for EngagementWeights {
    fn default() -> Self {
        EngagementWeights {
            active_days_14d: 1.0,
            active_minutes_14d: 1.0,
            active_users_14d: 1.0,
            license_utilization: 1.0,
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            login_event: "Signed In".into(),
            logout_event: "Signed Out".into(),
            heartbeat_event: "Active Ping".into(),
            passive_events: Vec::new(),
            features: BTreeMap::new(),
            key_actions: Vec::new(),
            value_feature: None,
            plan_features: BTreeMap::new(),
            education_prefixes: ["Doc ", "Tutorial ", "Webinar ", "Course "]
                .map(String::from)
                .to_vec(),
            session_idle_minutes: 30,
            daily_min_active_days: 10,
            adoption_logins_per_week: 3,
            adoption_weeks: 4,
            engagement_weights: EngagementWeights::default(),
            windows: Windows::default(),
        }
    }
}

impl MetricsConfig {
    /// `Err((key, reason))` for the first bad value.
    pub fn check(&self) -> Result<(), (String, String)> {
        for (name, value) in [
            ("login_event", &self.login_event),
            ("logout_event", &self.logout_event),
            ("heartbeat_event", &self.heartbeat_event),
        ] {
            if value.is_empty() || value.len() > limits::ID_BYTES_MAX {
                return Err((
                    name.into(),
                    format!("must be 1 to {} bytes", limits::ID_BYTES_MAX),
                ));
            }
        }
        for pattern in self.passive_events.iter().chain(self.features.keys()) {
            globset::Glob::new(pattern)
                .map_err(|e| ("features".to_string(), format!("bad glob {pattern:?}: {e}")))?;
        }
        if !(1..=1440).contains(&self.session_idle_minutes) {
            return Err((
                "session_idle_minutes".into(),
                format!("must be 1 to 1440, got {}", self.session_idle_minutes),
            ));
        }
        let w = &self.windows;
        for (name, days) in [
            ("engagement_days", w.engagement_days),
            ("adoption_days", w.adoption_days),
            ("logins_days", w.logins_days),
            ("support_days", w.support_days),
            ("nps_days", w.nps_days),
        ] {
            if !(2..=730).contains(&days) {
                return Err((
                    format!("windows.{name}"),
                    format!("must be 2 to 730 days, got {days}"),
                ));
            }
        }
        if !w.logins_days.is_multiple_of(7) {
            return Err((
                "windows.logins_days".into(),
                format!("must be a whole number of weeks, got {}", w.logins_days),
            ));
        }
        if !(1..=w.engagement_days).contains(&self.daily_min_active_days) {
            return Err((
                "daily_min_active_days".into(),
                format!(
                    "must be 1 to windows.engagement_days ({}), got {}",
                    w.engagement_days, self.daily_min_active_days
                ),
            ));
        }
        if !(1..=8).contains(&self.adoption_weeks) {
            return Err((
                "adoption_weeks".into(),
                format!("must be 1 to 8, got {}", self.adoption_weeks),
            ));
        }
        let w = &self.engagement_weights;
        let weights = [
            w.active_days_14d,
            w.active_minutes_14d,
            w.active_users_14d,
            w.license_utilization,
        ];
        if weights.iter().any(|x| !x.is_finite() || *x < 0.0) || weights.iter().sum::<f64>() <= 0.0
        {
            return Err((
                "engagement_weights".into(),
                "weights must be non-negative numbers, not all zero".into(),
            ));
        }
        Ok(())
    }

    /// How many days before `as_of` the rollup rows must reach for every window.
    pub fn lookback_days(&self) -> i32 {
        let w = &self.windows;
        [
            w.engagement_days,
            2 * w.adoption_days,
            w.logins_days,
            7 * self.adoption_weeks + 7,
        ]
        .into_iter()
        .max()
        .unwrap_or(60) as i32
    }

    /// The keys the stored rollups depend on, as one string: when it differs from the one
    /// the rollups were built with, they are rebuilt.
    pub fn rollup_fingerprint(&self) -> String {
        serde_json::json!({
            "login": self.login_event, "logout": self.logout_event, "heartbeat": self.heartbeat_event,
            "passive": self.passive_events, "features": self.features, "key_actions": self.key_actions,
            "education": self.education_prefixes,
        })
        .to_string()
    }
}
