//! Listening, stored: every comment stream in one list (survey comments, ticket subjects,
//! suggestion titles, churn feedback, CSM notes), notes, the churn-reason report, and theme
//! statistics (count, accounts, their ARR, trend per quarter, churned vs retained share,
//! sample quotes) over all comments, detractors' or chosen accounts'.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::NaiveDate;
use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::StoreError;
use crate::config::CurrencyConfig;
use crate::listening::{self, Comment};
use crate::share::Quarter;

/// Longest note.
pub const NOTE_CHARS_MAX: usize = 4_000;

/// Every comment, oldest first.
pub fn comments(conn: &Connection) -> Result<Vec<Comment>, StoreError> {
    let mut query = conn.prepare(
        "SELECT 'survey', account_id, user_id, substr(answered_at, 1, 10), comment FROM survey_responses WHERE comment IS NOT NULL AND comment != ''
         UNION ALL SELECT 'ticket', account_id, user_id, substr(opened_at, 1, 10), subject FROM tickets WHERE subject IS NOT NULL AND subject != ''
         UNION ALL SELECT 'suggestion', account_id, user_id, substr(created_at, 1, 10), title FROM suggestions
         UNION ALL SELECT 'churn', account_id, NULL, COALESCE(end_date, start_date), feedback FROM subscriptions WHERE feedback IS NOT NULL AND feedback != ''
         UNION ALL SELECT 'note', account_id, person, date(created_ms / 1000, 'unixepoch'), text FROM notes
         ORDER BY 4, 1, 2",
    )?;
    let rows = query.query_map([], |r| Ok(Comment { source: r.get(0)?, account_id: r.get(1)?, person: r.get(2)?, date: r.get(3)?, text: r.get(4)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds a CSM note to an account; `None` when there is no such account.
pub fn add_note(conn: &Connection, account: &str, author: &str, person: Option<&str>, text: &str) -> Result<Option<i64>, StoreError> {
    let known: i64 = conn.query_row("SELECT COUNT(*) FROM accounts WHERE account_id = ?1", [account], |r| r.get(0))?;
    if known == 0 {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO notes (account_id, author, person, text, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![account, author, person, text, chrono::Utc::now().timestamp_millis()],
    )?;
    Ok(Some(conn.last_insert_rowid()))
}

/// An account's notes, newest first.
pub fn notes(conn: &Connection, account: &str) -> Result<Vec<Value>, StoreError> {
    let mut query = conn.prepare("SELECT id, author, person, text, created_ms FROM notes WHERE account_id = ?1 ORDER BY id DESC")?;
    let rows = query.query_map([account], |r| {
        Ok(json!({"id": r.get::<_, i64>(0)?, "author": r.get::<_, String>(1)?, "person": r.get::<_, Option<String>>(2)?,
                  "text": r.get::<_, String>(3)?, "created_at": crate::ingest::format_timestamp(r.get(4)?)}))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sets a subscription's churn reason and feedback; false when there is no such subscription.
pub fn set_reason(conn: &Connection, subscription: &str, reason: Option<&str>, feedback: Option<&str>) -> Result<bool, StoreError> {
    Ok(conn.execute("UPDATE subscriptions SET reason = ?2, feedback = ?3 WHERE subscription_id = ?1", params![subscription, reason, feedback])? > 0)
}

/// Churn and downgrade reasons of terms ending in [from, to), per quarter (of the end),
/// segment and reason: churns (outcome `churned`) with the ARR lost, and downgrades (a
/// renewed term with a reason) with the ARR the next term of the same product lost. Terms
/// without a reason count under `unknown`.
pub fn churn_reasons(conn: &Connection, from: NaiveDate, to: NaiveDate, currency: &CurrencyConfig) -> Result<Vec<Value>, StoreError> {
    let mut query = conn.prepare(
        "SELECT s.account_id, COALESCE(a.segment, a.plan, 'unknown'), s.product, s.arr, s.currency, s.end_date, s.outcome, s.reason,
            (SELECT n.arr FROM subscriptions n WHERE n.account_id = s.account_id AND COALESCE(n.product, '') = COALESCE(s.product, '') AND n.start_date > s.end_date
             ORDER BY n.start_date LIMIT 1),
            (SELECT n.currency FROM subscriptions n WHERE n.account_id = s.account_id AND COALESCE(n.product, '') = COALESCE(s.product, '') AND n.start_date > s.end_date
             ORDER BY n.start_date LIMIT 1)
         FROM subscriptions s JOIN accounts a ON a.account_id = s.account_id
         WHERE s.end_date >= ?1 AND s.end_date < ?2 AND (s.outcome = 'churned' OR (s.outcome = 'renewed' AND s.reason IS NOT NULL))",
    )?;
    let mut groups: BTreeMap<(String, String, String, &'static str), (BTreeSet<String>, i64, f64)> = BTreeMap::new();
    let rows = query.query_map(params![from.to_string(), to.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<f64>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Option<String>>(7)?,
            r.get::<_, Option<f64>>(8)?,
            r.get::<_, Option<String>>(9)?,
        ))
    })?;
    for row in rows {
        let (account, segment, arr, code, end, outcome, reason, next_arr, next_code) = row?;
        let Ok(end) = end.parse::<NaiveDate>() else { continue };
        let money = |amount: Option<f64>, code: Option<&str>| crate::metrics::report_arr(amount, code, currency).map_err(StoreError::Invalid);
        let arr = money(arr, code.as_deref())?;
        let (kind, lost) = if outcome == "churned" {
            ("churn", arr)
        } else {
            ("downgrade", (arr - money(next_arr, next_code.as_deref())?).max(0.0))
        };
        let key = (Quarter::of(end).to_string(), segment, reason.unwrap_or_else(|| "unknown".into()), kind);
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
pub fn themes(conn: &Connection, rules: &BTreeMap<String, String>, today: NaiveDate, among: &[Among], arr: &HashMap<String, f64>) -> Result<Vec<Vec<Value>>, StoreError> {
    let all = comments(conn)?;
    let (themed, keywords) = listening::themes(&all, rules);
    let detractors: HashSet<String> = if among.iter().any(|a| matches!(a, Among::Detractors)) {
        let mut query = conn.prepare(
            "SELECT user_id FROM survey_responses s WHERE kind = 'nps' AND user_id IS NOT NULL AND score <= 6
             AND answered_at = (SELECT MAX(answered_at) FROM survey_responses t WHERE t.kind = 'nps' AND t.user_id = s.user_id)",
        )?;
        let rows = query.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };
    let mut query = conn.prepare(
        "SELECT DISTINCT account_id FROM subscriptions s WHERE outcome = 'churned'
         AND NOT EXISTS (SELECT 1 FROM subscriptions n WHERE n.account_id = s.account_id AND n.start_date <= ?1 AND (n.end_date IS NULL OR n.end_date >= ?1))",
    )?;
    let churned: HashSet<String> = query.query_map([today.to_string()], |r| r.get(0))?.collect::<Result<_, _>>()?;
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
                Among::Detractors => comment.person.as_ref().is_some_and(|p| detractors.contains(p)),
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
                *tally.quarters.entry(Quarter::of(day).to_string()).or_default() += 1;
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
        out.sort_by(|a, b| b["comments"].as_u64().cmp(&a["comments"].as_u64()).then_with(|| a["theme"].as_str().cmp(&b["theme"].as_str())));
        out
    };
    Ok(among.iter().map(report).collect())
}
