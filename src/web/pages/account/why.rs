//! The account page's top card: the tier in plain words (the power feature's use and how
//! often accounts that use it like this renewed), the strongest other reasons, the next step
//! and the buttons to act on it.

use chrono::NaiveDate;
use maud::{html, Markup};

use super::View;
use crate::accounts::RENEWAL_SOON_DAYS;
use crate::format;
use crate::health::{bucket_of, Bucket};

/// Licence use under which it is a reason.
const LOW_LICENCE_USE: f64 = 0.5;
/// Days without contact after which it is a reason.
const QUIET_DAYS: i64 = 60;
/// Score components listed as reasons, at most.
const COMPONENTS_LISTED: usize = 2;

/// "less than once a month", "2 to 6 times a month", "6 or more times a month".
pub fn usage_phrase(b: &Bucket) -> String {
    let n = |x: f64| format::number(Some(x), 1);
    match b.max {
        Some(max) if b.min <= 0.0 && max <= 1.0 => "less than once a month".into(),
        Some(max) if b.min <= 0.0 => format!("less than {} times a month", n(max)),
        Some(max) => format!("{} to {} times a month", n(b.min), n(max)),
        None => format!("{} or more times a month", n(b.min)),
    }
}

/// "0 times", "1 time", "2.5 times".
fn times(n: f64) -> String {
    let text = format::number(Some(n), 1);
    if text == "1" {
        "once".into()
    } else {
        format!("{text} times")
    }
}

/// The card.
pub fn card(v: &View, as_of: NaiveDate, path: &str, writable: bool, currency: &str) -> Markup {
    let f = &v.facts;
    let health = v.health.as_ref();
    let tier = health.and_then(|(_, h)| h.tier.as_deref());
    html! {
        section.card.why aria-labelledby="why" data-tier=[tier] {
            h2 id="why" { "Why " (super::tier_badge(tier)) " and what next" }
            @match health {
                None => p.lead { "No health model yet: tiers are learned once enough renewals and churns are decided." },
                Some((model, h)) => {
                    @let segment = model.segments.get(&h.segment);
                    @let monthly = h.power_feature_monthly_uses.unwrap_or(0.0);
                    @let bucket = segment.and_then(|s| {
                        s.buckets.iter().find(|b| Some(b.renewal_rate) == h.expected_renewal_rate)
                            .or_else(|| s.buckets.get(bucket_of(&s.cut_points, monthly)))
                    });
                    @match (h.power_feature.as_deref(), bucket) {
                        (Some(feature), Some(b)) => p.lead {
                            "Accounts in " (format::humanize(&h.segment)) " that use "
                            strong data-power-feature=(feature) { (feature) } " " (usage_phrase(b)) " renewed "
                            strong data-rate=[h.expected_renewal_rate] { (format::percent(h.expected_renewal_rate)) } " of the time"
                            " (" (format::count(b.decided as i64, "renewal", "renewals")) " decided); " (f.name) " uses it "
                            strong data-field="power_feature_monthly_uses" data-value=(monthly) { (times(monthly)) } " a month."
                        },
                        _ => p.lead { "This segment has no power feature yet: its tier comes from the pooled model." },
                    }
                    @if h.usage_tier != h.tier && h.usage_tier.is_some() {
                        p { "Its use of late points to " (super::tier_badge(h.usage_tier.as_deref())) "; the tier changes once that has held " (format::days(i64::from(v.hold_days))) "." }
                    }
                }
            }
            @let reasons = reasons(v, as_of, currency);
            @if !reasons.is_empty() {
                ul.reasons { @for r in &reasons { li { (r) } } }
            }
            p.next { strong { "Next step: " } (next_step(v, as_of)) }
            p.actions {
                @if writable {
                    a.button href="#new-task" { "Create a task" }
                    a.button href="#log-activity" { "Log an activity" }
                }
                a.button href=(format!("{path}/review")) { "Open the quarterly review" }
            }
        }
    }
}

/// The other reasons, strongest first: renewal near, seats unused, escalations, detractors,
/// silence, and the score's heaviest negative measures.
fn reasons(v: &View, as_of: NaiveDate, currency: &str) -> Vec<Markup> {
    let f = &v.facts;
    let row = &v.row;
    let mut out = Vec::new();
    if let Some(day) = f.renewal {
        let left = (day - as_of).num_days();
        if (0..RENEWAL_SOON_DAYS).contains(&left) {
            out.push(html! { "Renews in " strong { (format::days(left)) } " (" (format::day(day)) "), " (format::money(f.arr, currency)) " ARR." });
        }
    }
    if let Some(use_) = row.license_utilization.filter(|u| *u < LOW_LICENCE_USE) {
        out.push(html! { "Only " strong { (format::percent(Some(use_))) } " of its " (f.seats) " paid seats are in use (30 days)." });
    }
    if row.escalations_open > 0 {
        out.push(html! { strong { (format::count(row.escalations_open, "escalation", "escalations")) } " open." });
    }
    if let Some(nps) = row.nps.filter(|n| *n < 0.0) {
        out.push(html! { "NPS " strong { (format::number(Some(nps), 0)) } ": more detractors than promoters." });
    }
    let quiet = f.last_contact_day().map(|d| (as_of - d).num_days());
    match quiet {
        Some(days) if days > QUIET_DAYS => {
            out.push(html! { "No contact for " (format::days(days)) "." })
        }
        None => out.push(html! { "No contact logged yet." }),
        _ => {}
    }
    if let Some((_, h)) = v.health.as_ref() {
        let mut negative: Vec<_> = h
            .components
            .iter()
            .filter(|c| c.contribution.is_some_and(|x| x < -1.0))
            .collect();
        negative.sort_by(|a, b| {
            a.contribution
                .partial_cmp(&b.contribution)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for c in negative.into_iter().take(COMPONENTS_LISTED) {
            out.push(html! {
                (format::label(&c.measure)) " (" (format::measure_value(&c.measure, &c.value)) ") takes "
                (format::number(c.contribution.map(f64::abs), 0)) " points off the health score."
            });
        }
    }
    out
}

/// The next step: the soonest open task (rules and playbooks make them), else what the
/// tier and the renewal ask for.
fn next_step(v: &View, as_of: NaiveDate) -> Markup {
    if let Some(task) = v.tasks.iter().find(|t| t.status == "open") {
        return html! {
            span data-next="task" { (task.title) }
            @if let Some(due) = task.due.as_deref() { " (due " (format::day_text(due)) ")" }
            "."
        };
    }
    let Some((model, h)) = v.health.as_ref() else {
        return html! { span data-next="contact" { "Log a check-in call to learn how they are doing." } };
    };
    let renewing_soon = v
        .facts
        .renewal
        .is_some_and(|d| (0..RENEWAL_SOON_DAYS).contains(&(d - as_of).num_days()));
    let at_risk = matches!(h.tier.as_deref(), Some("red" | "orange"));
    if at_risk && renewing_soon {
        return html! { span data-next="save" { "Make a save plan with the sponsor before the renewal." } };
    }
    let segment = model.segments.get(&h.segment);
    let monthly = h.power_feature_monthly_uses.unwrap_or(0.0);
    if let (Some(feature), Some(s)) = (h.power_feature.as_deref(), segment) {
        let at = bucket_of(&s.cut_points, monthly);
        if let Some(better) = s.buckets.get(at + 1) {
            return html! {
                span data-next="adopt" {
                    "Help them use " (feature) " " (usage_phrase(better)) ": accounts that do renewed "
                    (format::percent(Some(better.renewal_rate))) " of the time."
                }
            };
        }
    }
    html! { span data-next="contact" { "Keep in touch: they use the product as the accounts that renew most do." } }
}
