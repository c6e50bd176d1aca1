//! Actions, stored: each account's measures for the rules, rule evaluation that records an
//! alert, its outbox messages and its tasks in one transaction (so a decision and its
//! notifications commit together), the outbox worker with retries and dead letters, the
//! CSM task inbox, and survey dispatch and answers.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

use super::health::Settings;
use super::StoreError;
use crate::actions::deliver::{self, Message, Outcome};
use crate::actions::surveys::{self, Policy, Sent, Trigger};
use crate::actions::{self as act, ActionsConfig, Alert, Channel, Ready, Rule};
use crate::metrics::activity::day_number;

/// Wakes the evaluator early (after an import, a health update, a survey answer). The
/// evaluator waits on it with its schedule as the timeout.
static POKE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// Set while a bulk load (the demo's) is under way: evaluating half-loaded data would fire
/// on numbers that are not true yet.
static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Holds (true) or releases (false) the evaluator; releasing pokes it.
pub fn pause(paused: bool) {
    PAUSED.store(paused, std::sync::atomic::Ordering::SeqCst);
    if !paused {
        poke();
    }
}

/// Whether a bulk load holds the evaluator (and the health thread) back.
pub fn paused() -> bool {
    PAUSED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Asks the evaluator (if one runs in this process) to evaluate soon.
pub fn poke() {
    let (flag, wake) = &POKE;
    *flag.lock().expect("invariant: not poisoned") = true;
    wake.notify_all();
}

/// The name of the secret that signs survey links.
pub const SURVEY_SECRET: &str = "survey-links";

/// Every account's measures for the rules on `today`: the metrics row plus
/// [`act::EXTRA_MEASURES`] and `uses_7d:FEATURE` for each of `features`; with the
/// account's display name.
pub fn measures(conn: &Connection, today: NaiveDate, settings: Settings, features: &[&str]) -> Result<Vec<(Map<String, Value>, String)>, StoreError> {
    let rows = super::metrics::snapshot(conn, today, settings.metrics, settings.currency)?;
    let facts = super::dashboard::facts(conn, today, &rows, settings)?;
    let by_id: HashMap<&str, &super::dashboard::Facts> = facts.iter().map(|f| (f.account_id.as_str(), f)).collect();
    let ms_today = chrono::Utc::now().timestamp_millis();
    let mut escalations: HashMap<String, i64> = HashMap::new();
    let mut query = conn.prepare("SELECT account_id, MIN(opened_at) FROM tickets WHERE escalated = 1 AND resolved_at IS NULL GROUP BY account_id")?;
    for row in query.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (account, opened) = row?;
        if let Ok(opened) = chrono::DateTime::parse_from_rfc3339(&opened) {
            escalations.insert(account, (ms_today - opened.timestamp_millis()) / 86_400_000);
        }
    }
    let week_ago = format!("{}T00:00:00.000Z", today - chrono::Duration::days(6));
    let mut detractors: HashMap<String, i64> = HashMap::new();
    let mut query = conn.prepare("SELECT account_id, COUNT(*) FROM survey_responses WHERE kind = 'nps' AND score <= 6 AND answered_at >= ?1 GROUP BY account_id")?;
    for row in query.query_map([&week_ago], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (account, n) = row?;
        detractors.insert(account, n);
    }
    let mut last_active: HashMap<String, i32> = HashMap::new();
    let mut query = conn.prepare("SELECT account_id, MAX(day) FROM user_days GROUP BY account_id")?;
    for row in query.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i32>(1)?)))? {
        let (account, day) = row?;
        last_active.insert(account, day);
    }
    let model = super::health::model_for(conn, Some(today))?;
    let day = day_number(today);
    // By the (account, day) primary key prefix: a short range per account.
    let mut feature_uses = conn.prepare("SELECT coalesce(SUM(uses), 0) FROM user_day_features WHERE account_id = ?1 AND day > ?2 AND day <= ?3 AND feature = ?4")?;
    let mut first_use = conn.prepare("SELECT first_day FROM account_features WHERE account_id = ?1 AND feature = ?2")?;
    let rank = |tier: Option<&str>| tier.and_then(|t| crate::health::TIERS.iter().position(|x| *x == t));
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row["account_id"].as_str().unwrap_or_default().to_string();
        let Some(f) = by_id.get(id.as_str()) else { continue };
        let mut m = row.clone();
        let tier = f.health.as_ref().and_then(|h| h.tier.clone());
        let before = f.week_before.as_ref().and_then(|h| h.tier.clone());
        m.insert("plan".into(), json!(f.plan));
        m.insert("tier_dropped".into(), json!(matches!((rank(tier.as_deref()), rank(before.as_deref())), (Some(now), Some(then)) if now < then)));
        m.insert("tier".into(), json!(tier));
        m.insert("tier_before".into(), json!(before));
        m.insert("health_score".into(), json!(f.health.as_ref().and_then(|h| h.score)));
        m.insert("expected_renewal_rate".into(), json!(f.health.as_ref().and_then(|h| h.expected_rate)));
        m.insert("arr".into(), json!(f.arr));
        m.insert("renewal_in_days".into(), json!(f.renewal.map(|r| (r - today).num_days())));
        m.insert("escalation_open_days".into(), json!(escalations.get(&id)));
        m.insert("nps_detractor_answers_7d".into(), json!(detractors.get(&id).copied().unwrap_or(0)));
        m.insert("days_since_last_activity".into(), json!(last_active.get(&id).map(|d| day - d)));
        let power = model.as_ref().and_then(|m| m.segments.get(&f.segment).or_else(|| m.segments.get("all"))).and_then(|s| s.power_feature.clone());
        let first: Option<i32> = match &power {
            Some(p) => first_use.query_row(params![id, p], |r| r.get(0)).optional()?,
            None => None,
        };
        m.insert("power_feature_first_use_days".into(), json!(first.map(|d| day - d)));
        for feature in features {
            let uses: i64 = feature_uses.query_row(params![id, day - 7, day, feature], |r| r.get(0))?;
            m.insert(format!("{}{feature}", act::FEATURE_USES_PREFIX), json!(uses));
        }
        out.push((m, f.name.clone()));
    }
    Ok(out)
}

/// Rules made through the API.
pub fn stored_rules(conn: &Connection) -> Result<Vec<Rule>, StoreError> {
    let mut query = conn.prepare("SELECT name, body FROM rules ORDER BY name")?;
    let rows = query.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (name, body) = row?;
        out.push(serde_json::from_str(&body).map_err(|e| StoreError::Invalid(format!("stored rule {name}: {e}")))?);
    }
    Ok(out)
}

pub fn save_rule(conn: &Connection, rule: &Rule) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO rules (name, body, created_ms) VALUES (?1, ?2, ?3)",
        params![rule.name, serde_json::to_string(rule).expect("invariant: a rule serialises"), chrono::Utc::now().timestamp_millis()],
    )?;
    Ok(())
}

pub fn delete_rule(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM rules WHERE name = ?1", [name])? > 0)
}

/// The rules in force: the config's, then the API's (an API rule may not reuse a config
/// rule's name; one that fails to prepare, say after a channel left the config, is skipped
/// with a warning).
pub fn rules(conn: &Connection, config: &ActionsConfig) -> Result<Vec<Ready>, StoreError> {
    let mut ready = config.ready_rules().map_err(|(k, r)| StoreError::Invalid(format!("{k}: {r}")))?;
    for rule in stored_rules(conn)? {
        if ready.iter().any(|r| r.rule.name == rule.name) {
            continue;
        }
        match act::prepare(&rule, config) {
            Ok(r) => ready.push(r),
            Err(reason) => tracing::warn!(rule = %rule.name, %reason, "stored rule skipped"),
        }
    }
    Ok(ready)
}

/// One firing, as evaluation reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fired {
    pub rule: String,
    pub account_id: String,
    pub account_name: String,
    pub reason: String,
    /// Recorded (false in a dry run, or when the cooldown held it back).
    pub recorded: bool,
    pub alert_id: Option<i64>,
}

/// Evaluates the rules (or one) for every account. Unless `dry_run`, each firing outside
/// its cooldown is recorded with its outbox messages and tasks in one transaction.
pub fn evaluate(conn: &mut Connection, today: NaiveDate, settings: Settings, config: &ActionsConfig, base_url: &str, only: Option<&str>, dry_run: bool) -> Result<Vec<Fired>, StoreError> {
    let rules: Vec<Ready> = rules(conn, config)?.into_iter().filter(|r| only.is_none_or(|o| o == r.rule.name)).collect();
    if let Some(name) = only {
        if rules.is_empty() {
            return Err(StoreError::Invalid(format!("no rule {name:?}")));
        }
    }
    let mut features: Vec<&str> = rules.iter().flat_map(|r| r.condition.features()).collect();
    features.sort();
    features.dedup();
    let measures = measures(conn, today, settings, &features)?;
    let mut fired = Vec::new();
    for rule in &rules {
        for (m, name) in &measures {
            if rule.fires(m) {
                let account_id = m["account_id"].as_str().unwrap_or_default().to_string();
                fired.push((rule, m, Fired { rule: rule.rule.name.clone(), account_id, account_name: name.clone(), reason: act::reason(rule, m), recorded: false, alert_id: None }));
            }
        }
    }
    if dry_run || fired.is_empty() {
        return Ok(fired.into_iter().map(|(_, _, f)| f).collect());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let tx = super::write_transaction(conn, super::Lock::Main)?;
    let mut out = Vec::new();
    for (rule, m, mut f) in fired {
        let since = now - i64::from(rule.rule.cooldown_days) * 86_400_000;
        let recent: Option<i64> = tx
            .query_row("SELECT id FROM alerts WHERE rule = ?1 AND account_id = ?2 AND fired_ms > ?3 LIMIT 1", params![f.rule, f.account_id, since], |r| r.get(0))
            .optional()?;
        if recent.is_some() {
            out.push(f);
            continue;
        }
        tx.execute(
            "INSERT INTO alerts (rule, account_id, fired_ms, reason, measures) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![f.rule, f.account_id, now, f.reason, Value::Object(m.clone()).to_string()],
        )?;
        let id = tx.last_insert_rowid();
        let alert = Alert {
            id,
            rule: f.rule.clone(),
            account_id: f.account_id.clone(),
            account_name: f.account_name.clone(),
            reason: f.reason.clone(),
            link: format!("{}/accounts/{}", base_url.trim_end_matches('/'), f.account_id),
            measures: m.clone(),
        };
        let csm: Option<(Option<String>, Option<String>)> = tx
            .query_row("SELECT a.csm, c.email FROM accounts a LEFT JOIN csms c ON c.csm_id = a.csm WHERE a.account_id = ?1", [&f.account_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let (csm_id, csm_email) = csm.unwrap_or((None, None));
        for channel in &rule.notify {
            let key = format!("alert-{id}-{channel}");
            let (kind, target, subject, body) = match &config.channels[channel] {
                Channel::Slack { url } => ("slack", url.clone(), None, act::slack_payload(&alert).to_string()),
                Channel::Webhook { url, .. } => ("webhook", url.clone(), None, act::webhook_payload(&alert, &key).to_string()),
                Channel::Email { to } => {
                    let to = if to == "owner" { csm_email.clone() } else { Some(to.clone()) };
                    let Some(to) = to else {
                        tracing::warn!(rule = %f.rule, account = %f.account_id, "email to the owner skipped: the account's CSM has no email");
                        continue;
                    };
                    let body = format!("{}\n\nWhy: {}\n\nOpen: {}\n", alert.account_name, alert.reason, alert.link);
                    ("email", to, Some(format!("[bellwether] {}: {}", alert.account_name, alert.rule)), body)
                }
            };
            tx.execute(
                "INSERT INTO outbox (idempotency_key, alert_id, channel, kind, target, subject, body, status, next_attempt_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8)",
                params![key, id, channel, kind, target, subject, body, now],
            )?;
        }
        for task in &rule.tasks {
            let due = (today + chrono::Duration::days(i64::from(task.due_days))).to_string();
            tx.execute(
                "INSERT INTO tasks (account_id, alert_id, csm, title, status, due, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?6)",
                params![f.account_id, id, csm_id, act::task_title(&task.title, &alert), due, now],
            )?;
        }
        f.recorded = true;
        f.alert_id = Some(id);
        out.push(f);
    }
    tx.commit()?;
    Ok(out)
}

/// Alerts fired since `since_ms` (optionally of one account), newest first.
pub fn alerts(conn: &Connection, since_ms: i64, account: Option<&str>, limit: usize) -> Result<Vec<Value>, StoreError> {
    let mut query = conn.prepare(
        "SELECT id, rule, account_id, fired_ms, reason FROM alerts WHERE fired_ms >= ?1 AND (?2 IS NULL OR account_id = ?2) ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = query.query_map(params![since_ms, account, limit as i64], |r| {
        Ok(json!({"id": r.get::<_, i64>(0)?, "rule": r.get::<_, String>(1)?, "account_id": r.get::<_, String>(2)?,
                  "fired_at": crate::ingest::format_timestamp(r.get(3)?), "reason": r.get::<_, String>(4)?}))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

// ---- the outbox ----

/// Outbox rows of a status (`pending`, `sent`, `dead`), newest first.
pub fn outbox(conn: &Connection, status: &str, limit: usize) -> Result<Vec<Value>, StoreError> {
    let mut query = conn.prepare(
        "SELECT id, idempotency_key, alert_id, channel, kind, target, status, attempts, next_attempt_ms, last_error, created_ms, sent_ms
         FROM outbox WHERE status = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = query.query_map(params![status, limit as i64], |r| {
        let target: String = r.get(5)?;
        let kind: String = r.get(4)?;
        Ok(json!({"id": r.get::<_, i64>(0)?, "idempotency_key": r.get::<_, String>(1)?, "alert_id": r.get::<_, Option<i64>>(2)?,
                  "channel": r.get::<_, String>(3)?, "kind": kind,
                  // Webhook URLs can hold secrets (Slack's do): show the host only.
                  "target": if kind == "email" { target } else { target.split('/').take(3).collect::<Vec<_>>().join("/") },
                  "status": r.get::<_, String>(6)?, "attempts": r.get::<_, i64>(7)?,
                  "next_attempt_at": crate::ingest::format_timestamp(r.get(8)?), "last_error": r.get::<_, Option<String>>(9)?,
                  "created_at": crate::ingest::format_timestamp(r.get(10)?), "sent_at": r.get::<_, Option<i64>>(11)?.map(crate::ingest::format_timestamp)}))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Puts a dead message back in line; false when there is no dead message with that id.
pub fn retry(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    Ok(conn.execute("UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_ms = ?2 WHERE id = ?1 AND status = 'dead'", params![id, now])? > 0)
}

fn due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<(i64, i64, Message)>, StoreError> {
    let mut query = conn.prepare(
        "SELECT id, attempts, channel, kind, target, subject, body, idempotency_key FROM outbox
         WHERE status = 'pending' AND next_attempt_ms <= ?1 ORDER BY next_attempt_ms, id LIMIT ?2",
    )?;
    let rows = query.query_map(params![now, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?, Message { channel: r.get(2)?, kind: r.get(3)?, target: r.get(4)?, subject: r.get(5)?, body: r.get(6)?, idempotency_key: r.get(7)? }))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sends what is due once; returns how many were attempted. A message is marked only after
/// its attempt: a crash in between sends it again with the same idempotency key (at least
/// once; receivers drop the repeat by key), never loses it.
pub fn deliver_due(conn: &Connection, config: &ActionsConfig, smtp_password: Option<&str>) -> Result<usize, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let batch = due(conn, now, 20)?;
    for (id, attempts, message) in &batch {
        let outcome = deliver::send(message, config, smtp_password);
        let attempts = attempts + 1;
        let now = chrono::Utc::now().timestamp_millis();
        match outcome {
            Outcome::Sent => {
                conn.execute("UPDATE outbox SET status = 'sent', attempts = ?2, sent_ms = ?3, last_error = NULL WHERE id = ?1", params![id, attempts, now])?;
                tracing::info!(id, channel = %message.channel, attempts, "notification sent");
            }
            Outcome::Retry(error) if attempts < i64::from(config.max_attempts) => {
                let next = now + act::retry_delay_ms(config.retry_base_seconds, attempts as u32);
                conn.execute("UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4 WHERE id = ?1", params![id, attempts, next, error])?;
                tracing::warn!(id, channel = %message.channel, attempts, %error, "notification failed; will retry");
            }
            Outcome::Retry(error) | Outcome::Fatal(error) => {
                conn.execute("UPDATE outbox SET status = 'dead', attempts = ?2, last_error = ?3 WHERE id = ?1", params![id, attempts, error])?;
                tracing::error!(id, channel = %message.channel, attempts, %error, "notification moved to the dead letters");
            }
        }
    }
    Ok(batch.len())
}

// ---- tasks ----

/// Tasks, filtered; open and snoozed first by due date.
pub fn tasks(conn: &Connection, status: Option<&str>, csm: Option<&str>, account: Option<&str>, limit: usize) -> Result<Vec<Value>, StoreError> {
    let mut query = conn.prepare(
        "SELECT t.id, t.account_id, COALESCE(a.name, t.account_id), t.alert_id, t.csm, t.title, t.status, t.due, t.snoozed_until, t.created_ms, t.updated_ms
         FROM tasks t LEFT JOIN accounts a ON a.account_id = t.account_id
         WHERE (?1 IS NULL OR t.status = ?1) AND (?2 IS NULL OR t.csm = ?2) AND (?3 IS NULL OR t.account_id = ?3)
         ORDER BY t.status = 'done', t.due, t.id LIMIT ?4",
    )?;
    let rows = query.query_map(params![status, csm, account, limit as i64], |r| {
        Ok(json!({"id": r.get::<_, i64>(0)?, "account_id": r.get::<_, String>(1)?, "account_name": r.get::<_, String>(2)?,
                  "alert_id": r.get::<_, Option<i64>>(3)?, "csm": r.get::<_, Option<String>>(4)?, "title": r.get::<_, String>(5)?,
                  "status": r.get::<_, String>(6)?, "due": r.get::<_, Option<String>>(7)?, "snoozed_until": r.get::<_, Option<String>>(8)?,
                  "created_at": crate::ingest::format_timestamp(r.get(9)?), "updated_at": crate::ingest::format_timestamp(r.get(10)?)}))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sets a task's status (`open`, `snoozed` with a day, `done`) and optionally its due day;
/// false when there is no such task.
pub fn update_task(conn: &Connection, id: i64, status: &str, snoozed_until: Option<NaiveDate>, due: Option<NaiveDate>) -> Result<bool, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    Ok(conn.execute(
        "UPDATE tasks SET status = ?2, snoozed_until = ?3, due = COALESCE(?4, due), updated_ms = ?5 WHERE id = ?1",
        params![id, status, snoozed_until.map(|d| d.to_string()), due.map(|d| d.to_string()), now],
    )? > 0)
}

/// Snoozed tasks whose day has come are open again.
fn wake_snoozed(conn: &Connection, today: NaiveDate) -> Result<(), StoreError> {
    conn.execute("UPDATE tasks SET status = 'open', snoozed_until = NULL WHERE status = 'snoozed' AND snoozed_until <= ?1", [today.to_string()])?;
    Ok(())
}

// ---- surveys ----

/// What a survey link leads to.
#[derive(Debug, Clone)]
pub struct SurveySend {
    pub id: i64,
    pub kind: String,
    pub account_name: String,
    pub answered: bool,
}

pub fn survey_send(conn: &Connection, id: i64) -> Result<Option<SurveySend>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT s.id, s.kind, COALESCE(a.name, s.account_id), s.answered_ms IS NOT NULL FROM survey_sends s LEFT JOIN accounts a ON a.account_id = s.account_id WHERE s.id = ?1",
            [id],
            |r| Ok(SurveySend { id: r.get(0)?, kind: r.get(1)?, account_name: r.get(2)?, answered: r.get(3)? }),
        )
        .optional()?)
}

/// How answering went.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered {
    Stored(String),
    AlreadyAnswered,
    NoSuchSurvey,
}

/// Records an answer as a survey response, once per send, in one transaction.
pub fn answer(conn: &mut Connection, id: i64, score: i64, comment: Option<&str>) -> Result<Answered, StoreError> {
    let tx = super::write_transaction(conn, super::Lock::Main)?;
    let send: Option<(String, String, String, String, Option<i64>)> = tx
        .query_row("SELECT user_id, account_id, kind, trigger, answered_ms FROM survey_sends WHERE id = ?1", [id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((user, account, kind, trigger, answered)) = send else { return Ok(Answered::NoSuchSurvey) };
    if answered.is_some() {
        return Ok(Answered::AlreadyAnswered);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let response_id = format!("survey-{id}");
    tx.execute(
        "INSERT INTO survey_responses (response_id, account_id, user_id, kind, score, comment, answered_at, trigger, traits) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '{}')",
        params![response_id, account, user, kind, score, comment, crate::ingest::format_timestamp(now), trigger],
    )?;
    tx.execute("UPDATE survey_sends SET answered_ms = ?2, response_id = ?3 WHERE id = ?1", params![id, now, response_id])?;
    tx.commit()?;
    Ok(Answered::Stored(response_id))
}

/// The newest unanswered survey sent to a person for the web snippet, if any.
pub fn pending_survey(conn: &Connection, user_id: &str, since_ms: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id FROM survey_sends WHERE user_id = ?1 AND answered_ms IS NULL AND sent_ms >= ?2 ORDER BY id DESC LIMIT 1",
            params![user_id, since_ms],
            |r| r.get(0),
        )
        .optional()?)
}

/// The occasions to survey on `today`: closed tickets (last 7 days), the quarter's NPS
/// for accounts without a ticket this quarter (people active in the last 30 days), and
/// go-lives (last 7 days). (user, account, trigger).
fn occasions(conn: &Connection, today: NaiveDate, policy: &Policy) -> Result<Vec<(String, String, Trigger)>, StoreError> {
    let mut out = Vec::new();
    let week_ago = format!("{}T00:00:00.000Z", today - chrono::Duration::days(6));
    if policy.after_ticket {
        let mut query = conn.prepare("SELECT ticket_id, account_id, user_id FROM tickets WHERE resolved_at >= ?1 AND user_id IS NOT NULL ORDER BY resolved_at")?;
        for row in query.query_map([&week_ago], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))? {
            let (ticket_id, account, user) = row?;
            out.push((user, account, Trigger::Ticket { ticket_id }));
        }
    }
    let active = |account: &str| -> Result<Vec<String>, StoreError> {
        let mut query = conn.prepare("SELECT DISTINCT user_id FROM user_days WHERE account_id = ?1 AND day > ?2 ORDER BY user_id")?;
        let rows = query.query_map(params![account, day_number(today) - 30], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    if policy.quarterly_nps {
        let quarter = crate::share::Quarter::of(today);
        let start = format!("{}T00:00:00.000Z", quarter.first_day());
        let mut query = conn.prepare(
            "SELECT a.account_id FROM accounts a WHERE NOT EXISTS (SELECT 1 FROM tickets t WHERE t.account_id = a.account_id AND t.opened_at >= ?1)
             AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.account_id = a.account_id AND s.start_date <= ?2 AND (s.end_date IS NULL OR s.end_date >= ?2))",
        )?;
        let accounts: Vec<String> = query.query_map(params![start, today.to_string()], |r| r.get(0))?.collect::<Result<_, _>>()?;
        for account in accounts {
            for user in active(&account)? {
                out.push((user, account.clone(), Trigger::Quarterly { quarter }));
            }
        }
    }
    if policy.go_live {
        let mut query = conn.prepare("SELECT subscription_id, account_id FROM subscriptions WHERE go_live_at >= ?1 AND go_live_at <= ?2")?;
        let rows: Vec<(String, String)> = query.query_map(params![week_ago, format!("{today}T23:59:59.999Z")], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        for (subscription_id, account) in rows {
            for user in active(&account)? {
                out.push((user, account.clone(), Trigger::GoLive { subscription_id: subscription_id.clone() }));
            }
        }
    }
    Ok(out)
}

/// Sends the surveys the policy allows today: each recorded once (by occasion and person)
/// with an email in the outbox when the person has an email and SMTP is configured, else
/// for the web snippet. Returns how many were sent.
pub fn dispatch_surveys(conn: &mut Connection, today: NaiveDate, config: &ActionsConfig, base_url: &str) -> Result<usize, StoreError> {
    let policy = &config.surveys;
    if !policy.enabled {
        return Ok(0);
    }
    let candidates = occasions(conn, today, policy)?;
    let secret = super::users::secret(conn, SURVEY_SECRET)?;
    let now = chrono::Utc::now().timestamp_millis();
    let tx = super::write_transaction(conn, super::Lock::Main)?;
    let mut sent = 0;
    for (user, account, trigger) in candidates {
        let key = trigger.key(&user);
        let exists: Option<i64> = tx.query_row("SELECT 1 FROM survey_sends WHERE key = ?1", [&key], |r| r.get(0)).optional()?;
        if exists.is_some() {
            continue;
        }
        let history: Vec<Sent> = {
            let mut query = tx.prepare_cached("SELECT trigger, sent_ms FROM survey_sends WHERE user_id = ?1")?;
            let rows = query.query_map([&user], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            let mut history = Vec::new();
            for row in rows {
                let (name, ms) = row?;
                let name = match name.as_str() {
                    "ticket" => "ticket",
                    "quarterly" => "quarterly",
                    _ => "go-live",
                };
                let day = chrono::DateTime::from_timestamp_millis(ms).map(|d| d.date_naive()).unwrap_or(today);
                history.push(Sent { trigger: name, day });
            }
            history
        };
        if surveys::allowed(&trigger, &history, today, policy).is_err() {
            continue;
        }
        let email: Option<String> = tx
            .query_row("SELECT json_extract(traits, '$.email') FROM users WHERE user_id = ?1", [&user], |r| r.get(0))
            .optional()?
            .flatten();
        let delivery = if email.is_some() && config.smtp.is_some() { "email" } else { "snippet" };
        tx.execute(
            "INSERT INTO survey_sends (key, user_id, account_id, kind, trigger, delivery, sent_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![key, user, account, trigger.kind(policy), trigger.name(), delivery, now],
        )?;
        let id = tx.last_insert_rowid();
        if let (Some(to), "email") = (email, delivery) {
            let expires = now / 1000 + i64::from(policy.token_valid_days) * 86_400;
            let link = format!("{}/s/{}", base_url.trim_end_matches('/'), crate::share::sign_payload(&secret, &format!("survey\n{id}"), expires));
            let body = format!("{}\n\nAnswer in one click (the link works for {} days):\n{link}\n", surveys::question(trigger.kind(policy)), policy.token_valid_days);
            tx.execute(
                "INSERT INTO outbox (idempotency_key, channel, kind, target, subject, body, status, next_attempt_ms, created_ms)
                 VALUES (?1, 'surveys', 'email', ?2, 'A quick question', ?3, 'pending', ?4, ?4)",
                params![format!("survey-{id}"), to, body, now],
            )?;
        }
        sent += 1;
    }
    tx.commit()?;
    Ok(sent)
}

/// A survey link for send `id` (also what the snippet hands out).
pub fn survey_link(conn: &Connection, id: i64, valid_days: u32, base_url: &str) -> Result<String, StoreError> {
    let secret = super::users::secret(conn, SURVEY_SECRET)?;
    let expires = chrono::Utc::now().timestamp() + i64::from(valid_days) * 86_400;
    Ok(format!("{}/s/{}", base_url.trim_end_matches('/'), crate::share::sign_payload(&secret, &format!("survey\n{id}"), expires)))
}

/// Starts the evaluator (rules and surveys on the schedule and when poked) and the outbox
/// worker (every second). Both run for the life of the process.
pub fn spawn(store: &super::Store, metrics: crate::config::MetricsConfig, health: crate::config::HealthConfig, currency: crate::config::CurrencyConfig, config: ActionsConfig, base_url: String) -> Result<(), StoreError> {
    let mut conn = store.connect()?;
    let evaluator_config = config.clone();
    std::thread::Builder::new()
        .name("actions".into())
        .spawn(move || {
            let config = evaluator_config;
            // Let the first rollups and health model settle before the first evaluation.
            std::thread::sleep(Duration::from_secs(5));
            loop {
                let settings = Settings { metrics: &metrics, health: &health, currency: &currency };
                let today = chrono::Utc::now().date_naive();
                let run = (|| -> Result<(usize, usize), StoreError> {
                    // Not while a bulk load runs or the rollups lag behind the events.
                    let rolled = super::rollup::rolled_up_to(&conn)?;
                    let max: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?;
                    if paused() || max - rolled > super::rollup::STEP_EVENTS as i64 {
                        return Ok((0, 0));
                    }
                    wake_snoozed(&conn, today)?;
                    let fired = evaluate(&mut conn, today, settings, &config, &base_url, None, false)?;
                    let surveys = dispatch_surveys(&mut conn, today, &config, &base_url)?;
                    Ok((fired.iter().filter(|f| f.recorded).count(), surveys))
                })();
                match run {
                    Ok((alerts, surveys)) if alerts + surveys > 0 => tracing::info!(alerts, surveys, "actions evaluated"),
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "action evaluation failed"),
                }
                let (flag, wake) = &POKE;
                let mut poked = flag.lock().expect("invariant: not poisoned");
                if !*poked {
                    poked = wake.wait_timeout(poked, Duration::from_secs(config.evaluate_every_seconds)).expect("invariant: not poisoned").0;
                }
                *poked = false;
                drop(poked);
                // Several changes in a burst (an import, then the health update) make one run.
                std::thread::sleep(Duration::from_millis(500));
            }
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    let conn = store.connect()?;
    let password = std::env::var("BELLWETHER_SMTP_PASSWORD").ok();
    std::thread::Builder::new()
        .name("outbox".into())
        .spawn(move || loop {
            match deliver_due(&conn, &config, password.as_deref()) {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "outbox delivery failed"),
            }
            std::thread::sleep(Duration::from_secs(1));
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(())
}
