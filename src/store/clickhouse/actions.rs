//! The actions on ClickHouse: API rules, alerts, the outbox, tasks and survey invitations
//! as versioned documents in one ReplacingMergeTree table, `action_rows`.
//!
//! One table means that a decision and what it brings (an alert, its outbox messages and
//! tasks; an invitation and its email) are one insert block, which ClickHouse stores whole
//! or not at all. A row is (kind, id, version) with the columns reads filter on (status,
//! account, person, a time) and the document as JSON. Reads take each id's newest version
//! (`argMax(..., version)` grouped by id, never `FINAL` with a filter on another column).
//!
//! Ids come from what a row is about (an alert from its rule, account and UTC day; a
//! message from its idempotency key; an invitation from its occasion and person), so two
//! nodes deciding the same thing write the same rows. Rows are created at version 1 and
//! changed at the nanosecond of the change: writing a creation again (a retried
//! evaluation, a second node) never undoes a later change such as a message marked sent.
//! The evaluator and the outbox worker run on the node with `[health] background = true`.

use crate::store::{Alerts, Outbox, Rules, Surveys, Tasks};
use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::Value;

use super::{block_on, fetch_all, now_version, ClickHouse, RecordImport};
use crate::actions::Rule;
use crate::records;
use crate::store::ImportTarget;
use crate::store::StoreError;
use crate::store::{
    AlertRow, Answered, FollowUp, NewAlert, NewMessage, NewSend, NewTask, OutboxRow, SendRow,
    TaskFilter, TaskRow,
};

/// The version of a row as first written.
const CREATED: u64 = 1;

/// A stable id for what `text` names: the first 53 bits of its SHA-256 (exact in JSON).
fn id_of(text: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    (u64::from_be_bytes(digest[..8].try_into().expect("invariant: 8 bytes")) >> 11) as i64
}

/// One row to write.
struct Line<'a> {
    kind: &'static str,
    id: i64,
    version: u64,
    status: &'a str,
    account_id: &'a str,
    user_id: &'a str,
    at_ms: i64,
    created_ms: i64,
    body: Value,
}

impl Line<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let line = serde_json::json!({"kind": self.kind, "id": self.id, "version": self.version, "status": self.status, "account_id": self.account_id,
            "user_id": self.user_id, "at_ms": self.at_ms, "created_ms": self.created_ms, "body": self.body.to_string()});
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
}

fn outbox_line<'a>(
    row: &'a OutboxRow,
    account_id: &'a str,
    user_id: &'a str,
    version: u64,
) -> Line<'a> {
    Line {
        kind: "outbox",
        id: row.id,
        version,
        status: &row.status,
        account_id,
        user_id,
        at_ms: row.next_attempt_ms,
        created_ms: row.created_ms,
        body: serde_json::to_value(row).expect("invariant: a row serialises"),
    }
}

/// An alert's tasks among `open` (the account's tasks not done, with the version to write
/// each at): merged into the open task with the same cause, else made (at `CREATED`).
fn add_tasks(
    open: &mut Vec<(TaskRow, Option<u64>)>,
    alert: &NewAlert,
    id: i64,
    tasks: &[NewTask],
    now_ms: i64,
) {
    // The oldest such task, as on the embedded store.
    let merge_into = tasks.first().and_then(|t| {
        open.iter()
            .enumerate()
            .filter(|(_, (o, _))| {
                o.account_id == alert.account_id && o.cause.as_deref() == Some(t.cause.as_str())
            })
            .min_by_key(|(_, (o, _))| (o.created_ms, o.id))
            .map(|(at, _)| at)
    });
    if let Some(at) = merge_into {
        let (task, version) = &mut open[at];
        task.also.push(crate::store::merged_reason(alert));
        task.updated_ms = now_ms;
        version.get_or_insert_with(now_version);
        return;
    }
    open.extend(tasks.iter().enumerate().map(|(n, t)| {
        let task = TaskRow {
            id: id_of(&format!("task\n{id}\n{n}")),
            account_id: alert.account_id.clone(),
            alert_id: Some(id),
            csm: t.csm.clone(),
            title: t.title.clone(),
            status: "open".into(),
            due: Some(t.due.to_string()),
            snoozed_until: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            cause: Some(t.cause.clone()),
            also: Vec::new(),
        };
        (task, Some(CREATED))
    }));
}

fn task_line(row: &TaskRow, version: u64) -> Line<'_> {
    Line {
        kind: "task",
        id: row.id,
        version,
        status: &row.status,
        account_id: &row.account_id,
        user_id: row.csm.as_deref().unwrap_or(""),
        at_ms: row.updated_ms,
        created_ms: row.created_ms,
        body: serde_json::to_value(row).expect("invariant: a row serialises"),
    }
}

fn send_line(row: &SendRow, version: u64) -> Line<'_> {
    Line {
        kind: "survey_send",
        id: row.id,
        version,
        status: if row.answered_ms.is_some() {
            "answered"
        } else {
            "open"
        },
        account_id: &row.account_id,
        user_id: &row.user_id,
        at_ms: row.sent_ms,
        created_ms: row.sent_ms,
        body: serde_json::to_value(row).expect("invariant: a row serialises"),
    }
}

/// A current document with the columns a change writes again.
#[derive(clickhouse::Row, Deserialize)]
struct Doc {
    id: i64,
    account_id: String,
    user_id: String,
    body: String,
}

impl Doc {
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_str(&self.body)
            .map_err(|e| StoreError::Invalid(format!("stored action row {}: {e}", self.id)))
    }
}

/// The newest version of each `kind` row (bound first) among the rows `inner` selects
/// (extra conditions on columns a row never changes, or on ids), then `outer` (conditions
/// on `cur_status`, `cur_at`, `cur_created`, order, limit).
fn current(inner: &str, outer: &str) -> String {
    format!(
        "SELECT id, cur_account AS account_id, cur_user AS user_id, cur_body AS body FROM (
             SELECT id, argMax(body, version) AS cur_body, argMax(status, version) AS cur_status, argMax(account_id, version) AS cur_account,
                    argMax(user_id, version) AS cur_user, argMax(at_ms, version) AS cur_at, argMax(created_ms, version) AS cur_created
             FROM action_rows WHERE kind = ? {inner} GROUP BY id
         ) {outer}"
    )
}

/// An inner condition: the ids of `kind` whose newest status is the one bound.
fn with_status(kind: &str) -> String {
    format!("AND id IN (SELECT id FROM action_rows WHERE kind = '{kind}' GROUP BY id HAVING argMax(status, version) = ?)")
}

impl ClickHouse {
    async fn docs(&self, query: clickhouse::query::Query) -> Result<Vec<Doc>, StoreError> {
        fetch_all(query, "action rows").await
    }

    async fn one(&self, kind: &str, id: i64) -> Result<Option<Doc>, StoreError> {
        Ok(self
            .docs(
                self.client
                    .query(&current("AND id = ?", ""))
                    .bind(kind)
                    .bind(id),
            )
            .await?
            .pop())
    }

    async fn put(&self, lines: &[Line<'_>]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut body = Vec::new();
        for line in lines {
            line.write(&mut body);
        }
        self.insert_lines(
            "action_rows",
            "kind, id, version, status, account_id, user_id, at_ms, created_ms, body",
            body,
        )
        .await
    }

    async fn current_tasks(&self, account: Option<&str>) -> Result<Vec<TaskRow>, StoreError> {
        let query = match account {
            Some(account) => self
                .client
                .query(&current("AND account_id = ?", ""))
                .bind("task")
                .bind(account),
            None => self.client.query(&current("", "")).bind("task"),
        };
        self.docs(query).await?.iter().map(Doc::parse).collect()
    }

    /// The tasks not done on the alerts' accounts, each with the version to write it at
    /// (`None` until it is merged into).
    async fn open_tasks(
        &self,
        alerts: &[NewAlert],
    ) -> Result<Vec<(TaskRow, Option<u64>)>, StoreError> {
        let accounts: Vec<&str> = alerts.iter().map(|a| a.account_id.as_str()).collect();
        self.docs(
            self.client
                .query(&current(
                    "AND has(?, account_id)",
                    "WHERE cur_status != 'done'",
                ))
                .bind("task")
                .bind(&accounts),
        )
        .await?
        .iter()
        .map(|d| Ok((d.parse::<TaskRow>()?, None)))
        .collect()
    }

    async fn record_alerts(
        &self,
        now_ms: i64,
        alerts: &[NewAlert],
        follow_up: &dyn Fn(&NewAlert, i64) -> FollowUp,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let since = alerts
            .iter()
            .map(|a| a.cooldown_from_ms)
            .min()
            .unwrap_or(now_ms);
        let recent: Vec<AlertRow> = self
            .docs(
                self.client
                    .query(&current("", "WHERE cur_at > ?"))
                    .bind("alert")
                    .bind(since),
            )
            .await?
            .iter()
            .map(Doc::parse)
            .collect::<Result<_, _>>()?;
        let day = now_ms.div_euclid(86_400_000);
        let mut open = self.open_tasks(alerts).await?;
        let mut ids = Vec::with_capacity(alerts.len());
        let mut rows: Vec<(AlertRow, Value, Vec<OutboxRow>)> = Vec::new();
        for new in alerts {
            if recent.iter().any(|r| {
                r.rule == new.rule
                    && r.account_id == new.account_id
                    && r.fired_ms > new.cooldown_from_ms
            }) {
                ids.push(None);
                continue;
            }
            let id = id_of(&format!("alert\n{}\n{}\n{day}", new.rule, new.account_id));
            let alert = AlertRow {
                id,
                rule: new.rule.clone(),
                account_id: new.account_id.clone(),
                fired_ms: now_ms,
                reason: new.reason.clone(),
            };
            let mut body = serde_json::to_value(&alert).expect("invariant: a row serialises");
            body["measures"] = Value::Object(new.measures.clone());
            let follow = follow_up(new, id);
            let messages = follow
                .messages
                .iter()
                .map(|m| message_row(m, Some(id), now_ms))
                .collect();
            add_tasks(&mut open, new, id, &follow.tasks, now_ms);
            rows.push((alert, body, messages));
            ids.push(Some(id));
        }
        let mut lines = Vec::new();
        for (alert, body, messages) in &rows {
            lines.push(Line {
                kind: "alert",
                id: alert.id,
                version: CREATED,
                status: "",
                account_id: &alert.account_id,
                user_id: "",
                at_ms: now_ms,
                created_ms: now_ms,
                body: body.clone(),
            });
            lines.extend(
                messages
                    .iter()
                    .map(|m| outbox_line(m, &alert.account_id, "", CREATED)),
            );
        }
        lines.extend(
            open.iter()
                .filter_map(|(t, version)| Some(task_line(t, (*version)?))),
        );
        self.put(&lines).await?;
        Ok(ids)
    }

    async fn record_sends(
        &self,
        now_ms: i64,
        sends: &[NewSend],
        email: &dyn Fn(&NewSend, i64) -> Option<NewMessage>,
    ) -> Result<usize, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Id {
            id: i64,
        }
        let wanted: Vec<i64> = sends.iter().map(|s| id_of(&s.key)).collect();
        let known: HashSet<i64> = fetch_all::<Id>(
            self.client
                .query(
                    "SELECT DISTINCT id FROM action_rows WHERE kind = 'survey_send' AND has(?, id)",
                )
                .bind(&wanted),
            "survey invitations",
        )
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
        let mut rows: Vec<(SendRow, Option<OutboxRow>)> = Vec::new();
        for (send, id) in sends.iter().zip(wanted) {
            if known.contains(&id) || rows.iter().any(|(r, _)| r.id == id) {
                continue;
            }
            let delivery = if send.email.is_some() {
                "email"
            } else {
                "snippet"
            };
            let row = SendRow {
                id,
                key: send.key.clone(),
                user_id: send.user_id.clone(),
                account_id: send.account_id.clone(),
                kind: send.kind.clone(),
                trigger: send.trigger.to_string(),
                delivery: delivery.into(),
                sent_ms: now_ms,
                answered_ms: None,
                response_id: None,
            };
            rows.push((row, email(send, id).map(|m| message_row(&m, None, now_ms))));
        }
        let mut lines = Vec::new();
        for (send, message) in &rows {
            lines.push(send_line(send, CREATED));
            // The email holds the person's address: erasure finds it by the person.
            lines.extend(
                message
                    .iter()
                    .map(|m| outbox_line(m, &send.account_id, &send.user_id, CREATED)),
            );
        }
        self.put(&lines).await?;
        Ok(rows.len())
    }
}

fn message_row(message: &NewMessage, alert_id: Option<i64>, now_ms: i64) -> OutboxRow {
    OutboxRow {
        id: id_of(&message.idempotency_key),
        idempotency_key: message.idempotency_key.clone(),
        alert_id,
        channel: message.channel.clone(),
        kind: message.kind.clone(),
        target: message.target.clone(),
        subject: message.subject.clone(),
        body: message.body.clone(),
        status: "pending".into(),
        attempts: 0,
        next_attempt_ms: now_ms,
        last_error: None,
        created_ms: now_ms,
        sent_ms: None,
    }
}

impl Rules for ClickHouse {
    fn stored_rules(&self) -> Result<Vec<Rule>, StoreError> {
        let docs = block_on(
            self.docs(
                self.client
                    .query(&current("", "WHERE cur_status != 'deleted'"))
                    .bind("rule"),
            ),
        )??;
        let mut rules: Vec<Rule> = docs.iter().map(Doc::parse).collect::<Result<_, _>>()?;
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rules)
    }

    fn save_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let body = serde_json::to_value(rule).expect("invariant: a rule serialises");
        let line = Line {
            kind: "rule",
            id: id_of(&format!("rule\n{}", rule.name)),
            version: now_version(),
            status: "active",
            account_id: "",
            user_id: "",
            at_ms: now,
            created_ms: now,
            body,
        };
        block_on(self.put(&[line]))?
    }

    fn delete_rule(&self, name: &str) -> Result<bool, StoreError> {
        let id = id_of(&format!("rule\n{name}"));
        block_on(async {
            let docs = self
                .docs(
                    self.client
                        .query(&current("AND id = ?", "WHERE cur_status != 'deleted'"))
                        .bind("rule")
                        .bind(id),
                )
                .await?;
            let Some(doc) = docs.first() else {
                return Ok(false);
            };
            let now = chrono::Utc::now().timestamp_millis();
            let body: Value = doc.parse()?;
            self.put(&[Line {
                kind: "rule",
                id,
                version: now_version(),
                status: "deleted",
                account_id: "",
                user_id: "",
                at_ms: now,
                created_ms: now,
                body,
            }])
            .await?;
            Ok(true)
        })?
    }
}

impl Alerts for ClickHouse {
    fn record_alerts(
        &self,
        now_ms: i64,
        alerts: &[NewAlert],
        follow_up: &dyn Fn(&NewAlert, i64) -> FollowUp,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        block_on(ClickHouse::record_alerts(self, now_ms, alerts, follow_up))?
    }

    fn alerts(
        &self,
        since_ms: i64,
        account: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let outer = format!("WHERE cur_at >= ? ORDER BY cur_at DESC, id DESC LIMIT {limit}");
        let query = match account {
            Some(account) => self
                .client
                .query(&current("AND account_id = ?", &outer))
                .bind("alert")
                .bind(account),
            None => self.client.query(&current("", &outer)).bind("alert"),
        };
        block_on(self.docs(query.bind(since_ms)))??
            .iter()
            .map(Doc::parse)
            .collect()
    }
}

impl Outbox for ClickHouse {
    fn outbox(&self, status: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let query = self
            .client
            .query(&current(
                &with_status("outbox"),
                &format!("ORDER BY cur_created DESC, id DESC LIMIT {limit}"),
            ))
            .bind("outbox")
            .bind(status);
        block_on(self.docs(query))??
            .iter()
            .map(Doc::parse)
            .collect()
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let query = self
            .client
            .query(&current(
                &with_status("outbox"),
                &format!("WHERE cur_at <= ? ORDER BY cur_at, id LIMIT {limit}"),
            ))
            .bind("outbox")
            .bind("pending")
            .bind(now_ms);
        block_on(self.docs(query))??
            .iter()
            .map(Doc::parse)
            .collect()
    }

    fn mark(&self, row: &OutboxRow) -> Result<(), StoreError> {
        block_on(async {
            let Some(doc) = self.one("outbox", row.id).await? else {
                return Err(StoreError::Invalid(format!("no outbox message {}", row.id)));
            };
            self.put(&[outbox_line(
                row,
                &doc.account_id,
                &doc.user_id,
                now_version(),
            )])
            .await
        })?
    }

    fn retry(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        block_on(async {
            let Some(doc) = self.one("outbox", id).await? else {
                return Ok(false);
            };
            let mut row: OutboxRow = doc.parse()?;
            if row.status != "dead" {
                return Ok(false);
            }
            row.status = "pending".into();
            row.attempts = 0;
            row.next_attempt_ms = now_ms;
            self.put(&[outbox_line(
                &row,
                &doc.account_id,
                &doc.user_id,
                now_version(),
            )])
            .await?;
            Ok(true)
        })?
    }
}

impl Tasks for ClickHouse {
    fn tasks(&self, filter: TaskFilter<'_>, limit: usize) -> Result<Vec<TaskRow>, StoreError> {
        let mut tasks: Vec<TaskRow> = block_on(self.current_tasks(filter.account))??
            .into_iter()
            .filter(|t| filter.holds(t))
            .collect();
        tasks.sort_by(crate::store::task_order);
        tasks.truncate(limit);
        Ok(tasks)
    }

    fn update_task(
        &self,
        id: i64,
        status: &str,
        snoozed_until: Option<NaiveDate>,
        due: Option<NaiveDate>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        block_on(async {
            let Some(doc) = self.one("task", id).await? else {
                return Ok(false);
            };
            let mut task: TaskRow = doc.parse()?;
            task.status = status.to_string();
            task.snoozed_until = snoozed_until.map(|d| d.to_string());
            if let Some(due) = due {
                task.due = Some(due.to_string());
            }
            task.updated_ms = now_ms;
            self.put(&[task_line(&task, now_version())]).await?;
            Ok(true)
        })?
    }

    fn add_task(&self, task: &crate::store::HandTask<'_>) -> Result<i64, StoreError> {
        let nonce: u64 = rand::random();
        let row = TaskRow {
            id: id_of(&format!(
                "task\nhand\n{}\n{}\n{nonce}",
                task.account, task.now_ms
            )),
            account_id: task.account.to_string(),
            alert_id: None,
            csm: task.csm.map(str::to_string),
            title: task.title.to_string(),
            status: "open".into(),
            due: Some(task.due.to_string()),
            snoozed_until: None,
            created_ms: task.now_ms,
            updated_ms: task.now_ms,
            cause: None,
            also: Vec::new(),
        };
        block_on(self.put(&[task_line(&row, CREATED)]))??;
        Ok(row.id)
    }

    fn wake_snoozed(&self, today: NaiveDate) -> Result<(), StoreError> {
        let today = today.to_string();
        block_on(async {
            let docs = self
                .docs(
                    self.client
                        .query(&current(&with_status("task"), ""))
                        .bind("task")
                        .bind("snoozed"),
                )
                .await?;
            let mut woken = Vec::new();
            for doc in &docs {
                let mut task: TaskRow = doc.parse()?;
                if task
                    .snoozed_until
                    .as_deref()
                    .is_some_and(|d| d <= today.as_str())
                {
                    task.status = "open".into();
                    task.snoozed_until = None;
                    woken.push(task);
                }
            }
            let version = now_version();
            self.put(
                &woken
                    .iter()
                    .map(|t| task_line(t, version))
                    .collect::<Vec<_>>(),
            )
            .await
        })?
    }
}

impl Surveys for ClickHouse {
    fn survey_send(&self, id: i64) -> Result<Option<SendRow>, StoreError> {
        block_on(self.one("survey_send", id))??
            .map(|d| d.parse())
            .transpose()
    }

    fn sends_to(&self, users: &[&str]) -> Result<Vec<SendRow>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        block_on(
            self.docs(
                self.client
                    .query(&current("AND has(?, user_id)", ""))
                    .bind("survey_send")
                    .bind(users),
            ),
        )??
        .iter()
        .map(Doc::parse)
        .collect()
    }

    /// The newest non-empty `email` trait of each person's identify calls.
    fn user_emails(&self, users: &[&str]) -> Result<HashMap<String, String>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Email {
            user_id: String,
            email: String,
        }
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let query = self
            .client
            .query(
                "SELECT user_id, argMax(visitParamExtractString(traits, 'email'), timestamp_ms) AS email FROM events
                 WHERE type = 'identify' AND has(?, user_id) AND visitParamExtractString(traits, 'email') != '' GROUP BY user_id",
            )
            .bind(users);
        Ok(block_on(fetch_all::<Email>(query, "people's emails"))??
            .into_iter()
            .map(|e| (e.user_id, e.email))
            .collect())
    }

    fn record_sends(
        &self,
        now_ms: i64,
        sends: &[NewSend],
        email: &dyn Fn(&NewSend, i64) -> Option<NewMessage>,
    ) -> Result<usize, StoreError> {
        block_on(ClickHouse::record_sends(self, now_ms, sends, email))?
    }

    /// The answer is stored first: if marking the invitation answered then fails, answering
    /// again writes the same response.
    fn answer(
        &self,
        id: i64,
        score: i64,
        comment: Option<&str>,
        now_ms: i64,
    ) -> Result<Answered, StoreError> {
        let Some(doc) = block_on(self.one("survey_send", id))?? else {
            return Ok(Answered::NoSuchSurvey);
        };
        let mut send: SendRow = doc.parse()?;
        if send.answered_ms.is_some() {
            return Ok(Answered::AlreadyAnswered);
        }
        let response_id = format!("survey-{id}");
        let fields = serde_json::json!({"response_id": response_id, "account_id": send.account_id, "user_id": send.user_id, "kind": send.kind,
            "score": score, "comment": comment, "answered_at": crate::ingest::format_timestamp(now_ms), "trigger": send.trigger});
        let kind = &records::SURVEY_RESPONSES;
        let record = records::from_json(kind, fields.as_object().expect("invariant: an object"))
            .map_err(|errors| {
                StoreError::Invalid(
                    errors
                        .iter()
                        .map(|e| format!("{}: {}", e.column, e.reason))
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
        let mut target = Box::new(RecordImport::new(self.clone(), kind));
        target.upsert(kind, &record)?;
        target.commit()?;
        send.answered_ms = Some(now_ms);
        send.response_id = Some(response_id.clone());
        block_on(self.put(&[send_line(&send, now_version())]))??;
        Ok(Answered::Stored(response_id))
    }

    fn pending_survey(&self, user_id: &str, since_ms: i64) -> Result<Option<i64>, StoreError> {
        let query = self
            .client
            .query(&current(
                &format!("AND user_id = ? {}", with_status("survey_send")),
                "WHERE cur_at >= ? ORDER BY cur_at DESC, id DESC LIMIT 1",
            ))
            .bind("survey_send")
            .bind(user_id)
            .bind("open")
            .bind(since_ms);
        Ok(block_on(self.docs(query))??.first().map(|d| d.id))
    }
}
