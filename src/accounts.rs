//! What the dashboard shows beside the metrics: each account's name, owner, current ARR,
//! seats and renewal date, last contact, and its health from the stored daily history.

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::health::model::Settings;
use crate::metrics::activity::{day_date, day_number};
use crate::metrics::config::MetricsConfig;
use crate::metrics::Row;
use crate::records::Cell;
use crate::store::StoreError;
use crate::store::{Activity, History, Models, Notes, Records};

/// One day of an account's stored health.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthDay {
    pub day: NaiveDate,
    pub score: Option<f64>,
    pub tier: Option<String>,
    pub expected_rate: Option<f64>,
}

/// An account as the portfolio lists it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub account_id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub segment: String,
    pub plan: Option<String>,
    pub csm_id: Option<String>,
    pub csm_name: Option<String>,
    /// ARR of the contracts in force on the day, in the report currency.
    pub arr: f64,
    pub seats: i64,
    /// The earliest end of a contract in force on the day.
    pub renewal: Option<NaiveDate>,
    /// The start of the account's first contract.
    pub customer_since: Option<NaiveDate>,
    /// The latest ticket opened, survey answered or activity logged (a note, call, meeting
    /// or email), up to the day.
    pub last_contact: Option<String>,
    pub health: Option<HealthDay>,
    /// The stored health seven days before `health`, for the trend.
    pub week_before: Option<HealthDay>,
}

/// Days to a renewal under which the pages call it out and a task's priority rises.
pub const RENEWAL_SOON_DAYS: i64 = 90;

impl Facts {
    /// The (UTC) day of the last contact.
    pub fn last_contact_day(&self) -> Option<NaiveDate> {
        self.last_contact.as_deref()?.get(..10)?.parse().ok()
    }

    /// A customer on the day: a contract in force (a holding without one is not).
    pub fn in_force(&self) -> bool {
        self.renewal.is_some() || self.arr > 0.0
    }

    /// ARR times the chance of not renewing: what the portfolio sorts by first.
    pub fn revenue_at_risk(&self) -> f64 {
        self.arr
            * (1.0
                - self
                    .health
                    .as_ref()
                    .and_then(|h| h.expected_rate)
                    .unwrap_or(1.0))
    }
}

/// Days between today's health and the stored one the trend arrow compares with.
pub const TREND_DAYS: i32 = 7;

/// Every account's facts on `as_of`. Health is assessed now from `snapshot` (the metrics
/// snapshot of `as_of`) under the model in force, exactly as the health API does; the
/// stored daily history gives the score a week earlier, for the trend.
// Over 100 lines: Gathers every fact a page shows in one pass over the records; moves to a dashboard-facts module in issue 29 item 1.
#[allow(clippy::too_many_lines)]
pub fn facts(
    source: &(impl Activity + Records + Models + History + Notes + ?Sized),
    as_of: NaiveDate,
    snapshot: &[Row],
    settings: Settings,
) -> Result<Vec<Facts>, StoreError> {
    let currency = settings.currency;
    let text = |cell: &Cell| cell.as_text().map(str::to_string);
    let csm_names: HashMap<String, Option<String>> = source
        .record_rows("csms", &["csm_id", "name"])?
        .iter()
        .filter_map(|r| Some((text(&r[0])?, text(&r[1]))))
        .collect();
    let mut out: Vec<Facts> = source
        .record_rows(
            "accounts",
            &["account_id", "name", "parent_id", "segment", "plan", "csm"],
        )?
        .iter()
        .filter_map(|r| {
            let account_id = text(&r[0])?;
            let plan = text(&r[4]);
            let csm_id = text(&r[5]);
            Some(Facts {
                name: text(&r[1]).unwrap_or_else(|| account_id.clone()),
                parent_id: text(&r[2]),
                segment: text(&r[3])
                    .or_else(|| plan.clone())
                    .unwrap_or_else(|| "unknown".into()),
                plan,
                csm_name: csm_id
                    .as_ref()
                    .and_then(|c| csm_names.get(c).cloned().flatten()),
                csm_id,
                account_id,
                ..Facts::default()
            })
        })
        .collect();
    out.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    let index: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, f)| (f.account_id.clone(), i))
        .collect();

    // Dates are stored as YYYY-MM-DD and times as RFC 3339 UTC text: text order is time order.
    let day = as_of.to_string();
    for r in source.record_rows(
        "subscriptions",
        &[
            "account_id",
            "arr",
            "currency",
            "seats",
            "start_date",
            "end_date",
        ],
    )? {
        let Some(&i) = r[0].as_text().and_then(|a| index.get(a)) else {
            continue;
        };
        let facts = &mut out[i];
        if let Some(start) = r[4].as_text().and_then(|s| s.parse::<NaiveDate>().ok()) {
            facts.customer_since =
                Some(facts.customer_since.map_or(start, |since| since.min(start)));
        }
        let in_force = r[4].as_text().is_some_and(|start| start <= day.as_str())
            && r[5].as_text().is_none_or(|end| end >= day.as_str());
        if !in_force {
            continue;
        }
        if let Some(arr) = r[1].as_f64() {
            facts.arr += crate::metrics::report_arr(Some(arr), r[2].as_text(), currency)
                .map_err(StoreError::Invalid)?;
        }
        facts.seats += r[3].as_i64().unwrap_or(0);
        if let Some(end) = r[5].as_text().and_then(|e| e.parse::<NaiveDate>().ok()) {
            facts.renewal = Some(facts.renewal.map_or(end, |r| r.min(end)));
        }
    }

    let through = format!("{day}T23:59:59.999Z");
    let contacts = source
        .record_rows("tickets", &["account_id", "opened_at"])?
        .into_iter()
        .chain(source.record_rows("survey_responses", &["account_id", "answered_at"])?);
    for r in contacts {
        let (Some(&i), Some(at)) = (r[0].as_text().and_then(|a| index.get(a)), r[1].as_text())
        else {
            continue;
        };
        if at <= through.as_str() && out[i].last_contact.as_deref().is_none_or(|last| at > last) {
            out[i].last_contact = Some(at.to_string());
        }
    }
    // Logged activities count as contact up to the day's end.
    let through_ms = (as_of + chrono::Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
        - 1;
    for (account, last_ms) in source.last_notes(through_ms)? {
        let Some(&i) = index.get(&account) else {
            continue;
        };
        let at = crate::ingest::format_timestamp(last_ms);
        if out[i]
            .last_contact
            .as_deref()
            .is_none_or(|last| at.as_str() > last)
        {
            out[i].last_contact = Some(at);
        }
    }

    if let Some(model) = crate::health::history::model_for(source, Some(as_of))? {
        let mut assessed = crate::health::history::assess_all(
            source,
            snapshot,
            &model,
            day_number(as_of),
            settings,
        )?;
        // The tier shown is the held one, the same the history and its changes record.
        crate::health::history::apply_held(source, day_number(as_of), &mut assessed, settings)?;
        for (row, h) in snapshot.iter().zip(assessed) {
            let Some(&i) = Some(row.account_id.as_str()).and_then(|id| index.get(id)) else {
                continue;
            };
            out[i].health = Some(HealthDay {
                day: as_of,
                score: h.health_score,
                tier: h.tier.clone(),
                expected_rate: h.expected_renewal_rate,
            });
        }
    }
    let earlier = day_number(as_of) - TREND_DAYS;
    for (account, h) in source.day_history(earlier)? {
        let Some(&i) = index.get(&account) else {
            continue;
        };
        out[i].week_before = Some(HealthDay {
            day: day_date(earlier),
            score: h.score,
            tier: h.tier,
            expected_rate: h.expected_rate,
        });
    }
    Ok(out)
}

/// Every CSM record: (id, name), by name.
pub fn csms(source: &(impl Records + ?Sized)) -> Result<Vec<(String, String)>, StoreError> {
    let mut out: Vec<(String, String)> = source
        .record_rows("csms", &["csm_id", "name"])?
        .iter()
        .filter_map(|r| {
            let id = r[0].as_text()?.to_string();
            Some((id.clone(), r[1].as_text().map_or(id, str::to_string)))
        })
        .collect();
    out.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    Ok(out)
}

/// An account's uses of each feature over [from, to] (account-local days), most used first.
pub fn feature_uses(
    source: &(impl Activity + ?Sized),
    account: &str,
    from: NaiveDate,
    to: NaiveDate,
    config: &MetricsConfig,
) -> Result<Vec<(String, i64)>, StoreError> {
    let spans = [(account.to_string(), day_number(from), day_number(to))];
    let mut uses: Vec<(String, i64)> = source
        .feature_uses(&spans, config)?
        .pop()
        .unwrap_or_default()
        .into_iter()
        .collect();
    uses.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(uses)
}
