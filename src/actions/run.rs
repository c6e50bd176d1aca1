//! Actions over the store: each account's measures for the rules, rule evaluation that records an
//! alert with its outbox messages and tasks all or none (so a decision and its
//! notifications are kept together), the outbox worker with retries and dead letters, the
//! CSM task inbox, and survey dispatch and answers.
//!
//! The decisions are written once over the store's traits: what the actions keep (`Rules`,
//! `Alerts`, `Outbox`, `Tasks`, `Surveys`), implemented by the embedded store's
//! `Connection` (SQLite tables, one transaction per decision) and by ClickHouse
//! (`store::clickhouse::actions`); what they read (metrics, records, health) comes from
//! the same store through `Activity`, `Records`, `Models` and `History`.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::NaiveDate;
use serde_json::{json, Map, Value};

use super::deliver::{self, Message, Outcome};
use super::surveys::{self, Policy, Sent, Trigger};
use super::{ActionsConfig, Alert, Channel, Ready};
use crate::health::model::Settings;
use crate::metrics::activity::day_number;
use crate::store::Change;
use crate::store::StoredSettings;
use crate::store::{
    Activity, Alerts, History, Models, Notes, Outbox, Records, Rules, Sessions, Surveys, Tasks,
};
use crate::store::{
    AlertRow, Answered, FollowUp, NewAlert, NewMessage, NewSend, NewTask, OutboxRow, StoreError,
    TaskFilter,
};

/// The name of the secret that signs survey links.
pub const SURVEY_SECRET: &str = "survey-links";

/// Outbox messages the worker sends per round.
const DELIVERIES_PER_ROUND: usize = 20;

impl OutboxRow {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "idempotency_key": self.idempotency_key, "alert_id": self.alert_id, "channel": self.channel, "kind": self.kind,
               // Webhook URLs can hold secrets (Slack's do): show the host only.
               "target": if self.kind == "email" { self.target.clone() } else { deliver::origin(&self.target) },
               "status": self.status, "attempts": self.attempts,
               "next_attempt_at": crate::ingest::format_timestamp(self.next_attempt_ms), "last_error": self.last_error,
               "created_at": crate::ingest::format_timestamp(self.created_ms), "sent_at": self.sent_ms.map(crate::ingest::format_timestamp)})
    }

    fn message(&self) -> Message {
        Message {
            channel: self.channel.clone(),
            kind: self.kind.clone(),
            target: self.target.clone(),
            subject: self.subject.clone(),
            body: self.body.clone(),
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

// ---- measures and occasions ----

/// What one look at every account gives the actions.
pub struct Look {
    /// Each account's measures for the rules: the metrics row plus [`super::EXTRA_MEASURES`]
    /// and `uses_7d:FEATURE` for the features asked; with the account's display name.
    pub measures: Vec<(Map<String, Value>, String)>,
    /// The occasions to survey on the day: (user, account, trigger).
    pub occasions: Vec<(String, String, Trigger)>,
}

/// What the actions read of one account beside its metrics row.
#[derive(Default)]
struct Extra {
    escalation_opened_ms: Option<i64>,
    detractors_7d: i64,
    last_active: Option<i32>,
    power_first_use: Option<i32>,
    uses_7d: HashMap<String, i64>,
}

/// Every account's measures and the day's survey occasions, from one metrics snapshot of
/// `today` (the records and rollups each account's metrics are computed from).
///
/// Survey occasions: tickets resolved in the last 7 days (account-local days), the
/// quarter's NPS for the people active in the last 30 days of accounts with a contract in
/// force and no ticket opened this quarter, and go-lives in the last 7 days.
// Over 100 lines: One evaluation pass in order (rules, alerts, tasks, surveys); moves to `actions` and splits in issue 29 item 1.
#[allow(clippy::too_many_lines)]
pub fn look(
    source: &(impl Activity + Records + Models + History + Notes + ?Sized),
    today: NaiveDate,
    settings: Settings,
    features: &[&str],
    policy: &Policy,
) -> Result<Look, StoreError> {
    let day = day_number(today);
    let model = crate::health::history::model_for(source, Some(today))?;
    let power = |segment: &str| {
        model
            .as_ref()
            .and_then(|m| m.segments.get(segment).or_else(|| m.segments.get("all")))
            .and_then(|s| s.power_feature.clone())
    };
    let week_ago_ms = (today - chrono::Duration::days(6))
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis();
    let quarter = crate::share::Quarter::of(today);
    let quarter_start = day_number(quarter.first_day());
    let mut extras: HashMap<String, Extra> = HashMap::new();
    let mut tickets: Vec<(i64, String, String, String)> = Vec::new();
    let mut quarterly: Vec<(String, Vec<String>)> = Vec::new();
    let mut go_lives: Vec<(String, String, Vec<String>)> = Vec::new();
    let rows = source.snapshot_with(today, settings.metrics, settings.currency, &mut |data| {
        let open_escalations = data
            .tickets
            .iter()
            .filter(|t| t.escalated && t.resolved_ms.is_none());
        let uses_7d = features
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    data.features
                        .iter()
                        .filter(|u| u.feature == *f && u.day > day - 7 && u.day <= day)
                        .map(|u| u.uses)
                        .sum(),
                )
            })
            .collect();
        extras.insert(
            data.account_id.clone(),
            Extra {
                escalation_opened_ms: open_escalations.map(|t| t.opened_ms).min(),
                detractors_7d: data
                    .surveys
                    .iter()
                    .filter(|s| s.kind == "nps" && s.score <= 6 && s.answered_ms >= week_ago_ms)
                    .count() as i64,
                last_active: data.last_active,
                power_first_use: power(&data.segment).and_then(|p| data.first_use.get(&p).copied()),
                uses_7d,
            },
        );
        let this_week = |local: Option<i32>| local.is_some_and(|d| d > day - 7 && d <= day);
        for t in data
            .tickets
            .iter()
            .filter(|t| policy.after_ticket && this_week(t.resolved))
        {
            if let (Some(user), Some(resolved_ms)) = (&t.user, t.resolved_ms) {
                tickets.push((
                    resolved_ms,
                    t.id.clone(),
                    data.account_id.clone(),
                    user.clone(),
                ));
            }
        }
        if !policy.quarterly_nps && !policy.go_live {
            return;
        }
        let active: BTreeSet<&str> = data
            .days
            .iter()
            .filter(|d| d.day > day - 30 && d.day <= day)
            .map(|d| d.user.as_str())
            .collect();
        let active: Vec<String> = active.into_iter().map(str::to_string).collect();
        let quiet = !data.tickets.iter().any(|t| t.opened >= quarter_start);
        if policy.quarterly_nps && quiet && data.subscriptions.iter().any(|s| s.in_force(day)) {
            quarterly.push((data.account_id.clone(), active.clone()));
        }
        let mut live: Vec<&str> = data
            .subscriptions
            .iter()
            .filter(|s| policy.go_live && this_week(s.go_live))
            .map(|s| s.id.as_str())
            .collect();
        live.sort_unstable();
        for id in live {
            go_lives.push((data.account_id.clone(), id.to_string(), active.clone()));
        }
    })?;
    let facts = crate::accounts::facts(source, today, &rows, settings)?;
    let by_id: HashMap<&str, &crate::accounts::Facts> =
        facts.iter().map(|f| (f.account_id.as_str(), f)).collect();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let dropped = usage_drops(&source.tier_changes(today - chrono::Duration::days(7), None)?);
    let mut measures = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.account_id.clone();
        let (Some(f), Some(extra)) = (by_id.get(id.as_str()), extras.remove(&id)) else {
            continue;
        };
        let mut m = row.to_map();
        let tier = f.health.as_ref().and_then(|h| h.tier.clone());
        let before = f.week_before.as_ref().and_then(|h| h.tier.clone());
        m.insert("plan".into(), json!(f.plan));
        m.insert("tier_dropped".into(), json!(dropped.contains(&id)));
        m.insert("tier".into(), json!(tier));
        m.insert("tier_before".into(), json!(before));
        m.insert(
            "health_score".into(),
            json!(f.health.as_ref().and_then(|h| h.score)),
        );
        m.insert(
            "expected_renewal_rate".into(),
            json!(f.health.as_ref().and_then(|h| h.expected_rate)),
        );
        m.insert("arr".into(), json!(f.arr));
        m.insert(
            "renewal_in_days".into(),
            json!(f.renewal.map(|r| (r - today).num_days())),
        );
        m.insert(
            "escalation_open_days".into(),
            json!(extra
                .escalation_opened_ms
                .map(|opened| (now_ms - opened) / 86_400_000)),
        );
        m.insert(
            "nps_detractor_answers_7d".into(),
            json!(extra.detractors_7d),
        );
        m.insert(
            "days_since_last_activity".into(),
            json!(extra.last_active.map(|d| day - d)),
        );
        m.insert(
            "power_feature_first_use_days".into(),
            json!(extra.power_first_use.map(|d| day - d)),
        );
        for (feature, uses) in extra.uses_7d {
            m.insert(
                format!("{}{feature}", super::FEATURE_USES_PREFIX),
                json!(uses),
            );
        }
        measures.push((m, f.name.clone()));
    }
    tickets.sort();
    let mut occasions: Vec<(String, String, Trigger)> = tickets
        .into_iter()
        .map(|(_, ticket_id, account, user)| (user, account, Trigger::Ticket { ticket_id }))
        .collect();
    for (account, users) in quarterly {
        occasions.extend(
            users
                .into_iter()
                .map(|user| (user, account.clone(), Trigger::Quarterly { quarter })),
        );
    }
    for (account, subscription_id, users) in go_lives {
        occasions.extend(users.into_iter().map(|user| {
            (
                user,
                account.clone(),
                Trigger::GoLive {
                    subscription_id: subscription_id.clone(),
                },
            )
        }));
    }
    Ok(Look {
        measures,
        occasions,
    })
}

// ---- rules and alerts ----

/// The actions config with what was set on the dashboard (see [`ActionsConfig::in_force`]);
/// a stored setting that no longer holds is left out with a warning.
pub fn config_in_force(
    store: &(impl StoredSettings + ?Sized),
    config: &ActionsConfig,
) -> Result<ActionsConfig, StoreError> {
    let channels = store.stored_setting(super::CHANNELS_SETTING)?;
    let surveys = store.stored_setting(super::SURVEYS_SETTING)?;
    if channels.is_none() && surveys.is_none() {
        return Ok(config.clone());
    }
    let (config, warnings) = config.in_force(channels.as_deref(), surveys.as_deref());
    for warning in warnings {
        tracing::warn!(%warning, "a setting made on the dashboard is not in force");
    }
    Ok(config)
}

/// The rules in force: the config's, then the API's (an API rule may not reuse a config
/// rule's name; one that fails to prepare, say after a channel left the config, is skipped
/// with a warning).
pub fn rules(
    store: &(impl Rules + StoredSettings + ?Sized),
    config: &ActionsConfig,
) -> Result<Vec<Ready>, StoreError> {
    rules_under(store, &config_in_force(store, config)?)
}

/// [`rules`] under a config already in force (read once per evaluation, so the rules and
/// their channels agree).
fn rules_under(
    store: &(impl Rules + ?Sized),
    config: &ActionsConfig,
) -> Result<Vec<Ready>, StoreError> {
    let mut ready = config
        .ready_rules()
        .map_err(|(k, r)| StoreError::Invalid(format!("{k}: {r}")))?;
    for rule in store.stored_rules()? {
        if ready.iter().any(|r| r.rule.name == rule.name) {
            continue;
        }
        match super::prepare(&rule, config) {
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
/// its cooldown is recorded with its outbox messages and tasks.
pub fn evaluate(
    store: &(impl Activity
          + Records
          + Models
          + History
          + Notes
          + Rules
          + Alerts
          + StoredSettings
          + ?Sized),
    today: NaiveDate,
    settings: Settings,
    config: &ActionsConfig,
    base_url: &str,
    only: Option<&str>,
    dry_run: bool,
) -> Result<Vec<Fired>, StoreError> {
    let config = &config_in_force(store, config)?;
    let rules = rules_to_run(store, config, only)?;
    let look = look(
        store,
        today,
        settings,
        &features_of(&rules),
        &Policy {
            after_ticket: false,
            quarterly_nps: false,
            go_live: false,
            ..config.surveys.clone()
        },
    )?;
    fire(store, today, config, base_url, &rules, &look, dry_run)
}

/// The rules to evaluate under `config`, a config in force ([`config_in_force`]).
fn rules_to_run(
    store: &(impl Rules + ?Sized),
    config: &ActionsConfig,
    only: Option<&str>,
) -> Result<Vec<Ready>, StoreError> {
    let rules: Vec<Ready> = rules_under(store, config)?
        .into_iter()
        .filter(|r| only.is_none_or(|o| o == r.rule.name))
        .collect();
    match only {
        Some(name) if rules.is_empty() => Err(StoreError::Invalid(format!("no rule {name:?}"))),
        _ => Ok(rules),
    }
}

fn features_of(rules: &[Ready]) -> Vec<&str> {
    let mut features: Vec<&str> = rules.iter().flat_map(|r| r.condition.features()).collect();
    features.sort();
    features.dedup();
    features
}

/// The rules fired by `look`'s measures, recorded unless `dry_run`.
// Over 100 lines: Writes an alert and everything it triggers in one transaction; moves to `actions` in issue 29 item 1.
#[allow(clippy::too_many_lines)]
fn fire(
    store: &(impl Records + Alerts + ?Sized),
    today: NaiveDate,
    config: &ActionsConfig,
    base_url: &str,
    rules: &[Ready],
    look: &Look,
    dry_run: bool,
) -> Result<Vec<Fired>, StoreError> {
    let mut fired: Vec<(&Ready, &Map<String, Value>, Fired)> = Vec::new();
    for rule in rules {
        for (m, name) in &look.measures {
            if rule.fires(m) {
                let account_id = m["account_id"].as_str().unwrap_or_default().to_string();
                fired.push((
                    rule,
                    m,
                    Fired {
                        rule: rule.rule.name.clone(),
                        account_id,
                        account_name: name.clone(),
                        reason: super::reason(rule, m),
                        recorded: false,
                        alert_id: None,
                    },
                ));
            }
        }
    }
    if dry_run || fired.is_empty() {
        return Ok(fired.into_iter().map(|(_, _, f)| f).collect());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let alerts: Vec<NewAlert> = fired
        .iter()
        .map(|(rule, m, f)| NewAlert {
            rule: f.rule.clone(),
            account_id: f.account_id.clone(),
            account_name: f.account_name.clone(),
            reason: f.reason.clone(),
            measures: (*m).clone(),
            cooldown_from_ms: now - i64::from(rule.rule.cooldown_days) * 86_400_000,
        })
        .collect();
    let owners = owners(store)?;
    let follow_up = |new: &NewAlert, id: i64| -> FollowUp {
        let rule = rules
            .iter()
            .find(|r| r.rule.name == new.rule)
            .expect("invariant: a fired rule is in force");
        let alert = Alert {
            id,
            rule: new.rule.clone(),
            account_id: new.account_id.clone(),
            account_name: new.account_name.clone(),
            reason: new.reason.clone(),
            link: format!(
                "{}{}",
                base_url.trim_end_matches('/'),
                crate::share::account_path(&new.account_id)
            ),
            measures: new.measures.clone(),
        };
        let (csm_id, csm_email) = owners.get(&new.account_id).cloned().unwrap_or_default();
        let mut out = FollowUp::default();
        for channel in &rule.notify {
            let key = format!("alert-{id}-{channel}");
            let Some(channel_config) = config.channels.get(channel) else {
                tracing::warn!(rule = %alert.rule, %channel, "notification skipped: no such channel");
                continue;
            };
            let (kind, target, subject, body) = match channel_config {
                Channel::Slack { url } => (
                    "slack",
                    url.clone(),
                    None,
                    super::slack_payload(&alert).to_string(),
                ),
                Channel::Webhook { url, .. } => (
                    "webhook",
                    url.clone(),
                    None,
                    super::webhook_payload(&alert, &key).to_string(),
                ),
                Channel::Email { to } => {
                    let to = if to == "owner" {
                        csm_email.clone()
                    } else {
                        Some(to.clone())
                    };
                    let Some(to) = to else {
                        tracing::warn!(rule = %alert.rule, account = %alert.account_id, "email to the owner skipped: the account's CSM has no email");
                        continue;
                    };
                    let body = format!(
                        "{}\n\nWhy: {}\n\nOpen: {}\n",
                        alert.account_name, alert.reason, alert.link
                    );
                    (
                        "email",
                        to,
                        Some(format!(
                            "[bellwether] {}: {}",
                            alert.account_name, alert.rule
                        )),
                        body,
                    )
                }
            };
            out.messages.push(NewMessage {
                idempotency_key: key,
                channel: channel.clone(),
                kind: kind.into(),
                target,
                subject,
                body,
            });
        }
        let cause = crate::actions::cause_of(&rule.rule, &rule.condition);
        for task in &rule.tasks {
            out.tasks.push(NewTask {
                cause: cause.clone(),
                csm: csm_id.clone(),
                title: super::task_title(&task.title, &alert),
                due: today + chrono::Duration::days(i64::from(task.due_days)),
            });
        }
        out
    };
    let ids = store.record_alerts(now, &alerts, &follow_up)?;
    Ok(fired
        .into_iter()
        .zip(ids)
        .map(|((_, _, mut f), id)| {
            f.recorded = id.is_some();
            f.alert_id = id;
            f
        })
        .collect())
}

/// Account id -> (its CSM's id, that CSM's email).
type Owners = HashMap<String, (Option<String>, Option<String>)>;

/// Each account's CSM and that CSM's email, from the records.
fn owners(source: &(impl Records + ?Sized)) -> Result<Owners, StoreError> {
    let text = |cell: &crate::records::Cell| cell.as_text().map(str::to_string);
    let emails: HashMap<String, Option<String>> = source
        .record_rows("csms", &["csm_id", "email"])?
        .iter()
        .filter_map(|r| Some((text(&r[0])?, text(&r[1]))))
        .collect();
    Ok(source
        .record_rows("accounts", &["account_id", "csm"])?
        .iter()
        .filter_map(|r| {
            let csm = text(&r[1]);
            let email = csm.as_ref().and_then(|c| emails.get(c).cloned().flatten());
            Some((text(&r[0])?, (csm, email)))
        })
        .collect())
}

/// Alerts fired since `since_ms` (optionally of one account), newest first, as the API shows them.
pub fn alerts(
    store: &(impl Alerts + ?Sized),
    since_ms: i64,
    account: Option<&str>,
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .alerts(since_ms, account, limit)?
        .iter()
        .map(AlertRow::to_json)
        .collect())
}

// ---- the outbox ----

/// Outbox rows of a status (`pending`, `sent`, `dead`), newest first, as the API shows them.
pub fn outbox(
    store: &(impl Outbox + ?Sized),
    status: &str,
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    Ok(store
        .outbox(status, limit)?
        .iter()
        .map(OutboxRow::to_json)
        .collect())
}

/// Puts a dead message back in line; false when there is no dead message with that id.
pub fn retry(store: &(impl Outbox + ?Sized), id: i64) -> Result<bool, StoreError> {
    store.retry(id, chrono::Utc::now().timestamp_millis())
}

/// Sends what is due once; returns how many were attempted. A message is marked only after
/// its attempt: a crash in between sends it again with the same idempotency key (at least
/// once; receivers drop the repeat by key), never loses it.
pub fn deliver_due(
    store: &(impl Outbox + StoredSettings + ?Sized),
    config: &ActionsConfig,
    smtp_password: Option<&str>,
) -> Result<usize, StoreError> {
    let batch = store.due(chrono::Utc::now().timestamp_millis(), DELIVERIES_PER_ROUND)?;
    if batch.is_empty() {
        return Ok(0);
    }
    // Channels added on the dashboard carry their own secrets.
    let config = &config_in_force(store, config)?;
    for row in &batch {
        let outcome = deliver::send(&row.message(), config, smtp_password);
        let mut row = row.clone();
        row.attempts += 1;
        let now = chrono::Utc::now().timestamp_millis();
        let (id, attempts) = (row.id, row.attempts);
        match outcome {
            Outcome::Sent => {
                row.status = "sent".into();
                row.sent_ms = Some(now);
                row.last_error = None;
                store.mark(&row)?;
                tracing::info!(id, channel = %row.channel, attempts, "notification sent");
            }
            Outcome::Retry(error) if attempts < i64::from(config.max_attempts) => {
                row.next_attempt_ms =
                    now + super::retry_delay_ms(config.retry_base_seconds, attempts as u32);
                row.last_error = Some(error.clone());
                store.mark(&row)?;
                tracing::warn!(id, channel = %row.channel, attempts, %error, "notification failed; will retry");
            }
            Outcome::Retry(error) | Outcome::Fatal(error) => {
                row.status = "dead".into();
                row.last_error = Some(error.clone());
                store.mark(&row)?;
                tracing::error!(id, channel = %row.channel, attempts, %error, "notification moved to the dead letters");
            }
        }
    }
    Ok(batch.len())
}

// ---- tasks ----

/// Each account's name (its id when it has none).
fn account_names(source: &(impl Records + ?Sized)) -> Result<HashMap<String, String>, StoreError> {
    Ok(source
        .record_rows("accounts", &["account_id", "name"])?
        .into_iter()
        .filter_map(|r| {
            let id = r[0].as_text()?.to_string();
            Some((id.clone(), r[1].as_text().map_or(id, str::to_string)))
        })
        .collect())
}

/// Tasks, filtered; open and snoozed first by due date; as the API shows them.
pub fn tasks(
    store: &(impl Records + Tasks + ?Sized),
    filter: TaskFilter<'_>,
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    let rows = store.tasks(filter, limit)?;
    let names = if rows.is_empty() {
        HashMap::new()
    } else {
        account_names(store)?
    };
    Ok(rows
        .iter()
        .map(|t| {
            json!({"id": t.id, "account_id": t.account_id, "account_name": names.get(&t.account_id).unwrap_or(&t.account_id),
                   "alert_id": t.alert_id, "csm": t.csm, "title": t.title, "status": t.status, "due": t.due, "snoozed_until": t.snoozed_until,
                   "cause": t.cause, "also": t.also,
                   "created_at": crate::ingest::format_timestamp(t.created_ms), "updated_at": crate::ingest::format_timestamp(t.updated_ms)})
        })
        .collect())
}

/// Sets a task's status (`open`, `snoozed` with a day, `done`) and optionally its due day;
/// false when there is no such task.
pub fn update_task(
    store: &(impl Tasks + ?Sized),
    id: i64,
    status: &str,
    snoozed_until: Option<NaiveDate>,
    due: Option<NaiveDate>,
) -> Result<bool, StoreError> {
    store.update_task(
        id,
        status,
        snoozed_until,
        due,
        chrono::Utc::now().timestamp_millis(),
    )
}

/// Makes a task by hand for `account`'s CSM (open, due on `due`); `None` when there is no
/// such account. Check it first with [`super::check_task`].
pub fn add_task(
    store: &(impl Records + Tasks + ?Sized),
    account: &str,
    title: &str,
    due: NaiveDate,
    today: NaiveDate,
) -> Result<Option<i64>, StoreError> {
    let title = title.trim();
    super::check_task(title, due, today)
        .map_err(|(field, reason)| StoreError::Invalid(format!("{field}: {reason}")))?;
    let Some((csm, _)) = owners(store)?.remove(account) else {
        return Ok(None);
    };
    store
        .add_task(&crate::store::HandTask {
            account,
            csm: csm.as_deref(),
            title,
            due,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
        .map(Some)
}

/// Starts a playbook on `account`: each of its steps becomes a task for the account's CSM,
/// due its days after `today`, `{account}` in a title replaced by the account's name. The
/// tasks' ids, in the playbook's order; `None` when there is no such account.
pub fn start_playbook(
    store: &(impl Records + Tasks + ?Sized),
    account: &str,
    playbook: &super::Playbook,
    today: NaiveDate,
) -> Result<Option<Vec<i64>>, StoreError> {
    let Some((csm, _)) = owners(store)?.remove(account) else {
        return Ok(None);
    };
    let name = account_names(store)?
        .remove(account)
        .unwrap_or_else(|| account.to_string());
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut ids = Vec::with_capacity(playbook.tasks.len());
    for step in &playbook.tasks {
        let title = step.title.replace("{account}", &name);
        ids.push(store.add_task(&crate::store::HandTask {
            account,
            csm: csm.as_deref(),
            title: &title,
            due: today + chrono::Duration::days(i64::from(step.due_days)),
            now_ms,
        })?);
    }
    Ok(Some(ids))
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

pub fn survey_send(
    store: &(impl Records + Surveys + ?Sized),
    id: i64,
) -> Result<Option<SurveySend>, StoreError> {
    let Some(send) = store.survey_send(id)? else {
        return Ok(None);
    };
    let account_name = crate::store::account_name(store, &send.account_id)?
        .flatten()
        .unwrap_or_else(|| send.account_id.clone());
    Ok(Some(SurveySend {
        id: send.id,
        kind: send.kind,
        account_name,
        answered: send.answered_ms.is_some(),
    }))
}

/// Records an answer as a survey response, once per invitation.
pub fn answer(
    store: &(impl Surveys + ?Sized),
    id: i64,
    score: i64,
    comment: Option<&str>,
) -> Result<Answered, StoreError> {
    store.answer(id, score, comment, chrono::Utc::now().timestamp_millis())
}

/// Sends the surveys the policy allows today among `occasions` (in order: a person asked
/// by an earlier one is not asked again within the policy's gap): each recorded once (by
/// occasion and person) with an email in the outbox when the person has an email and SMTP
/// is configured, else for the web snippet. Returns how many were sent.
pub fn dispatch_surveys(
    store: &(impl Surveys + Sessions + ?Sized),
    today: NaiveDate,
    config: &ActionsConfig,
    base_url: &str,
    occasions: &[(String, String, Trigger)],
) -> Result<usize, StoreError> {
    let policy = &config.surveys;
    if !policy.enabled || occasions.is_empty() {
        return Ok(0);
    }
    let mut users: Vec<&str> = occasions.iter().map(|(user, ..)| user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let mut keys: HashSet<String> = HashSet::new();
    let mut history: HashMap<String, Vec<Sent>> = HashMap::new();
    for send in store.sends_to(&users)? {
        let trigger = match send.trigger.as_str() {
            "ticket" => "ticket",
            "quarterly" => "quarterly",
            _ => "go-live",
        };
        let day = chrono::DateTime::from_timestamp_millis(send.sent_ms)
            .map(|d| d.date_naive())
            .unwrap_or(today);
        history
            .entry(send.user_id)
            .or_default()
            .push(Sent { trigger, day });
        keys.insert(send.key);
    }
    let emails = if config.smtp.is_some() {
        store.user_emails(&users)?
    } else {
        HashMap::new()
    };
    let mut sends = Vec::new();
    for (user, account, trigger) in occasions {
        let key = trigger.key(user);
        let past = history.entry(user.clone()).or_default();
        if keys.contains(&key) || surveys::allowed(trigger, past, today, policy).is_err() {
            continue;
        }
        past.push(Sent {
            trigger: trigger.name(),
            day: today,
        });
        keys.insert(key.clone());
        let kind = trigger.kind(policy).to_string();
        sends.push(NewSend {
            key,
            user_id: user.clone(),
            account_id: account.clone(),
            kind,
            trigger: trigger.name(),
            email: emails.get(user).cloned(),
        });
    }
    if sends.is_empty() {
        return Ok(0);
    }
    let secret = crate::users::secret(store, SURVEY_SECRET)?;
    let now = chrono::Utc::now().timestamp_millis();
    let email = |send: &NewSend, id: i64| -> Option<NewMessage> {
        let to = send.email.clone()?;
        let expires = now / 1000 + i64::from(policy.token_valid_days) * 86_400;
        let link = format!(
            "{}/s/{}",
            base_url.trim_end_matches('/'),
            crate::share::sign_payload(&secret, &format!("survey\n{id}"), expires)
        );
        let body = format!(
            "{}\n\nAnswer in one click (the link works for {} days):\n{link}\n",
            surveys::question(&send.kind),
            policy.token_valid_days
        );
        Some(NewMessage {
            idempotency_key: format!("survey-{id}"),
            channel: "surveys".into(),
            kind: "email".into(),
            target: to,
            subject: Some("A quick question".into()),
            body,
        })
    };
    store.record_sends(now, &sends, &email)
}

/// A survey link for send `id` (also what the snippet hands out).
pub fn survey_link(
    store: &(impl Sessions + ?Sized),
    id: i64,
    valid_days: u32,
    base_url: &str,
) -> Result<String, StoreError> {
    let secret = crate::users::secret(store, SURVEY_SECRET)?;
    let expires = chrono::Utc::now().timestamp() + i64::from(valid_days) * 86_400;
    Ok(format!(
        "{}/s/{}",
        base_url.trim_end_matches('/'),
        crate::share::sign_payload(&secret, &format!("survey\n{id}"), expires)
    ))
}

// ---- the threads ----

/// One evaluation: snoozed tasks wake, the rules fire, the surveys go out. (alerts
/// recorded, surveys sent); `None`, doing nothing, while the numbers lag behind.
pub fn run_once(
    store: &(impl Activity
          + Records
          + Models
          + History
          + Notes
          + Rules
          + Alerts
          + Tasks
          + Surveys
          + Sessions
          + StoredSettings
          + ?Sized),
    today: NaiveDate,
    settings: Settings,
    config: &ActionsConfig,
    base_url: &str,
) -> Result<Option<(usize, usize)>, StoreError> {
    if !store.settled()? {
        return Ok(None);
    }
    store.wake_snoozed(today)?;
    let config = &config_in_force(store, config)?;
    let rules = rules_to_run(store, config, None)?;
    let look = look(
        store,
        today,
        settings,
        &features_of(&rules),
        &config.surveys,
    )?;
    let fired = fire(store, today, config, base_url, &rules, &look, false)?;
    let surveys = dispatch_surveys(store, today, config, base_url, &look.occasions)?;
    Ok(Some((fired.iter().filter(|f| f.recorded).count(), surveys)))
}

/// The accounts among `changes` (as `tier_changes` lists them) whose tier fell because their
/// use moved: a new model's re-tiering (cause `model`) is no customer change and alerts nobody.
pub fn usage_drops(changes: &[Change]) -> HashSet<String> {
    let rank = |tier: &str| crate::health::TIERS.iter().position(|x| *x == tier);
    changes
        .iter()
        .filter(|c| c.cause == "usage")
        .filter(|c| matches!((rank(&c.to), rank(&c.from)), (Some(to), Some(from)) if to < from))
        .map(|c| c.account_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usage_caused_drops_alert() {
        let change = |account: &str, from: &str, to: &str, cause: &str| Change {
            id: 0,
            account_id: account.into(),
            date: NaiveDate::default(),
            from: from.into(),
            to: to.into(),
            model_id: 1,
            cause: cause.into(),
        };
        let changes = [
            change("a", "green", "red", "usage"),
            change("b", "green", "red", "model"),
            change("c", "red", "yellow", "usage"),
            change("d", "unknown", "red", "model"),
        ];
        assert_eq!(usage_drops(&changes), HashSet::from(["a".to_string()]));
    }
}
