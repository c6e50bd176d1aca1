//! The actions' tables on the embedded store: API rules, alerts, the outbox, tasks and
//! survey invitations; each decision in one IMMEDIATE transaction.

use crate::store::{Alerts, Outbox, Rules, Surveys, Tasks};
use std::collections::HashMap;

use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::actions::Rule;
use crate::store::{
    AlertRow, Answered, FollowUp, NewAlert, NewMessage, NewSend, OutboxRow, SendRow, StoreError,
    TaskFilter, TaskRow,
};

// ---- the embedded store ----

const OUTBOX_COLUMNS: &str = "id, idempotency_key, alert_id, channel, kind, target, subject, body, status, attempts, next_attempt_ms, last_error, created_ms, sent_ms";

fn outbox_row(r: &rusqlite::Row) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        idempotency_key: r.get(1)?,
        alert_id: r.get(2)?,
        channel: r.get(3)?,
        kind: r.get(4)?,
        target: r.get(5)?,
        subject: r.get(6)?,
        body: r.get(7)?,
        status: r.get(8)?,
        attempts: r.get(9)?,
        next_attempt_ms: r.get(10)?,
        last_error: r.get(11)?,
        created_ms: r.get(12)?,
        sent_ms: r.get(13)?,
    })
}

const SEND_COLUMNS: &str =
    "id, key, user_id, account_id, kind, trigger, delivery, sent_ms, answered_ms, response_id";

fn send_row(r: &rusqlite::Row) -> rusqlite::Result<SendRow> {
    Ok(SendRow {
        id: r.get(0)?,
        key: r.get(1)?,
        user_id: r.get(2)?,
        account_id: r.get(3)?,
        kind: r.get(4)?,
        trigger: r.get(5)?,
        delivery: r.get(6)?,
        sent_ms: r.get(7)?,
        answered_ms: r.get(8)?,
        response_id: r.get(9)?,
    })
}

fn insert_message(
    tx: &Connection,
    message: &NewMessage,
    alert_id: Option<i64>,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO outbox (idempotency_key, alert_id, channel, kind, target, subject, body, status, next_attempt_ms, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8)",
        params![message.idempotency_key, alert_id, message.channel, message.kind, message.target, message.subject, message.body, now_ms],
    )?;
    Ok(())
}

impl Rules for Connection {
    fn stored_rules(&self) -> Result<Vec<Rule>, StoreError> {
        let mut query = self.prepare("SELECT name, body FROM rules ORDER BY name")?;
        let rows = query.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, body) = row?;
            out.push(
                serde_json::from_str(&body)
                    .map_err(|e| StoreError::Invalid(format!("stored rule {name}: {e}")))?,
            );
        }
        Ok(out)
    }

    fn save_rule(&self, rule: &Rule) -> Result<(), StoreError> {
        self.execute(
            "INSERT OR REPLACE INTO rules (name, body, created_ms) VALUES (?1, ?2, ?3)",
            params![
                rule.name,
                serde_json::to_string(rule).expect("invariant: a rule serialises"),
                chrono::Utc::now().timestamp_millis()
            ],
        )?;
        Ok(())
    }

    fn delete_rule(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM rules WHERE name = ?1", [name])? > 0)
    }
}

impl Alerts for Connection {
    /// The cooldown is checked inside the transaction that records the alert.
    fn record_alerts(
        &self,
        now_ms: i64,
        alerts: &[NewAlert],
        follow_up: &dyn Fn(&NewAlert, i64) -> FollowUp,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let tx = super::write_transaction(self, super::Lock::Main)?;
        let mut out = Vec::with_capacity(alerts.len());
        for new in alerts {
            let recent: Option<i64> = tx
                .query_row("SELECT id FROM alerts WHERE rule = ?1 AND account_id = ?2 AND fired_ms > ?3 LIMIT 1", params![new.rule, new.account_id, new.cooldown_from_ms], |r| r.get(0))
                .optional()?;
            if recent.is_some() {
                out.push(None);
                continue;
            }
            tx.execute(
                "INSERT INTO alerts (rule, account_id, fired_ms, reason, measures) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![new.rule, new.account_id, now_ms, new.reason, Value::Object(new.measures.clone()).to_string()],
            )?;
            let id = tx.last_insert_rowid();
            let follow = follow_up(new, id);
            for message in &follow.messages {
                insert_message(&tx, message, Some(id), now_ms)?;
            }
            let open: Option<i64> = match follow.tasks.first() {
                Some(task) => tx
                    .query_row(
                        "SELECT id FROM tasks WHERE account_id = ?1 AND cause = ?2 AND status != 'done' ORDER BY created_ms, id LIMIT 1",
                        params![new.account_id, task.cause],
                        |r| r.get(0),
                    )
                    .optional()?,
                None => None,
            };
            if let Some(task) = open {
                tx.execute(
                    "UPDATE tasks SET also = COALESCE(also || char(10), '') || ?2, updated_ms = ?3 WHERE id = ?1",
                    params![task, crate::store::merged_reason(new), now_ms],
                )?;
            } else {
                for task in &follow.tasks {
                    tx.execute(
                        "INSERT INTO tasks (account_id, alert_id, csm, title, status, due, created_ms, updated_ms, cause) VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?6, ?7)",
                        params![new.account_id, id, task.csm, task.title, task.due.to_string(), now_ms, task.cause],
                    )?;
                }
            }
            out.push(Some(id));
        }
        tx.commit()?;
        Ok(out)
    }

    fn alerts(
        &self,
        since_ms: i64,
        account: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AlertRow>, StoreError> {
        let mut query = self.prepare(
            "SELECT id, rule, account_id, fired_ms, reason FROM alerts WHERE fired_ms >= ?1 AND (?2 IS NULL OR account_id = ?2) ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = query.query_map(params![since_ms, account, limit as i64], |r| {
            Ok(AlertRow {
                id: r.get(0)?,
                rule: r.get(1)?,
                account_id: r.get(2)?,
                fired_ms: r.get(3)?,
                reason: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl Outbox for Connection {
    fn outbox(&self, status: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut query = self.prepare(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = query.query_map(params![status, limit as i64], outbox_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut query = self.prepare(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_ms <= ?1 ORDER BY next_attempt_ms, id LIMIT ?2"))?;
        let rows = query.query_map(params![now_ms, limit as i64], outbox_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn mark(&self, row: &OutboxRow) -> Result<(), StoreError> {
        self.execute(
            "UPDATE outbox SET status = ?2, attempts = ?3, next_attempt_ms = ?4, last_error = ?5, sent_ms = ?6 WHERE id = ?1",
            params![row.id, row.status, row.attempts, row.next_attempt_ms, row.last_error, row.sent_ms],
        )?;
        Ok(())
    }

    fn retry(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.execute("UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_ms = ?2 WHERE id = ?1 AND status = 'dead'", params![id, now_ms])? > 0)
    }
}

impl Tasks for Connection {
    fn tasks(&self, filter: TaskFilter<'_>, limit: usize) -> Result<Vec<TaskRow>, StoreError> {
        let mut query = self.prepare(
            "SELECT id, account_id, alert_id, csm, title, status, due, snoozed_until, created_ms, updated_ms, cause, also FROM tasks
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR csm = ?2) AND (?3 IS NULL OR account_id = ?3)
             ORDER BY status = 'done', due IS NULL, due, id LIMIT ?4",
        )?;
        let rows = query.query_map(
            params![filter.status, filter.csm, filter.account, limit as i64],
            |r| {
                Ok(TaskRow {
                    id: r.get(0)?,
                    account_id: r.get(1)?,
                    alert_id: r.get(2)?,
                    csm: r.get(3)?,
                    title: r.get(4)?,
                    status: r.get(5)?,
                    due: r.get(6)?,
                    snoozed_until: r.get(7)?,
                    created_ms: r.get(8)?,
                    updated_ms: r.get(9)?,
                    cause: r.get(10)?,
                    also: r
                        .get::<_, Option<String>>(11)?
                        .map(|a| a.lines().map(str::to_string).collect())
                        .unwrap_or_default(),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn update_task(
        &self,
        id: i64,
        status: &str,
        snoozed_until: Option<NaiveDate>,
        due: Option<NaiveDate>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(
            "UPDATE tasks SET status = ?2, snoozed_until = ?3, due = COALESCE(?4, due), updated_ms = ?5 WHERE id = ?1",
            params![id, status, snoozed_until.map(|d| d.to_string()), due.map(|d| d.to_string()), now_ms],
        )? > 0)
    }

    fn add_task(&self, task: &crate::store::HandTask<'_>) -> Result<i64, StoreError> {
        self.execute(
            "INSERT INTO tasks (account_id, alert_id, csm, title, status, due, created_ms, updated_ms) VALUES (?1, NULL, ?2, ?3, 'open', ?4, ?5, ?5)",
            params![task.account, task.csm, task.title, task.due.to_string(), task.now_ms],
        )?;
        Ok(self.last_insert_rowid())
    }

    fn wake_snoozed(&self, today: NaiveDate) -> Result<(), StoreError> {
        self.execute("UPDATE tasks SET status = 'open', snoozed_until = NULL WHERE status = 'snoozed' AND snoozed_until <= ?1", [today.to_string()])?;
        Ok(())
    }
}

impl Surveys for Connection {
    fn survey_send(&self, id: i64) -> Result<Option<SendRow>, StoreError> {
        Ok(self
            .query_row(
                &format!("SELECT {SEND_COLUMNS} FROM survey_sends WHERE id = ?1"),
                [id],
                send_row,
            )
            .optional()?)
    }

    fn sends_to(&self, users: &[&str]) -> Result<Vec<SendRow>, StoreError> {
        let mut query = self.prepare_cached(&format!(
            "SELECT {SEND_COLUMNS} FROM survey_sends WHERE user_id = ?1"
        ))?;
        let mut out = Vec::new();
        for user in users {
            for row in query.query_map([user], send_row)? {
                out.push(row?);
            }
        }
        Ok(out)
    }

    fn user_emails(&self, users: &[&str]) -> Result<HashMap<String, String>, StoreError> {
        let mut query = self.prepare_cached(
            "SELECT json_extract(traits, '$.email') FROM users WHERE user_id = ?1",
        )?;
        let mut out = HashMap::new();
        for user in users {
            let email: Option<Option<String>> = query.query_row([user], |r| r.get(0)).optional()?;
            if let Some(email) = email.flatten().filter(|e| !e.is_empty()) {
                out.insert(user.to_string(), email);
            }
        }
        Ok(out)
    }

    /// A key already recorded (by another process meanwhile) is skipped by the UNIQUE index.
    fn record_sends(
        &self,
        now_ms: i64,
        sends: &[NewSend],
        email: &dyn Fn(&NewSend, i64) -> Option<NewMessage>,
    ) -> Result<usize, StoreError> {
        let tx = super::write_transaction(self, super::Lock::Main)?;
        let mut recorded = 0;
        for send in sends {
            let message = |id| email(send, id);
            let delivery = if send.email.is_some() {
                "email"
            } else {
                "snippet"
            };
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO survey_sends (key, user_id, account_id, kind, trigger, delivery, sent_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![send.key, send.user_id, send.account_id, send.kind, send.trigger, delivery, now_ms],
            )?;
            if inserted == 0 {
                continue;
            }
            if let Some(message) = message(tx.last_insert_rowid()) {
                insert_message(&tx, &message, None, now_ms)?;
            }
            recorded += 1;
        }
        tx.commit()?;
        Ok(recorded)
    }

    fn answer(
        &self,
        id: i64,
        score: i64,
        comment: Option<&str>,
        now_ms: i64,
    ) -> Result<Answered, StoreError> {
        let tx = super::write_transaction(self, super::Lock::Main)?;
        let Some(send) = tx
            .query_row(
                &format!("SELECT {SEND_COLUMNS} FROM survey_sends WHERE id = ?1"),
                [id],
                send_row,
            )
            .optional()?
        else {
            return Ok(Answered::NoSuchSurvey);
        };
        if send.answered_ms.is_some() {
            return Ok(Answered::AlreadyAnswered);
        }
        let response_id = format!("survey-{id}");
        tx.execute(
            "INSERT INTO survey_responses (response_id, account_id, user_id, kind, score, comment, answered_at, trigger, traits) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '{}')",
            params![response_id, send.account_id, send.user_id, send.kind, score, comment, crate::ingest::format_timestamp(now_ms), send.trigger],
        )?;
        tx.execute(
            "UPDATE survey_sends SET answered_ms = ?2, response_id = ?3 WHERE id = ?1",
            params![id, now_ms, response_id],
        )?;
        tx.commit()?;
        Ok(Answered::Stored(response_id))
    }

    fn pending_survey(&self, user_id: &str, since_ms: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .query_row(
                "SELECT id FROM survey_sends WHERE user_id = ?1 AND answered_ms IS NULL AND sent_ms >= ?2 ORDER BY id DESC LIMIT 1",
                params![user_id, since_ms],
                |r| r.get(0),
            )
            .optional()?)
    }
}
