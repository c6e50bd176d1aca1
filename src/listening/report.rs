//! Listening over the store: every comment stream in one list (survey comments, ticket subjects,
//! suggestion titles, churn feedback, CSM notes), notes, the churn-reason report, and theme
//! statistics (count, accounts, their ARR, trend per quarter, churned vs retained share,
//! sample quotes) over all comments, detractors' or chosen accounts'.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::NaiveDate;
use serde_json::{json, Value};

use super::{self as listening, Comment};
use crate::metrics::config::CurrencyConfig;
use crate::records::Cell;
use crate::share::Quarter;
use crate::store::{Note, StoreError};
use crate::store::{Notes, Records};

/// Longest note.
pub const NOTE_CHARS_MAX: usize = 4_000;

/// What a CSM logs against an account; each counts as contact.
pub const ACTIVITY_KINDS: &[&str] = &["note", "call", "meeting", "email"];

/// Checks a logged activity: its kind, its text's length, and its time (not in the future,
/// nor before 2000); the message names the field.
pub fn check_activity(
    kind: &str,
    text: &str,
    at_ms: i64,
    now_ms: i64,
) -> Result<(), (String, String)> {
    if !ACTIVITY_KINDS.contains(&kind) {
        return Err((
            "kind".into(),
            format!("one of {}", ACTIVITY_KINDS.join(", ")),
        ));
    }
    if text.trim().is_empty() || text.chars().count() > NOTE_CHARS_MAX {
        return Err(("text".into(), format!("1 to {NOTE_CHARS_MAX} characters")));
    }
    // A minute's grace for clocks apart.
    if at_ms > now_ms + 60_000 || at_ms < 946_684_800_000 {
        return Err(("at".into(), "a time from 2000 until now".into()));
    }
    Ok(())
}

impl Note {
    fn to_json(&self) -> Value {
        json!({"id": self.id, "kind": self.kind, "author": self.author, "person": self.person, "text": self.text, "created_at": crate::ingest::format_timestamp(self.created_ms)})
    }
}

fn text(cell: &Cell) -> Option<String> {
    cell.as_text().map(str::to_string)
}

/// The text of a non-empty cell.
fn said(cell: &Cell) -> Option<String> {
    cell.as_text().filter(|t| !t.is_empty()).map(str::to_string)
}

/// The day (YYYY-MM-DD) of a stored date or RFC 3339 time.
fn day_of(cell: &Cell) -> String {
    cell.as_text()
        .map(|t| t.chars().take(10).collect())
        .unwrap_or_default()
}

/// Every comment, oldest first (then by source, account, person and text).
pub fn comments(source: &(impl Records + Notes + ?Sized)) -> Result<Vec<Comment>, StoreError> {
    let mut all = Vec::new();
    let mut add =
        |from: &str, account: &Cell, person: Option<String>, date: String, said: Option<String>| {
            if let (Some(account_id), Some(text)) = (account.as_text(), said) {
                all.push(Comment {
                    source: from.to_string(),
                    account_id: account_id.to_string(),
                    person,
                    date,
                    text,
                });
            }
        };
    for r in source.record_rows(
        "survey_responses",
        &["account_id", "user_id", "answered_at", "comment"],
    )? {
        add("survey", &r[0], text(&r[1]), day_of(&r[2]), said(&r[3]));
    }
    for r in source.record_rows(
        "tickets",
        &["account_id", "user_id", "opened_at", "subject"],
    )? {
        add("ticket", &r[0], text(&r[1]), day_of(&r[2]), said(&r[3]));
    }
    for r in source.record_rows(
        "suggestions",
        &["account_id", "user_id", "created_at", "title"],
    )? {
        add(
            "suggestion",
            &r[0],
            text(&r[1]),
            day_of(&r[2]),
            Some(text(&r[3]).unwrap_or_default()),
        );
    }
    for r in source.record_rows(
        "subscriptions",
        &["account_id", "end_date", "start_date", "feedback"],
    )? {
        let date = if r[1].as_text().is_some() {
            day_of(&r[1])
        } else {
            day_of(&r[2])
        };
        add("churn", &r[0], None, date, said(&r[3]));
    }
    for note in source.stored_notes(None)? {
        all.push(Comment {
            source: "note".into(),
            account_id: note.account_id,
            person: note.person,
            date: crate::ingest::format_timestamp(note.created_ms)
                .chars()
                .take(10)
                .collect(),
            text: note.text,
        });
    }
    all.sort_by(|a, b| {
        (&a.date, &a.source, &a.account_id, &a.person, &a.text).cmp(&(
            &b.date,
            &b.source,
            &b.account_id,
            &b.person,
            &b.text,
        ))
    });
    Ok(all)
}

/// An account's notes, newest first.
pub fn notes(source: &(impl Notes + ?Sized), account: &str) -> Result<Vec<Value>, StoreError> {
    let mut notes = source.stored_notes(Some(account))?;
    notes.sort_by_key(|n| std::cmp::Reverse((n.created_ms, n.id)));
    Ok(notes.iter().map(Note::to_json).collect())
}

/// Sets the churn reason and feedback of a subscription of `account`; false when the
/// account has no such subscription. A new version of the record, on either store.
pub fn set_reason(
    store: &mut dyn Records,
    account: &str,
    subscription: &str,
    reason: Option<&str>,
    feedback: Option<&str>,
) -> Result<bool, StoreError> {
    let kind = crate::records::kind("subscriptions").expect("invariant: a record kind");
    let Some(mut record) = store.get(kind, &[subscription.to_string()])? else {
        return Ok(false);
    };
    if record.get(kind, "account_id").as_text() != Some(account) {
        return Ok(false);
    }
    for (column, value) in [("reason", reason), ("feedback", feedback)] {
        let index = kind
            .columns
            .iter()
            .position(|c| c.name == column)
            .expect("invariant: a column of subscriptions");
        record.cells[index] = value.map_or(Cell::Null, |v| Cell::Text(v.to_string()));
    }
    let mut target = store.import_target(kind)?;
    target.upsert(kind, &record)?;
    target.commit()?;
    Ok(true)
}

/// Churn and downgrade reasons of terms ending in [from, to), per quarter (of the end),
/// segment and reason: churns (outcome `churned`) with the ARR lost, and downgrades (a
/// renewed term with a reason) with the ARR the next term of the same product lost. Terms
/// without a reason count under `unknown`.
// Over 100 lines: Pairs each term with the next and totals by period, segment and reason in one pass; moves to `listening` in issue 29 item 1.
#[allow(clippy::too_many_lines)]
pub fn churn_reasons(
    source: &(impl Records + ?Sized),
    from: NaiveDate,
    to: NaiveDate,
    currency: &CurrencyConfig,
) -> Result<Vec<Value>, StoreError> {
    let segments: HashMap<String, String> = source
        .record_rows("accounts", &["account_id", "segment", "plan"])?
        .into_iter()
        .filter_map(|r| {
            Some((
                text(&r[0])?,
                text(&r[1])
                    .or_else(|| text(&r[2]))
                    .unwrap_or_else(|| "unknown".into()),
            ))
        })
        .collect();
    let terms = source.record_rows(
        "subscriptions",
        &[
            "account_id",
            "product",
            "arr",
            "currency",
            "start_date",
            "end_date",
            "outcome",
            "reason",
        ],
    )?;
    // Each account's terms of each product by start, for the next term of a downgrade.
    let mut by_product: HashMap<(&str, &str), Vec<&Vec<Cell>>> = HashMap::new();
    for r in &terms {
        if let Some(account) = r[0].as_text() {
            by_product
                .entry((account, r[1].as_text().unwrap_or("")))
                .or_default()
                .push(r);
        }
    }
    for list in by_product.values_mut() {
        list.sort_by(|a, b| a[4].as_text().cmp(&b[4].as_text()));
    }
    let (from, to) = (from.to_string(), to.to_string());
    let mut rows = Vec::new();
    for r in &terms {
        let (Some(account), Some(end), Some(outcome)) =
            (r[0].as_text(), r[5].as_text(), r[6].as_text())
        else {
            continue;
        };
        let Some(segment) = segments.get(account) else {
            continue;
        };
        if end < from.as_str()
            || end >= to.as_str()
            || !(outcome == "churned" || (outcome == "renewed" && r[7].as_text().is_some()))
        {
            continue;
        }
        let next = by_product[&(account, r[1].as_text().unwrap_or(""))]
            .iter()
            .find(|n| n[4].as_text().is_some_and(|start| start > end));
        rows.push((
            account.to_string(),
            segment.clone(),
            r[2].as_f64(),
            text(&r[3]),
            end.to_string(),
            outcome.to_string(),
            text(&r[7]),
            next.and_then(|n| n[2].as_f64()),
            next.and_then(|n| text(&n[3])),
        ));
    }
    // (period, segment, reason, movement) -> (accounts, count, money)
    type Key = (String, String, String, &'static str);
    let mut groups: BTreeMap<Key, (BTreeSet<String>, i64, f64)> = BTreeMap::new();
    for row in rows {
        let (account, segment, arr, code, end, outcome, reason, next_arr, next_code) = row;
        let Ok(end) = end.parse::<NaiveDate>() else {
            continue;
        };
        let money = |amount: Option<f64>, code: Option<&str>| {
            crate::metrics::report_arr(amount, code, currency).map_err(StoreError::Invalid)
        };
        let arr = money(arr, code.as_deref())?;
        let (kind, lost) = if outcome == "churned" {
            ("churn", arr)
        } else {
            (
                "downgrade",
                (arr - money(next_arr, next_code.as_deref())?).max(0.0),
            )
        };
        let key = (
            Quarter::of(end).to_string(),
            segment,
            reason.unwrap_or_else(|| "unknown".into()),
            kind,
        );
        let entry = groups.entry(key).or_default();
        entry.0.insert(account);
        entry.1 += 1;
        entry.2 += lost;
    }
    Ok(groups
        .into_iter()
        .map(|((quarter, segment, reason, kind), (accounts, terms, lost))| {
            json!({"quarter": quarter, "segment": segment, "reason": reason, "kind": kind, "accounts": accounts.len(), "terms": terms, "arr_lost": lost})
        })
        .collect())
}

/// Which comments a theme report covers.
pub enum Among<'a> {
    All,
    /// People whose latest NPS answer is 0-6 (their comments of every source).
    Detractors,
    /// Comments about these accounts (e.g. those red now).
    Accounts(&'a HashSet<String>),
}

fn share(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Theme reports, one per entry of `among`, from one load of the comments and one theme
/// pass. Each lists its themes most comments first: count, accounts, ARR of those accounts
/// now, per quarter counts, share of comments from churned accounts (no contract in force
/// on `today` and a churned term) and from retained ones, the share of churned and of
/// retained accounts raising it, mean sentiment, keywords and three recent quotes. `arr`
/// maps account to its ARR in force.
// Over 100 lines: Reads every comment stream and scores themes in one pass; moves to `listening` in issue 29 item 1.
#[allow(clippy::too_many_lines)]
pub fn themes(
    source: &(impl Records + Notes + ?Sized),
    rules: &BTreeMap<String, String>,
    today: NaiveDate,
    among: &[Among],
    arr: &HashMap<String, f64>,
) -> Result<Vec<Vec<Value>>, StoreError> {
    let all = comments(source)?;
    let (themed, keywords) = listening::themes(&all, rules);
    let detractors: HashSet<String> = if among.iter().any(|a| matches!(a, Among::Detractors)) {
        // Each person's latest NPS answers (all of them, if several share that time).
        let mut latest: HashMap<String, (String, Vec<f64>)> = HashMap::new();
        for r in source.record_rows(
            "survey_responses",
            &["user_id", "kind", "score", "answered_at"],
        )? {
            let (Some(user), Some("nps"), Some(score), Some(at)) =
                (text(&r[0]), r[1].as_text(), r[2].as_f64(), text(&r[3]))
            else {
                continue;
            };
            let entry = latest
                .entry(user)
                .or_insert_with(|| (at.clone(), Vec::new()));
            if at > entry.0 {
                *entry = (at, vec![score]);
            } else if at == entry.0 {
                entry.1.push(score);
            }
        }
        latest
            .into_iter()
            .filter(|(_, (_, scores))| scores.iter().any(|&s| s <= 6.0))
            .map(|(user, _)| user)
            .collect()
    } else {
        HashSet::new()
    };
    // Accounts with a churned term and no term in force today.
    let day = today.to_string();
    let terms = source.record_rows(
        "subscriptions",
        &["account_id", "outcome", "start_date", "end_date"],
    )?;
    let in_force: HashSet<&str> = terms
        .iter()
        .filter(|r| {
            r[2].as_text().is_some_and(|start| start <= day.as_str())
                && r[3].as_text().is_none_or(|end| end >= day.as_str())
        })
        .filter_map(|r| r[0].as_text())
        .collect();
    let churned: HashSet<String> = terms
        .iter()
        .filter(|r| r[1].as_text() == Some("churned"))
        .filter_map(|r| r[0].as_text())
        .filter(|a| !in_force.contains(a))
        .map(str::to_string)
        .collect();
    let report = |among: &Among| -> Vec<Value> {
        #[derive(Default)]
        struct Tally<'c> {
            count: usize,
            accounts: BTreeSet<&'c str>,
            quarters: BTreeMap<String, usize>,
            churned: usize,
            sentiment: f64,
            quotes: Vec<&'c Comment>,
        }
        let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
        // Accounts with any comment in scope, churned or retained: what a theme's reach is
        // measured against.
        let mut voiced: (HashSet<&str>, HashSet<&str>) = (HashSet::new(), HashSet::new());
        for (comment, t) in all.iter().zip(&themed) {
            let included = match among {
                Among::All => true,
                Among::Detractors => comment
                    .person
                    .as_ref()
                    .is_some_and(|p| detractors.contains(p)),
                Among::Accounts(set) => set.contains(&comment.account_id),
            };
            if !included {
                continue;
            }
            if churned.contains(&comment.account_id) {
                voiced.0.insert(comment.account_id.as_str());
            } else {
                voiced.1.insert(comment.account_id.as_str());
            }
            let tally = tallies.entry(t.theme.as_str()).or_default();
            tally.count += 1;
            tally.accounts.insert(comment.account_id.as_str());
            if let Ok(day) = comment.date.parse::<NaiveDate>() {
                *tally
                    .quarters
                    .entry(Quarter::of(day).to_string())
                    .or_default() += 1;
            }
            tally.churned += usize::from(churned.contains(&comment.account_id));
            tally.sentiment += t.sentiment;
            tally.quotes.push(comment);
        }
        let mut out: Vec<Value> = tallies
            .into_iter()
            .map(|(theme, t)| {
                let n = t.count as f64;
                let quotes: Vec<Value> = t.quotes.iter().rev().take(3).map(|c| json!({"text": c.text, "source": c.source, "account_id": c.account_id, "date": c.date})).collect();
                json!({
                    "theme": theme,
                    "comments": t.count,
                    "accounts": t.accounts.len(),
                    "arr": t.accounts.iter().map(|a| arr.get(*a).copied().unwrap_or(0.0)).sum::<f64>(),
                    "per_quarter": t.quarters,
                    "share_churned": t.churned as f64 / n,
                    "share_retained": (t.count - t.churned) as f64 / n,
                    // Of the churned (retained) accounts that said anything, the share that
                    // raised this theme.
                    "churned_accounts_raising": share(t.accounts.iter().filter(|a| churned.contains(**a)).count(), voiced.0.len()),
                    "retained_accounts_raising": share(t.accounts.iter().filter(|a| !churned.contains(**a)).count(), voiced.1.len()),
                    "sentiment": t.sentiment / n,
                    "keywords": keywords.get(theme).cloned().unwrap_or_default(),
                    "quotes": quotes,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            b["comments"]
                .as_u64()
                .cmp(&a["comments"].as_u64())
                .then_with(|| a["theme"].as_str().cmp(&b["theme"].as_str()))
        });
        out
    };
    Ok(among.iter().map(report).collect())
}
