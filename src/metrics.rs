//! Every per-account number of docs/metrics.md, computed from an account's rollups and
//! records for one `as_of` day. Pure: the store loads an [`AccountData`], this module
//! turns it into a [`Row`] whose keys are exactly the export column names ([`COLUMNS`]).
//!
//! Days are local days of the account (days since 1970-01-01, see [`activity::local_day`]);
//! a window of N days ending at `as_of` is `as_of - N + 1 ..= as_of`.

pub mod activity;
pub mod config;
pub mod outcomes;
pub mod read;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

pub use config::{CurrencyConfig, MetricsConfig};

/// What a measure's value is, which says how it is checked, typed and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text (an id, a segment, a frequency class).
    Text,
    /// A JSON object (counts by type or category, KPI values, initial adoption).
    Object,
    /// A whole number, never null.
    Count,
    /// Whole days, null when undefined.
    Days,
    /// A share, 0..1 (may exceed 1 where docs/metrics.md says so), null when undefined.
    Ratio,
    /// A score on its own scale (engagement 0..100, NPS -100..100), null when undefined.
    Score,
    /// Hours, null when undefined.
    Hours,
    /// Any other number, null when undefined.
    Number,
}

impl Kind {
    /// One number per account and day (time series, segment statistics, rules, health).
    pub fn is_numeric(self) -> bool {
        !matches!(self, Kind::Text | Kind::Object)
    }
}

/// One metric of the export: its column, the name people read, its kind, and whether
/// its sum over accounts means something (counts of things that do not overlap).
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: Kind,
    pub additive: bool,
}

impl Measure {
    const fn new(name: &'static str, label: &'static str, kind: Kind, additive: bool) -> Measure {
        Measure {
            name,
            label,
            kind,
            additive,
        }
    }
}

/// Declares the metrics once: the [`Metrics`] struct's fields, the [`MEASURES`] table and
/// the lookups by column name, from one list of `name: type, "label", kind, additive;`.
macro_rules! measures {
    ($($name:ident: $ty:ty, $label:literal, $kind:ident, $additive:literal;)*) => {
        /// Every metric of one account at one day, in export order (docs/metrics.md, Export
        /// contract). Serialized, it is the export row: every column, null when undefined.
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct Metrics {
            $(pub $name: $ty,)*
        }

        /// Every metric of an account, in export order: the one table the export columns,
        /// the numeric and additive checks, the rule measures, the API's schema and the
        /// pages' labels derive from.
        pub const MEASURES: &[Measure] = &[
            $(Measure::new(stringify!($name), $label, Kind::$kind, $additive),)*
        ];

        impl Metrics {
            /// A metric by column name, as JSON (`None`: no such column).
            pub fn get(&self, column: &str) -> Option<Value> {
                match column {
                    $(stringify!($name) => Some(
                        serde_json::to_value(&self.$name).unwrap_or(Value::Null),
                    ),)*
                    _ => None,
                }
            }

            /// Every metric by column name, for what is looked up by name (rule conditions,
            /// score measures), beside measures from elsewhere.
            pub fn to_map(&self) -> serde_json::Map<String, Value> {
                match serde_json::to_value(self) {
                    Ok(Value::Object(map)) => map,
                    _ => unreachable!("a struct serializes to an object"),
                }
            }

            /// A numeric metric by column name (`None`: undefined, not numeric or no such
            /// column).
            pub fn number(&self, column: &str) -> Option<f64> {
                match column {
                    $(stringify!($name) => self.$name.as_number(),)*
                    _ => None,
                }
            }
        }
    };
}

#[rustfmt::skip] // A table: one measure a line.
measures! {
    account_id: String, "Account", Text, false;
    segment: String, "Segment", Text, false;
    active_days_14d: i64, "Active days (14 days)", Count, false;
    usage_frequency: String, "Usage frequency", Text, false;
    active_minutes_14d: i64, "Active minutes (14 days)", Count, true;
    active_users_14d: i64, "Active users (14 days)", Count, true;
    active_users_30d: i64, "Active users (30 days)", Count, true;
    dau: i64, "Daily active users", Count, true;
    wau: i64, "Weekly active users", Count, true;
    mau: i64, "Monthly active users", Count, true;
    logins_per_user_week: Option<f64>, "Logins per user per week", Number, false;
    seats: i64, "Paid seats", Count, true;
    license_utilization: Option<f64>, "Licence use", Ratio, false;
    engagement_score: Option<f64>, "Engagement score", Score, false;
    features_used_30d: i64, "Features used (30 days)", Count, false;
    feature_breadth: Option<f64>, "Feature breadth", Ratio, false;
    new_features_30d: i64, "New features (30 days)", Count, false;
    transactions_30d: i64, "Feature uses (30 days)", Count, true;
    user_adoption_growth: Option<f64>, "Active user growth", Ratio, false;
    rate_of_adoption: Option<f64>, "Fully adopted users", Ratio, false;
    education_events_30d: i64, "Education events (30 days)", Count, true;
    time_to_provision_days: Option<i64>, "Days to provision", Days, false;
    time_to_value_days: Option<i64>, "Days to first value", Days, false;
    initial_adoption: Option<InitialAdoption>, "Initial adoption", Object, false;
    go_live_recommend_rate: Option<f64>, "Would recommend at go-live", Ratio, false;
    tickets_opened_90d: i64, "Tickets opened (90 days)", Count, true;
    tickets_open: i64, "Open tickets", Count, true;
    tickets_closed_90d: i64, "Tickets closed (90 days)", Count, true;
    tickets_by_type: BTreeMap<String, TicketCounts>, "Tickets by type", Object, false;
    escalations_open: i64, "Open escalations", Count, true;
    median_resolution_hours_90d: Option<f64>, "Median resolution time", Hours, false;
    p90_resolution_hours_90d: Option<f64>, "90th percentile resolution time", Hours, false;
    median_first_response_hours_90d: Option<f64>, "Median first response time", Hours, false;
    nps: Option<f64>, "NPS", Score, false;
    csat: Option<f64>, "CSAT", Ratio, false;
    ces: Option<f64>, "Customer effort (1-7)", Number, false;
    suggestions_90d: i64, "Suggestions (90 days)", Count, true;
    suggestions_by_category: BTreeMap<String, i64>, "Suggestions by category", Object, false;
    business_results: BTreeMap<String, KpiResult>, "Business results", Object, false;
}

/// Initial adoption: the users and feature uses of the 30 days from the value moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct InitialAdoption {
    pub active_users: i64,
    pub transactions: i64,
}

/// One ticket type's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TicketCounts {
    pub opened_90d: i64,
    pub open: i64,
    pub closed_90d: i64,
}

/// A KPI's latest value at the day, its date and its change from the value before.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KpiResult {
    pub value: f64,
    pub date: String,
    pub change: Option<f64>,
}

/// A metric's value as one number, where it is one.
trait AsNumber {
    fn as_number(&self) -> Option<f64>;
}

impl AsNumber for i64 {
    fn as_number(&self) -> Option<f64> {
        Some(*self as f64)
    }
}

impl AsNumber for Option<i64> {
    fn as_number(&self) -> Option<f64> {
        self.map(|x| x as f64)
    }
}

impl AsNumber for Option<f64> {
    fn as_number(&self) -> Option<f64> {
        self.filter(|x| x.is_finite())
    }
}

impl AsNumber for String {
    fn as_number(&self) -> Option<f64> {
        None
    }
}

impl AsNumber for Option<InitialAdoption> {
    fn as_number(&self) -> Option<f64> {
        None
    }
}

impl<V> AsNumber for BTreeMap<String, V> {
    fn as_number(&self) -> Option<f64> {
        None
    }
}

/// The export columns, in order: the names of [`MEASURES`].
pub const COLUMNS: [&str; MEASURES.len()] = {
    let mut names = [""; MEASURES.len()];
    let mut i = 0;
    while i < MEASURES.len() {
        names[i] = MEASURES[i].name;
        i += 1;
    }
    names
};

/// The measure of an export column.
pub fn measure(column: &str) -> Option<&'static Measure> {
    MEASURES.iter().find(|m| m.name == column)
}

/// Metrics with one number per day, for time series and segment statistics.
pub fn is_numeric(column: &str) -> bool {
    measure(column).is_some_and(|m| m.kind.is_numeric())
}

/// Metrics whose sum over accounts means something (counts of things that do not overlap).
pub fn is_additive(column: &str) -> bool {
    measure(column).is_some_and(|m| m.additive)
}

/// One person's activity on one local day in one account (a `user_days` row).
#[derive(Debug, Clone, Default)]
pub struct UserDay {
    pub day: i32,
    pub user: String,
    pub logins: i64,
    pub transactions: i64,
    pub education: i64,
    pub minutes: Vec<u32>,
    pub login_minutes: Vec<u32>,
    pub key_minutes: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct FeatureDay {
    pub day: i32,
    pub feature: String,
    pub uses: i64,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub product: Option<String>,
    pub plan: Option<String>,
    pub seats: i64,
    /// In the report currency.
    pub arr: f64,
    pub start: i32,
    /// Inclusive; `None` is open-ended.
    pub end: Option<i32>,
    pub outcome: Option<String>,
    /// Local day of provisioned_at / go_live_at.
    pub provisioned: Option<i32>,
    pub go_live: Option<i32>,
}

impl Subscription {
    pub fn in_force(&self, day: i32) -> bool {
        self.start <= day && self.end.is_none_or(|end| day <= end)
    }
}

#[derive(Debug, Clone)]
pub struct Ticket {
    pub id: String,
    /// The person who opened it.
    pub user: Option<String>,
    pub kind: Option<String>,
    pub opened_ms: i64,
    pub opened: i32,
    pub first_response_ms: Option<i64>,
    pub first_response: Option<i32>,
    pub resolved_ms: Option<i64>,
    pub resolved: Option<i32>,
    pub escalated: bool,
}

#[derive(Debug, Clone)]
pub struct Survey {
    pub response_id: String,
    pub user: Option<String>,
    pub kind: String,
    pub score: i64,
    pub answered_ms: i64,
    pub answered: i32,
}

#[derive(Debug, Clone)]
pub struct Suggestion {
    pub category: Option<String>,
    pub created: i32,
}

#[derive(Debug, Clone)]
pub struct Kpi {
    pub name: String,
    pub date: i32,
    pub value: f64,
}

/// Everything one account's metrics are computed from (or a subtree's: several accounts'
/// data merged, see [`AccountData::merge`]).
#[derive(Debug, Clone, Default)]
pub struct AccountData {
    pub account_id: String,
    pub segment: String,
    pub plan: Option<String>,
    /// Rollup rows over the loaded day range.
    pub days: Vec<UserDay>,
    pub features: Vec<FeatureDay>,
    /// First day the account used each feature (all time).
    pub first_use: HashMap<String, i32>,
    /// The last day any person of the account was active (all time, like `first_use`).
    pub last_active: Option<i32>,
    /// Rows of the 30 days from the value moment on (for `initial_adoption`).
    pub value_days: Vec<UserDay>,
    pub subscriptions: Vec<Subscription>,
    pub tickets: Vec<Ticket>,
    pub surveys: Vec<Survey>,
    pub suggestions: Vec<Suggestion>,
    pub kpis: Vec<Kpi>,
}

impl AccountData {
    /// Adds a child's data, for subtree metrics: people are counted once across the
    /// subtree, so a person active in two children on one day is one active user.
    pub fn merge(&mut self, other: AccountData) {
        self.days.extend(other.days);
        self.features.extend(other.features);
        for (feature, day) in other.first_use {
            let first = self.first_use.entry(feature).or_insert(day);
            *first = (*first).min(day);
        }
        self.value_days.extend(other.value_days);
        self.subscriptions.extend(other.subscriptions);
        self.tickets.extend(other.tickets);
        self.surveys.extend(other.surveys);
        self.suggestions.extend(other.suggestions);
        self.kpis.extend(other.kpis);
    }

    /// The plan features and breadth are judged against: the account's own, else the plan
    /// of its newest subscription in force.
    fn plan_at(&self, day: i32) -> Option<&str> {
        self.plan.as_deref().or_else(|| {
            self.subscriptions
                .iter()
                .filter(|s| s.in_force(day))
                .max_by_key(|s| s.start)
                .and_then(|s| s.plan.as_deref())
        })
    }

    /// The value moment: the earliest go-live if any subscription has one, else the first use
    /// of the configured value feature.
    pub fn value_moment(&self, config: &MetricsConfig) -> Option<i32> {
        self.value_moment_with(&self.first_use, config)
    }

    /// The value moment were the account's first feature uses `first_use`.
    pub fn value_moment_with(
        &self,
        first_use: &HashMap<String, i32>,
        config: &MetricsConfig,
    ) -> Option<i32> {
        let go_live = self.subscriptions.iter().filter_map(|s| s.go_live).min();
        go_live.or_else(|| {
            config
                .value_feature
                .as_ref()
                .and_then(|f| first_use.get(f).copied())
        })
    }

    fn first_subscription(&self) -> Option<&Subscription> {
        self.subscriptions.iter().min_by_key(|s| s.start)
    }
}

/// One account's metrics: the export row.
pub type Row = Metrics;

fn in_window(day: i32, as_of: i32, days: i32) -> bool {
    day <= as_of && day > as_of - days
}

/// Linear-interpolation quantile (DuckDB `quantile_cont`, numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let position = q * (sorted.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = position.ceil() as usize;
    Some(sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64))
}

/// A number that JSON can carry: infinities and NaN are undefined.
fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|x| x.is_finite())
}

/// Monday-based weekday (0 = Monday) of a day number; 1970-01-01 was a Thursday.
pub fn weekday(day: i32) -> i32 {
    (day + 3).rem_euclid(7)
}

/// Computes every metric of one account (or merged subtree) at `as_of`, except
/// `engagement_score`, which needs the segment: see [`engagement_scores`].
// Over 100 lines: One block per metric group of docs/metrics.md, in its order; issue 29 item 4 turns it into a table of measures.
#[allow(clippy::too_many_lines)]
pub fn compute(data: &AccountData, as_of: i32, config: &MetricsConfig) -> Row {
    let w = &config.windows;
    let (engagement, adoption, logins_window) = (
        w.engagement_days as i32,
        w.adoption_days as i32,
        w.logins_days as i32,
    );
    let mut row = Row {
        account_id: data.account_id.clone(),
        segment: data.segment.clone(),
        ..Row::default()
    };

    // People and days, with a person's minutes merged across accounts of a subtree.
    let mut person_days: HashMap<(&str, i32), Vec<&UserDay>> = HashMap::new();
    for d in data
        .days
        .iter()
        .filter(|d| d.day <= as_of && d.day > as_of - config.lookback_days() - 1)
    {
        person_days
            .entry((d.user.as_str(), d.day))
            .or_default()
            .push(d);
    }
    let users_in = |from: i32, to: i32| -> HashSet<&str> {
        person_days
            .keys()
            .filter(|(_, day)| *day >= from && *day <= to)
            .map(|(u, _)| *u)
            .collect()
    };
    let active_days: HashSet<i32> = person_days
        .keys()
        .filter(|(_, day)| in_window(*day, as_of, engagement))
        .map(|(_, d)| *d)
        .collect();
    let active_days_14d = active_days.len() as i64;
    let first_half = active_days.iter().any(|d| *d <= as_of - engagement / 2);
    let second_half = active_days.iter().any(|d| *d > as_of - engagement / 2);
    let frequency = if active_days_14d >= i64::from(config.daily_min_active_days) {
        "daily"
    } else if first_half && second_half {
        "weekly"
    } else if active_days_14d >= 1 {
        "infrequent"
    } else {
        "dormant"
    };
    let mut active_minutes = 0usize;
    for ((_, day), rows) in &person_days {
        if in_window(*day, as_of, engagement) {
            active_minutes += if rows.len() == 1 {
                rows[0].minutes.len()
            } else {
                rows.iter()
                    .flat_map(|r| r.minutes.iter())
                    .collect::<HashSet<_>>()
                    .len()
            };
        }
    }
    let active_users_14d = users_in(as_of - engagement + 1, as_of).len() as i64;
    let users_30 = users_in(as_of - adoption + 1, as_of);
    let active_users_30d = users_30.len() as i64;
    let users_30_before = users_in(as_of - 2 * adoption + 1, as_of - adoption).len() as i64;
    let sum_in = |days: i32, field: fn(&UserDay) -> i64| -> i64 {
        data.days
            .iter()
            .filter(|d| in_window(d.day, as_of, days))
            .map(field)
            .sum()
    };
    let logins_28 = sum_in(logins_window, |d| d.logins);
    let seats: i64 = data
        .subscriptions
        .iter()
        .filter(|s| s.in_force(as_of))
        .map(|s| s.seats)
        .sum();
    let ratio = |num: f64, den: f64| if den == 0.0 { None } else { Some(num / den) };

    row.active_days_14d = active_days_14d;
    row.usage_frequency = frequency.to_string();
    row.active_minutes_14d = active_minutes as i64;
    row.active_users_14d = active_users_14d;
    row.active_users_30d = active_users_30d;
    row.dau = users_in(as_of, as_of).len() as i64;
    row.wau = users_in(as_of - 6, as_of).len() as i64;
    row.mau = active_users_30d;
    row.logins_per_user_week = finite(
        ratio(logins_28 as f64, active_users_30d as f64).map(|x| x / (logins_window / 7) as f64),
    );
    row.seats = seats;
    row.license_utilization = finite(ratio(active_users_30d as f64, seats as f64));

    // Adoption.
    let used: HashSet<&str> = data
        .features
        .iter()
        .filter(|f| in_window(f.day, as_of, adoption) && f.uses > 0)
        .map(|f| f.feature.as_str())
        .collect();
    let available = data
        .plan_at(as_of)
        .and_then(|plan| config.plan_features.get(plan))
        .map(Vec::len)
        .filter(|n| *n > 0);
    let new_features = used
        .iter()
        .filter(|f| {
            data.first_use
                .get(**f)
                .is_some_and(|first| *first > as_of - adoption)
        })
        .count();
    row.features_used_30d = used.len() as i64;
    row.feature_breadth = finite(available.map(|n| used.len() as f64 / n as f64));
    row.new_features_30d = new_features as i64;
    row.transactions_30d = sum_in(adoption, |d| d.transactions);
    row.user_adoption_growth =
        finite(ratio(active_users_30d as f64, users_30_before as f64).map(|x| x - 1.0));
    let adopted = users_30
        .iter()
        .filter(|u| fully_adopted(data, u, as_of, config))
        .count();
    row.rate_of_adoption = finite(ratio(adopted as f64, active_users_30d as f64));
    row.education_events_30d = sum_in(adoption, |d| d.education);

    // Onboarding.
    let first = data.first_subscription().filter(|s| s.start <= as_of);
    let provisioned = first.and_then(|s| s.provisioned).filter(|p| *p <= as_of);
    row.time_to_provision_days = match (first, provisioned) {
        (Some(s), Some(p)) => Some(i64::from(p - s.start)),
        _ => None,
    };
    let value_moment = data.value_moment(config).filter(|v| *v <= as_of);
    row.time_to_value_days = match (value_moment, provisioned) {
        (Some(v), Some(p)) => Some(i64::from(v - p)),
        _ => None,
    };
    row.initial_adoption = value_moment.map(|v| {
        let window: Vec<&UserDay> = data
            .value_days
            .iter()
            .filter(|d| d.day >= v && d.day < v + adoption && d.day <= as_of)
            .collect();
        let users: HashSet<&str> = window.iter().map(|d| d.user.as_str()).collect();
        InitialAdoption {
            active_users: users.len() as i64,
            transactions: window.iter().map(|d| d.transactions).sum(),
        }
    });
    let go_live: Vec<&Survey> = data
        .surveys
        .iter()
        .filter(|s| s.kind == "go_live_recommend" && s.answered <= as_of)
        .collect();
    row.go_live_recommend_rate = finite(ratio(
        go_live.iter().filter(|s| s.score == 1).count() as f64,
        go_live.len() as f64,
    ));

    support(&mut row, data, as_of, w.support_days as i32);
    feedback(
        &mut row,
        data,
        as_of,
        w.support_days as i32,
        w.nps_days as i32,
    );
    row
}

/// A person is fully adopted when, in each of the last `adoption_weeks` complete weeks
/// (Monday to Sunday, ending on or before `as_of`), they logged in at least
/// `adoption_logins_per_week` times and every login session held a key action. A login
/// session runs from a login to the next login or to `session_idle_minutes` without
/// activity (minute resolution).
fn fully_adopted(data: &AccountData, user: &str, as_of: i32, config: &MetricsConfig) -> bool {
    if config.key_actions.is_empty() {
        return false;
    }
    let last_sunday = as_of - (weekday(as_of) + 1) % 7;
    let weeks = config.adoption_weeks as i32;
    let first_monday = last_sunday - 7 * weeks + 1;
    let rows: Vec<&UserDay> = data
        .days
        .iter()
        .filter(|d| d.user == user && d.day >= first_monday && d.day <= as_of)
        .collect();
    let mut minutes: Vec<u32> = rows
        .iter()
        .flat_map(|d| d.minutes.iter().copied())
        .collect();
    activity::normalize(&mut minutes);
    let mut keys: Vec<u32> = rows
        .iter()
        .flat_map(|d| d.key_minutes.iter().copied())
        .collect();
    activity::normalize(&mut keys);
    let mut logins: Vec<(u32, i32)> = rows
        .iter()
        .flat_map(|d| d.login_minutes.iter().map(move |m| (*m, d.day)))
        .collect();
    logins.sort_unstable();
    logins.dedup_by_key(|(m, _)| *m);
    for week in 0..weeks {
        let monday = first_monday + 7 * week;
        let sunday = monday + 6;
        let count: i64 = rows
            .iter()
            .filter(|d| d.day >= monday && d.day <= sunday)
            .map(|d| d.logins)
            .sum();
        if count < i64::from(config.adoption_logins_per_week) {
            return false;
        }
        for (index, (login, day)) in logins.iter().enumerate() {
            if *day < monday || *day > sunday {
                continue;
            }
            let next_login = logins.get(index + 1).map(|(m, _)| *m).unwrap_or(u32::MAX);
            // The session's end: the last activity minute before an idle gap or the next login.
            let mut end = *login;
            let start = minutes.partition_point(|m| *m < *login);
            for m in &minutes[start..] {
                if *m >= next_login || *m > end + config.session_idle_minutes {
                    break;
                }
                end = *m;
            }
            let key_at = keys.partition_point(|k| *k < *login);
            if !keys
                .get(key_at)
                .is_some_and(|k| *k <= end && *k < next_login)
            {
                return false;
            }
        }
    }
    true
}

fn support(row: &mut Row, data: &AccountData, as_of: i32, window: i32) {
    let is_open = |t: &Ticket| t.opened <= as_of && t.resolved.is_none_or(|r| r > as_of);
    let opened = |t: &Ticket| in_window(t.opened, as_of, window);
    let closed = |t: &Ticket| t.resolved.is_some_and(|r| in_window(r, as_of, window));
    let count = |f: &dyn Fn(&Ticket) -> bool| data.tickets.iter().filter(|t| f(t)).count() as i64;
    row.tickets_opened_90d = count(&opened);
    row.tickets_open = count(&is_open);
    row.tickets_closed_90d = count(&closed);
    let mut by_type: BTreeMap<String, [i64; 3]> = BTreeMap::new();
    for t in &data.tickets {
        let flags = [opened(t), is_open(t), closed(t)];
        if flags.iter().any(|f| *f) {
            let counts = by_type
                .entry(t.kind.clone().unwrap_or_else(|| "unspecified".into()))
                .or_default();
            for (c, f) in counts.iter_mut().zip(flags) {
                *c += i64::from(f);
            }
        }
    }
    row.tickets_by_type = by_type
        .into_iter()
        .map(|(kind, [opened_90d, open, closed_90d])| {
            let counts = TicketCounts {
                opened_90d,
                open,
                closed_90d,
            };
            (kind, counts)
        })
        .collect();
    row.escalations_open = count(&|t| is_open(t) && t.escalated);
    let hours = |from: i64, to: i64| (to - from) as f64 / 3_600_000.0;
    let mut resolution: Vec<f64> = data
        .tickets
        .iter()
        .filter(|t| closed(t))
        .map(|t| hours(t.opened_ms, t.resolved_ms.unwrap_or(t.opened_ms)))
        .collect();
    resolution.sort_by(f64::total_cmp);
    let mut response: Vec<f64> = data
        .tickets
        .iter()
        .filter(|t| {
            t.first_response
                .is_some_and(|r| in_window(r, as_of, window))
        })
        .map(|t| hours(t.opened_ms, t.first_response_ms.unwrap_or(t.opened_ms)))
        .collect();
    response.sort_by(f64::total_cmp);
    row.median_resolution_hours_90d = finite(quantile(&resolution, 0.5));
    row.p90_resolution_hours_90d = finite(quantile(&resolution, 0.9));
    row.median_first_response_hours_90d = finite(quantile(&response, 0.5));
}

fn feedback(row: &mut Row, data: &AccountData, as_of: i32, window: i32, nps_window: i32) {
    // NPS over the latest answer of each person in 180 days (an answer without a person
    // stands for itself).
    let mut latest: HashMap<&str, &Survey> = HashMap::new();
    for s in data
        .surveys
        .iter()
        .filter(|s| s.kind == "nps" && in_window(s.answered, as_of, nps_window))
    {
        let who = s.user.as_deref().unwrap_or(s.response_id.as_str());
        let keep = latest.get(who).is_none_or(|old| {
            (s.answered_ms, &s.response_id) > (old.answered_ms, &old.response_id)
        });
        if keep {
            latest.insert(who, s);
        }
    }
    let n = latest.len() as f64;
    let promoters = latest.values().filter(|s| s.score >= 9).count() as f64;
    let detractors = latest.values().filter(|s| s.score <= 6).count() as f64;
    row.nps = finite((n > 0.0).then(|| 100.0 * (promoters - detractors) / n));
    let scores = |kind: &str| -> Vec<i64> {
        data.surveys
            .iter()
            .filter(|s| s.kind == kind && in_window(s.answered, as_of, window))
            .map(|s| s.score)
            .collect()
    };
    let csat = scores("csat");
    let ces = scores("ces");
    row.csat = finite(
        (!csat.is_empty())
            .then(|| csat.iter().filter(|s| **s >= 4).count() as f64 / csat.len() as f64),
    );
    row.ces = finite((!ces.is_empty()).then(|| ces.iter().sum::<i64>() as f64 / ces.len() as f64));
    let suggestions: Vec<&Suggestion> = data
        .suggestions
        .iter()
        .filter(|s| in_window(s.created, as_of, window))
        .collect();
    let mut by_category: BTreeMap<String, i64> = BTreeMap::new();
    for s in &suggestions {
        *by_category
            .entry(s.category.clone().unwrap_or_else(|| "unspecified".into()))
            .or_default() += 1;
    }
    row.suggestions_90d = suggestions.len() as i64;
    row.suggestions_by_category = by_category;
    // Each KPI's latest value at as_of and its change from the value before.
    let mut kpis: BTreeMap<&str, Vec<&Kpi>> = BTreeMap::new();
    for k in data.kpis.iter().filter(|k| k.date <= as_of) {
        kpis.entry(k.name.as_str()).or_default().push(k);
    }
    for (name, mut values) in kpis {
        values.sort_by_key(|k| k.date);
        let last = values[values.len() - 1];
        let change = values
            .len()
            .checked_sub(2)
            .map(|i| last.value - values[i].value);
        let result = KpiResult {
            value: last.value,
            date: activity::day_date(last.date).to_string(),
            change,
        };
        row.business_results.insert(name.to_string(), result);
    }
}

/// Fills `engagement_score` in every row: each component's mid-rank percentile among the
/// rows of the same segment with a value, averaged with the configured weights (a null
/// component is left out and the other weights rescaled).
pub fn engagement_scores(rows: &mut [Row], config: &MetricsConfig) {
    let w = &config.engagement_weights;
    let components = [
        ("active_days_14d", w.active_days_14d),
        ("active_minutes_14d", w.active_minutes_14d),
        ("active_users_14d", w.active_users_14d),
        ("license_utilization", w.license_utilization),
    ];
    let mut by_segment: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, row) in rows.iter().enumerate() {
        by_segment
            .entry(row.segment.clone())
            .or_default()
            .push(index);
    }
    for members in by_segment.values() {
        let mut scores = vec![(0.0, 0.0); members.len()];
        for (name, weight) in components {
            if weight == 0.0 {
                continue;
            }
            let mut values: Vec<f64> = members
                .iter()
                .filter_map(|i| rows[*i].number(name))
                .collect();
            values.sort_by(f64::total_cmp);
            for (slot, i) in members.iter().enumerate() {
                if let Some(x) = rows[*i].number(name) {
                    let below = values.partition_point(|v| *v < x) as f64;
                    let equal = values.partition_point(|v| *v <= x) as f64 - below;
                    let rank = 100.0 * (below + equal / 2.0) / values.len() as f64;
                    scores[slot].0 += weight * rank;
                    scores[slot].1 += weight;
                }
            }
        }
        for (slot, i) in members.iter().enumerate() {
            let (sum, weights) = scores[slot];
            rows[*i].engagement_score = finite((weights > 0.0).then(|| sum / weights));
        }
    }
}

/// One CSV cell: null as empty, objects as compact JSON, text through [`csv_text`].
pub fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => csv_text(s),
        other => other.to_string(),
    }
}

/// Text as a CSV cell that a spreadsheet shows and never runs: a cell beginning with `=`,
/// `+`, `-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and
/// Google Sheets (`=HYPERLINK(...)`, `+cmd|' /C calc'!A0`), so it gets a leading `'`
/// (OWASP's advice), unless the whole cell is a number (`-12.5` stays a number). Every
/// CSV bellwether writes passes its text cells through here.
pub fn csv_text(text: &str) -> String {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && text.parse::<f64>().is_err() {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// ARR in the report currency; a subscription without ARR counts 0.
pub fn report_arr(
    arr: Option<f64>,
    currency: Option<&str>,
    rates: &CurrencyConfig,
) -> Result<f64, String> {
    match arr {
        Some(amount) => rates.to_report(amount, currency.unwrap_or(&rates.report)),
        None => Ok(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_exactly_the_measures_in_export_order() {
        let config = MetricsConfig::default();
        let data = AccountData {
            account_id: "acct-1".into(),
            segment: "pro".into(),
            ..AccountData::default()
        };
        let mut rows = vec![compute(&data, 20_000, &config)];
        engagement_scores(&mut rows, &config);
        let row = serde_json::to_value(&rows[0]).unwrap();
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, COLUMNS);
        for measure in MEASURES {
            let value = &row[measure.name];
            assert_eq!(
                rows[0].get(measure.name).as_ref(),
                Some(value),
                "{}",
                measure.name
            );
            let fits = match measure.kind {
                Kind::Text => value.is_string(),
                Kind::Object => value.is_object() || value.is_null(),
                Kind::Count => value.is_i64(),
                Kind::Days => value.is_i64() || value.is_null(),
                _ => value.is_number() || value.is_null(),
            };
            assert!(
                fits,
                "{}: {value} is not a {:?}",
                measure.name, measure.kind
            );
        }
    }

    #[test]
    fn csv_cells_never_start_a_formula() {
        for formula in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0",
            "@SUM(1+1)*cmd|' /C calc'!A0",
            "\t=1+1",
            "\r=1+1",
            "-",
            "+1 2",
        ] {
            let cell = csv_text(formula);
            assert!(cell.starts_with('\''), "{formula:?} became {cell:?}");
            assert_eq!(&cell[1..], formula, "the text itself is kept");
        }
        for plain in [
            "Acme Corp",
            "-12.5",
            "+3",
            "1e3",
            "",
            "a=b",
            "mail@example.com",
        ] {
            assert_eq!(csv_text(plain), plain);
        }
        assert_eq!(csv_cell(&serde_json::json!(-4)), "-4");
        assert_eq!(csv_cell(&serde_json::json!("=1+1")), "'=1+1");
    }

    #[test]
    fn quantiles_interpolate_like_duckdb() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 10.0], 0.5), Some(2.5));
        assert!((quantile(&[1.0, 2.0, 3.0, 10.0], 0.9).unwrap() - 7.9).abs() < 1e-9);
        assert_eq!(quantile(&[4.0], 0.9), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn weekdays_start_on_monday() {
        let day = activity::day_number(chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
        assert_eq!(weekday(day), 0, "2026-11-23 is a Monday");
        assert_eq!(weekday(day + 6), 6);
    }
}
