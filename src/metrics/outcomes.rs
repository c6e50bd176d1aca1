//! Outcomes per period and segment, in money and counts (docs/metrics.md, Outcomes).
//!
//! For a period [a, b): an account is active on a day when a subscription is in force on
//! it; starting ARR is the ARR in force at `a` of accounts active at `a`. Accounts active at
//! both `a` and `b` continue: the change of their ARR in force is expansion (up) or
//! contraction (down); a continuing account holding a product at `b` it did not hold at `a`
//! counts in `accounts_added_product`. Accounts active at `a` but not at `b` churned: their
//! starting ARR is churned ARR. Accounts active at `b` but not at `a` are new business
//! (`new_accounts`, `new_arr`), outside the retention ratios. Renewals are subscriptions
//! whose end date falls in the period with outcome `renewed` (count and their ARR).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, NaiveDate};
use serde_json::{json, Value};

use super::activity::{day_date, day_number};
use super::Subscription;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Whole,
    Month,
    Quarter,
}

impl Interval {
    pub fn parse(text: &str) -> Option<Interval> {
        match text {
            "whole" => Some(Interval::Whole),
            "month" => Some(Interval::Month),
            "quarter" => Some(Interval::Quarter),
            _ => None,
        }
    }
}

/// Splits [from, to) into calendar months or quarters (the first and last may be partial).
pub fn periods(from: NaiveDate, to: NaiveDate, interval: Interval) -> Vec<(NaiveDate, NaiveDate)> {
    let months = match interval {
        Interval::Whole => return vec![(from, to)],
        Interval::Month => 1,
        Interval::Quarter => 3,
    };
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let month0 = start.month0() / months * months;
        let first = NaiveDate::from_ymd_opt(start.year(), month0 + 1, 1).expect("valid");
        let next = first
            .checked_add_months(chrono::Months::new(months))
            .expect("in range");
        let end = next.min(to);
        out.push((start, end));
        start = end;
    }
    out
}

#[derive(Debug, Default, Clone)]
struct Tally {
    accounts_start: i64,
    accounts_end: i64,
    starting_arr: f64,
    renewals: i64,
    renewals_arr: f64,
    expansion_arr: f64,
    accounts_added_product: i64,
    contraction_arr: f64,
    churned_accounts: i64,
    churned_arr: f64,
    continuing: i64,
    new_accounts: i64,
    new_arr: f64,
}

fn arr_at(subs: &[Subscription], day: i32) -> f64 {
    subs.iter().filter(|s| s.in_force(day)).map(|s| s.arr).sum()
}

fn products_at(subs: &[Subscription], day: i32) -> BTreeSet<&str> {
    subs.iter()
        .filter(|s| s.in_force(day))
        .map(|s| s.product.as_deref().unwrap_or(""))
        .collect()
}

impl Tally {
    fn add(&mut self, subs: &[Subscription], a: i32, b: i32) {
        let active_a = subs.iter().any(|s| s.in_force(a));
        let active_b = subs.iter().any(|s| s.in_force(b));
        let (arr_a, arr_b) = (arr_at(subs, a), arr_at(subs, b));
        for s in subs.iter().filter(|s| {
            s.end.is_some_and(|end| end >= a && end < b) && s.outcome.as_deref() == Some("renewed")
        }) {
            self.renewals += 1;
            self.renewals_arr += s.arr;
        }
        if active_b {
            self.accounts_end += 1;
        }
        match (active_a, active_b) {
            (true, true) => {
                self.accounts_start += 1;
                self.starting_arr += arr_a;
                self.continuing += 1;
                self.expansion_arr += (arr_b - arr_a).max(0.0);
                self.contraction_arr += (arr_a - arr_b).max(0.0);
                if !products_at(subs, b).is_subset(&products_at(subs, a)) {
                    self.accounts_added_product += 1;
                }
            }
            (true, false) => {
                self.accounts_start += 1;
                self.starting_arr += arr_a;
                self.churned_accounts += 1;
                self.churned_arr += arr_a;
            }
            (false, true) => {
                self.new_accounts += 1;
                self.new_arr += arr_b;
            }
            (false, false) => {}
        }
    }

    fn to_json(&self, segment: &str, from: NaiveDate, to: NaiveDate) -> Value {
        let start = self.starting_arr;
        let ratio = |x: f64| if start > 0.0 { Some(x / start) } else { None };
        json!({
            "segment": segment,
            "from": from.to_string(),
            "to": to.to_string(),
            "accounts_start": self.accounts_start,
            "accounts_end": self.accounts_end,
            "starting_arr": start,
            "renewals": self.renewals,
            "renewals_arr": self.renewals_arr,
            "expansion_arr": self.expansion_arr,
            "accounts_added_product": self.accounts_added_product,
            "contraction_arr": self.contraction_arr,
            "churned_accounts": self.churned_accounts,
            "churned_arr": self.churned_arr,
            "new_accounts": self.new_accounts,
            "new_arr": self.new_arr,
            "grr": ratio(start - self.contraction_arr - self.churned_arr),
            "nrr": ratio(start - self.contraction_arr - self.churned_arr + self.expansion_arr),
            "logo_retention": if self.accounts_start > 0 { Some(self.continuing as f64 / self.accounts_start as f64) } else { None },
        })
    }
}

/// One row per period and segment (`by_segment`), or per period over all accounts, in
/// period order then segment order. `accounts` holds (segment, subscriptions) per account.
pub fn outcomes(
    accounts: &[(String, Vec<Subscription>)],
    periods: &[(NaiveDate, NaiveDate)],
    by_segment: bool,
) -> Vec<Value> {
    let mut rows = Vec::new();
    for (from, to) in periods {
        let (a, b) = (day_number(*from), day_number(*to));
        let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
        for (segment, subs) in accounts {
            let key = if by_segment { segment.as_str() } else { "all" };
            tallies.entry(key).or_default().add(subs, a, b);
        }
        for (segment, tally) in tallies {
            rows.push(tally.to_json(segment, day_date(a), day_date(b)));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn periods_follow_the_calendar() {
        let q = periods(d("2026-02-15"), d("2026-08-01"), Interval::Quarter);
        assert_eq!(
            q,
            vec![
                (d("2026-02-15"), d("2026-04-01")),
                (d("2026-04-01"), d("2026-07-01")),
                (d("2026-07-01"), d("2026-08-01"))
            ]
        );
        assert_eq!(
            periods(d("2026-01-01"), d("2026-03-01"), Interval::Month).len(),
            2
        );
    }
}
