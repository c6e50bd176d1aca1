//! How bellwether shows values to people, in one place (pages, alert and task texts): metric and KPI names as people read them,
//! counts, money, percentages, days and hours, dates and times. No page shows JSON, an ISO
//! timestamp or a column name. Dates and times are written in UTC on the server and put in
//! the viewer's locale and timezone by the page script (`time` elements), so a page without
//! the script still reads well.

use chrono::{DateTime, NaiveDate, Utc};
use maud::{html, Markup};

use crate::metrics::{Kind, Metrics};

/// 1234567.8 -> "1,234,568".
pub fn thousands(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0.0 && out != "0" {
        format!("-{out}")
    } else {
        out
    }
}

/// An amount in the report currency as text: "12,500 USD".
pub fn money_text(value: f64, currency: &str) -> String {
    format!("{} {currency}", thousands(value))
}

/// An amount in the report currency on a page: "12,500 USD", which the page script writes
/// with the viewer's locale's digit grouping ("12.500 USD" in German).
pub fn money(value: f64, currency: &str) -> Markup {
    html! { data value=(value.round()) data-unit=(currency) { (money_text(value, currency)) } }
}

/// An amount in short form for headlines: "1.2 M USD", "350 k USD", "900 USD".
pub fn money_short(value: f64, currency: &str) -> String {
    let a = value.abs();
    if a >= 1e6 {
        format!("{} M {currency}", trim(value / 1e6, 1))
    } else if a >= 1e4 {
        format!("{} k {currency}", thousands(value / 1e3))
    } else {
        money_text(value, currency)
    }
}

/// A number with up to `decimals` decimals (trailing zeros dropped), grouped from 1,000, or
/// "–" when absent.
pub fn number(value: Option<f64>, decimals: usize) -> String {
    match value {
        None => "–".into(),
        Some(v) if v.abs() >= 1000.0 => thousands(v),
        Some(v) => trim(v, decimals),
    }
}

/// `value` with at most `decimals` decimals and no trailing zeros: 2.50 -> "2.5".
fn trim(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if text == "-0" {
        "0".into()
    } else {
        text
    }
}

/// A share 0-1 as a percentage, or "–".
pub fn percent(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{:.0}%", v * 100.0))
}

/// A change of a share in percentage points: "+3 pts", "-12 pts".
pub fn points(change: f64) -> String {
    format!("{:+.0} pts", change * 100.0)
}

/// "1 use", "3 uses", "1,200 uses".
pub fn count(n: i64, one: &str, many: &str) -> String {
    format!(
        "{} {}",
        thousands(n as f64),
        if n == 1 { one } else { many }
    )
}

/// Days as people say them: "today", "1 day", "44 days".
pub fn days(n: i64) -> String {
    match n {
        0 => "today".into(),
        _ => count(n, "day", "days"),
    }
}

/// A duration in hours: "45 min", "3.5 h", "2.1 days".
pub fn hours(value: Option<f64>) -> String {
    match value {
        None => "–".into(),
        Some(h) if h < 1.0 => format!("{} min", (h * 60.0).round()),
        Some(h) if h < 48.0 => format!("{} h", trim(h, 1)),
        Some(h) => format!("{} days", trim(h / 24.0, 1)),
    }
}

/// A calendar day, "5 Dec 2026" (the script writes it in the viewer's locale).
pub fn day(d: NaiveDate) -> Markup {
    html! { time datetime=(d) data-day { (d.format("%-d %b %Y")) } }
}

/// A calendar day or "–".
pub fn day_or_dash(d: Option<NaiveDate>) -> Markup {
    match d {
        Some(d) => day(d),
        None => html! { "–" },
    }
}

/// A day from text (`YYYY-MM-DD` or an RFC 3339 time, whose UTC day it takes).
pub fn day_text(text: &str) -> Markup {
    match text.get(..10).and_then(|d| d.parse::<NaiveDate>().ok()) {
        Some(d) if text.len() == 10 => day(d),
        Some(_) => instant_day(text),
        None => html! { (text) },
    }
}

/// A moment in the viewer's timezone, "5 Dec 2026, 15:49 UTC" until the script runs.
pub fn instant(rfc3339: &str) -> Markup {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => {
            let utc = t.with_timezone(&Utc);
            html! { time datetime=(rfc3339) data-local { (utc.format("%-d %b %Y, %H:%M")) " UTC" } }
        }
        Err(_) => html! { (rfc3339) },
    }
}

/// A moment given in Unix milliseconds.
pub fn instant_ms(ms: i64) -> Markup {
    instant(&crate::ingest::format_timestamp(ms))
}

/// The viewer's day of a moment.
pub fn instant_day(rfc3339: &str) -> Markup {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => {
            let utc = t.with_timezone(&Utc);
            html! { time datetime=(rfc3339) data-local="date" { (utc.format("%-d %b %Y")) } }
        }
        Err(_) => html! { (rfc3339) },
    }
}

/// A quarter by name: "Q4 2025" for the quarter starting 2025-10-01.
pub fn quarter(start: NaiveDate) -> String {
    use chrono::Datelike;
    format!("Q{} {}", start.month0() / 3 + 1, start.year())
}

/// A period from its first day to the day after its last: "Q4 2025" when it is one quarter,
/// "2025" when a year, otherwise "1 Oct 2025 – 31 Dec 2025".
pub fn period(from: NaiveDate, to_exclusive: NaiveDate) -> String {
    use chrono::{Datelike, Months};
    if from.day() == 1 && from.month0().is_multiple_of(3) {
        if from + Months::new(3) == to_exclusive {
            return quarter(from);
        }
        if from.month() == 1 && from + Months::new(12) == to_exclusive {
            return from.year().to_string();
        }
    }
    let last = to_exclusive.pred_opt().unwrap_or(to_exclusive);
    format!(
        "{} – {}",
        from.format("%-d %b %Y"),
        last.format("%-d %b %Y")
    )
}

/// A name written for machines as people read it: "hours_saved" -> "Hours saved",
/// "workflow-automated" -> "Workflow automated". Text already spaced keeps its case.
pub fn humanize(name: &str) -> String {
    if name.contains(' ') || !name.contains(['_', '-']) && name.chars().any(char::is_uppercase) {
        return name.to_string();
    }
    let spaced = name.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

/// A survey kind by name: "NPS", "CSAT", "CES", "Go live recommend".
pub fn survey_kind(kind: &str) -> String {
    match kind {
        "nps" | "csat" | "ces" => kind.to_uppercase(),
        other => humanize(other),
    }
}

/// A metric's, rule measure's or KPI's name as people read it.
pub fn label(name: &str) -> String {
    if let Some(m) = crate::metrics::measure(name) {
        return m.label.to_string();
    }
    let known = match name {
        "tier" => "Health tier",
        "tier_before" => "Tier a week ago",
        "tier_dropped" => "Tier dropped",
        "health_score" => "Health score",
        "health_band" => "Health band",
        "expected_renewal_rate" => "Expected renewal rate",
        "arr" => "ARR",
        "plan" => "Plan",
        "renewal_in_days" => "Days to renewal",
        "escalation_open_days" => "Days the oldest escalation is open",
        "nps_detractor_answers_7d" => "NPS detractors (7 days)",
        "power_feature_first_use_days" => "Days since the power feature's first use",
        "days_since_last_activity" => "Days since last activity",
        "power_feature_monthly_uses" => "Power feature uses a month",
        "window_monthly_uses" => "Feature uses a month (score window)",
        "window_features_used" => "Features used (score window)",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_string();
    }
    humanize(name)
}

/// A metric's value as the pages show it, by its kind (`metrics::MEASURES`).
pub fn metric(row: &Metrics, name: &str) -> String {
    let kind = crate::metrics::measure(name).map(|m| m.kind);
    match name {
        "initial_adoption" => {
            return row.initial_adoption.map_or("–".into(), |a| {
                format!(
                    "{} and {} in the first 30 days",
                    count(a.active_users, "active user", "active users"),
                    count(a.transactions, "feature use", "feature uses")
                )
            })
        }
        "tickets_by_type" => {
            return list(row.tickets_by_type.iter().map(|(t, c)| {
                format!(
                    "{}: {} open, {} opened in 90 days",
                    humanize(t),
                    c.open,
                    c.opened_90d
                )
            }))
        }
        "suggestions_by_category" => {
            return list(
                row.suggestions_by_category
                    .iter()
                    .map(|(c, n)| format!("{}: {n}", humanize(c))),
            )
        }
        "business_results" => {
            return list(
                row.business_results
                    .iter()
                    .map(|(k, r)| format!("{}: {}", humanize(k), number(Some(r.value), 2))),
            )
        }
        _ => {}
    }
    match kind {
        Some(Kind::Text) | Some(Kind::Object) | None => {
            row.get(name).map_or("–".into(), |v| match v {
                serde_json::Value::String(s) => humanize(&s),
                serde_json::Value::Null => "–".into(),
                other => other.to_string(),
            })
        }
        Some(kind) => value(kind, row.number(name)),
    }
}

/// A number of a metric kind as the pages show it.
pub fn value(kind: Kind, v: Option<f64>) -> String {
    match kind {
        Kind::Ratio => percent(v),
        Kind::Count => v.map_or("–".into(), thousands),
        Kind::Days => v.map_or("–".into(), |d| days(d as i64)),
        Kind::Hours => hours(v),
        Kind::Score => number(v, 0),
        Kind::Number | Kind::Text | Kind::Object => number(v, 2),
    }
}

/// A measure's value (a metric or a rule measure) from JSON, as the pages and messages
/// write it.
pub fn measure_value(name: &str, v: &serde_json::Value) -> String {
    use serde_json::Value;
    if let Some(m) = crate::metrics::measure(name) {
        if m.kind.is_numeric() {
            return value(m.kind, v.as_f64());
        }
    }
    match (name, v) {
        (_, Value::Null) => "none".into(),
        ("expected_renewal_rate", Value::Number(n)) => percent(n.as_f64()),
        ("arr", Value::Number(n)) => thousands(n.as_f64().unwrap_or(0.0)),
        (n, Value::Number(x)) if n.ends_with("_days") || n.starts_with("days_") => days(
            x.as_i64()
                .unwrap_or_else(|| x.as_f64().unwrap_or(0.0) as i64),
        ),
        (_, Value::Number(x)) => number(x.as_f64(), 2),
        (_, Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        (_, Value::String(s)) => humanize(s),
        (_, other) => other.to_string(),
    }
}

/// A stored value (a record's cell, a JSON field) as the pages show it: days and times as
/// dates, objects as "name: value" lists, names as words.
pub fn value_text(value: Option<&serde_json::Value>) -> Markup {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => html! { "–" },
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.fract() == 0.0 => html! { (number(Some(v), 0)) },
            v => html! { (number(v, 2)) },
        },
        Some(Value::String(s)) if looks_like_time(s) && s.len() == 10 => day_text(s),
        Some(Value::String(s)) if looks_like_time(s) => instant(s),
        Some(Value::String(s)) => html! { (s) },
        Some(Value::Bool(b)) => html! { (if *b { "yes" } else { "no" }) },
        Some(Value::Array(items)) => html! {
            @for (i, item) in items.iter().enumerate() { @if i > 0 { ", " } (value_text(Some(item))) }
        },
        Some(Value::Object(map)) => html! {
            @for (i, (k, v)) in map.iter().enumerate() {
                @if i > 0 { "; " }
                (humanize(k)) ": " (value_text(Some(v)))
            }
        },
    }
}

/// `YYYY-MM-DD` or an RFC 3339 time.
fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && s[..10].parse::<NaiveDate>().is_ok()
        && (b.len() == 10 || b[10] == b'T')
}

/// One clause of a rule as words, with the account's value: "renewal in 44 days",
/// "Licence use is 40%".
pub fn clause(measure: &str, v: &serde_json::Value) -> String {
    use serde_json::Value;
    let n = v.as_f64();
    match (measure, n) {
        ("renewal_in_days", Some(d)) => format!("renewal in {}", days(d as i64)),
        ("escalation_open_days", Some(d)) => {
            format!("an escalation open for {}", days(d as i64))
        }
        ("escalation_open_days", None) => "no open escalation".into(),
        ("nps_detractor_answers_7d", Some(c)) => format!(
            "{} in the last 7 days",
            count(c as i64, "NPS detractor answer", "NPS detractor answers")
        ),
        ("power_feature_first_use_days", Some(d)) => {
            format!("first used the power feature {} ago", days(d as i64))
        }
        ("power_feature_first_use_days", None) => "never used the power feature".into(),
        ("days_since_last_activity", Some(d)) => format!("last active {} ago", days(d as i64)),
        ("days_since_last_activity", None) => "never active".into(),
        ("tier_dropped", _) => if *v == Value::Bool(true) {
            "the tier dropped this week"
        } else {
            "the tier held this week"
        }
        .into(),
        ("tier" | "tier_before", _) => format!(
            "{} {}",
            label(measure),
            measure_value(measure, v).to_lowercase()
        ),
        _ => format!("{} is {}", label(measure), measure_value(measure, v)),
    }
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "none".into()
    } else {
        items.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_money_and_shares_read_as_people_write_them() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(-0.3), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(-12500.0), "-12,500");
        assert_eq!(money_text(100000.0, "USD"), "100,000 USD");
        assert_eq!(
            money(100000.4, "USD").into_string(),
            r#"<data value="100000" data-unit="USD">100,000 USD</data>"#
        );
        assert_eq!(money_short(1_260_000.0, "USD"), "1.3 M USD");
        assert_eq!(money_short(350_400.0, "EUR"), "350 k EUR");
        assert_eq!(money_short(900.0, "USD"), "900 USD");
        assert_eq!(percent(Some(0.534)), "53%");
        assert_eq!(points(-0.12), "-12 pts");
        assert_eq!(number(None, 1), "–");
        assert_eq!(number(Some(2.50), 2), "2.5");
        assert_eq!(number(Some(3.0), 2), "3");
        assert_eq!(count(1, "use", "uses"), "1 use");
        assert_eq!(count(1200, "use", "uses"), "1,200 uses");
        assert_eq!(days(0), "today");
        assert_eq!(days(44), "44 days");
        assert_eq!(hours(Some(0.5)), "30 min");
        assert_eq!(hours(Some(3.46)), "3.5 h");
        assert_eq!(hours(Some(60.0)), "2.5 days");
    }

    #[test]
    fn dates_times_and_periods_have_no_iso_text() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        assert_eq!(
            day(d).into_string(),
            r#"<time datetime="2026-11-29" data-day>29 Nov 2026</time>"#
        );
        assert_eq!(
            instant("2026-11-29T15:49:00.000Z").into_string(),
            r#"<time datetime="2026-11-29T15:49:00.000Z" data-local>29 Nov 2026, 15:49 UTC</time>"#
        );
        assert!(day_text("2026-11-29T15:49:00.000Z")
            .into_string()
            .contains(">29 Nov 2026<"));
        let q4 = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
        assert_eq!(
            period(q4, NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()),
            "Q4 2025"
        );
        assert_eq!(
            period(
                NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
                NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
            ),
            "2025"
        );
        assert_eq!(
            period(
                NaiveDate::from_ymd_opt(2025, 10, 15).unwrap(),
                NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
            ),
            "15 Oct 2025 – 31 Dec 2025"
        );
    }

    #[test]
    fn names_and_values_of_every_measure_read_as_words() {
        assert_eq!(humanize("hours_saved"), "Hours saved");
        assert_eq!(humanize("Workflow Automated"), "Workflow Automated");
        assert_eq!(label("license_utilization"), "Licence use");
        assert_eq!(label("renewal_in_days"), "Days to renewal");
        assert_eq!(label("hours_saved"), "Hours saved");
        // Every metric has a label that is not its column name.
        for m in crate::metrics::MEASURES {
            assert!(!label(m.name).contains('_'), "{}", m.name);
        }
        let row = Metrics {
            license_utilization: Some(0.35),
            initial_adoption: Some(crate::metrics::InitialAdoption {
                active_users: 24,
                transactions: 395,
            }),
            median_resolution_hours_90d: Some(5.26),
            usage_frequency: "daily".into(),
            time_to_value_days: Some(1),
            ..Metrics::default()
        };
        assert_eq!(metric(&row, "license_utilization"), "35%");
        assert_eq!(
            metric(&row, "initial_adoption"),
            "24 active users and 395 feature uses in the first 30 days"
        );
        assert_eq!(metric(&row, "median_resolution_hours_90d"), "5.3 h");
        assert_eq!(metric(&row, "usage_frequency"), "Daily");
        assert_eq!(metric(&row, "time_to_value_days"), "1 day");
        assert_eq!(metric(&row, "nps"), "–");
        assert_eq!(
            measure_value("license_utilization", &serde_json::json!(0.4)),
            "40%"
        );
        assert_eq!(
            measure_value("renewal_in_days", &serde_json::json!(44)),
            "44 days"
        );
        assert_eq!(measure_value("tier", &serde_json::json!("red")), "Red");
        assert_eq!(
            clause("renewal_in_days", &serde_json::json!(44)),
            "renewal in 44 days"
        );
        assert_eq!(
            clause("license_utilization", &serde_json::json!(0.4)),
            "Licence use is 40%"
        );
        assert_eq!(clause("tier", &serde_json::json!("red")), "Health tier red");
        assert_eq!(
            clause("escalation_open_days", &serde_json::Value::Null),
            "no open escalation"
        );
    }
}
