//! What the dashboard reads from the embedded store beside the metrics: features known,
//! an account's latest events and its records.

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::metrics::config::MetricsConfig;
use crate::records::Kind;
use crate::store::{DashboardSource, RecentEvent, StoreError};

impl DashboardSource for Connection {
    fn known_features(&self, _config: &MetricsConfig) -> Result<Vec<String>, StoreError> {
        let mut query =
            self.prepare("SELECT DISTINCT feature FROM account_features ORDER BY feature")?;
        let rows = query.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The account's people are the users a group call made members; each one's newest
    /// events come through `person_events`, plus those not indexed yet.
    fn recent_events(&self, account: &str, limit: usize) -> Result<Vec<RecentEvent>, StoreError> {
        let mut query = self.prepare(
            "SELECT timestamp_ms, type, event, user_id FROM (
                 SELECT e.id, e.timestamp_ms, e.type, e.event, e.user_id
                 FROM (SELECT DISTINCT user_id FROM memberships WHERE account_id = ?1 AND user_id IS NOT NULL) m
                 JOIN events e ON e.id IN (SELECT id FROM person_events WHERE key = m.user_id ORDER BY id DESC LIMIT ?2)
                 WHERE e.user_id = m.user_id
                 UNION
                 SELECT id, timestamp_ms, type, event, user_id FROM events
                 WHERE id > (SELECT indexed_to FROM rollup_state WHERE id = 1)
                     AND user_id IN (SELECT user_id FROM memberships WHERE account_id = ?1)
                 ORDER BY id DESC LIMIT ?2
             ) ORDER BY timestamp_ms DESC",
        )?;
        let rows = query.query_map(params![account, limit as i64], |r| {
            Ok(RecentEvent {
                timestamp_ms: r.get(0)?,
                kind: r.get(1)?,
                event: r.get(2)?,
                user_id: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn of_account(
        &self,
        kind: &'static Kind,
        account: &str,
        order_by: &str,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError> {
        crate::store::sqlite::records::of_account(self, kind, account, order_by, limit)
    }
}
