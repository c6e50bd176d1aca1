//! Storage: the traits a backend implements, by capability, the rows they exchange and
//! the error type. [`sqlite`] is the embedded backend (two SQLite files in the data
//! directory), [`clickhouse`] the scale-out one; [`load`] turns either's record rows into
//! the metrics' inputs. The domain logic that reads and writes through these traits lives
//! in its domain (`health::history`, `actions::run`, `listening::report`, `accounts`).

pub mod backend;
pub mod clickhouse;
pub mod load;
pub mod sqlite;

pub use backend::Backend;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::actions::Rule;
use crate::health::model::Model;
use crate::metrics::activity::{day_date, day_number};
use crate::metrics::config::{CurrencyConfig, MetricsConfig};
use crate::metrics::{self, AccountData, Row, Subscription};
use crate::records::{Cell, Kind, Record};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: {reason}")]
    Schema { path: PathBuf, reason: String },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data: {0}")]
    Invalid(String),
    #[error("cannot start the writer thread: {0}")]
    Thread(String),
    #[error("{0}")]
    ClickHouse(String),
    #[error("no database at {}: nothing has been stored in this data dir (see --data-dir)", .0.display())]
    Missing(PathBuf),
}

/// Which events to list; `since_ms`/`until_ms` bound the time bellwether received them.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub since_ms: i64,
    pub until_ms: Option<i64>,
    pub user: Option<String>,
    pub account: Option<String>,
    pub limit: usize,
}

/// A stored event with its user and account resolved as METRICS.md says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredEvent {
    pub id: i64,
    pub received_at: String,
    pub source: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `userId`, or the user an `anonymousId` was later linked to by alias or identify.
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// `context.groupId` (or a group call's `groupId`), else the account the user was last
    /// grouped into at or before `timestamp`, else (an event before the user's first group
    /// call) the first account the user joined.
    pub account_id: Option<String>,
    pub event: Option<String>,
    pub timestamp: String,
    #[serde(skip)]
    pub received_ms: i64,
    #[serde(skip)]
    pub timestamp_ms: i64,
    #[serde(skip)]
    pub raw: String,
}

impl StoredEvent {
    /// The message as received, plus `messageId` if the client sent none (the one
    /// generated at ingest) and `receivedAt`.
    pub fn as_received(&self) -> Map<String, Value> {
        let mut object: Map<String, Value> = match serde_json::from_str(&self.raw) {
            Ok(Value::Object(object)) => object,
            _ => Map::new(),
        };
        if !object.contains_key("messageId") {
            object.insert("messageId".into(), Value::String(self.message_id.clone()));
        }
        object.insert("receivedAt".into(), Value::String(self.received_at.clone()));
        object
    }
}

/// Roles an API token can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Read,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Read => "read",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "read" => Some(Role::Read),
            _ => None,
        }
    }
}

/// An API token as listed; its secret is not kept.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_ms: i64,
    /// None: until revoked.
    pub expires_ms: Option<i64>,
}

/// One account's health on one day, as the daily history keeps it.
#[derive(Debug, Clone, Default)]
pub struct HistoryRow {
    pub account_id: String,
    /// The model in force that day.
    pub model_id: i64,
    /// The tier of the day's usage alone; `tier` is the held tier (see `health::hold`).
    pub raw_tier: Option<String>,
    /// The first day of the current run of equal raw tiers.
    pub raw_since: Option<i32>,
    pub engagement: Option<f64>,
    pub score: Option<f64>,
    pub band: Option<String>,
    pub tier: Option<String>,
    pub expected_rate: Option<f64>,
    pub monthly_uses: Option<f64>,
}

/// A change of an account's (held) tier.
#[derive(Debug, Clone)]
pub struct TierChange {
    pub account_id: String,
    pub day: i32,
    pub from_tier: String,
    pub to_tier: String,
    pub model_id: i64,
    /// `usage` or `model` (see `health::Cause`).
    pub cause: String,
}

/// What the metrics read of each account (its info, rollups and subscriptions, loaded
/// per day span), with the spans' feature uses, the first day of data, the features known
/// and an account's latest events.
pub trait Activity {
    /// The first (local) day with activity in the rollups (`config` says what activity is).
    fn data_start(&self, config: &MetricsConfig) -> Result<Option<i32>, StoreError>;
    /// Each span's (account, first day, last day, inclusive) uses of each feature, in the
    /// order of `spans`.
    fn feature_uses(
        &self,
        spans: &[(String, i32, i32)],
        config: &MetricsConfig,
    ) -> Result<Vec<HashMap<String, i64>>, StoreError>;
    /// Whether the numbers are current: on the embedded store, the rollups hold (nearly)
    /// every stored event.
    fn settled(&self) -> Result<bool, StoreError>;
    /// Every feature any account has used, by name.
    fn known_features(&self, config: &MetricsConfig) -> Result<Vec<String>, StoreError>;
    /// The last `limit` events received from the account's people, newest first by time.
    fn recent_events(&self, account: &str, limit: usize) -> Result<Vec<RecentEvent>, StoreError>;
    /// Every account, by id order (see [`accounts`]).
    fn accounts(&self) -> Result<Vec<AccountInfo>, StoreError>;
    /// The data of `infos`, with rollup rows from `from_day - lookback` to `to_day` and
    /// each account's value window (see [`load`]).
    fn load(
        &self,
        infos: &[&AccountInfo],
        from_day: i32,
        to_day: i32,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<AccountData>, StoreError>;
    /// Every account's subscriptions in the report currency.
    fn subscriptions(
        &self,
        infos: &[AccountInfo],
        currency: &CurrencyConfig,
    ) -> Result<HashMap<String, Vec<Subscription>>, StoreError>;

    /// Every account's metrics at `as_of` (the export), engagement scores included.
    fn snapshot(
        &self,
        as_of: NaiveDate,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<Row>, StoreError> {
        self.snapshot_with(as_of, config, currency, &mut |_| {})
    }

    /// [`Self::snapshot`], handing each account's data to `also` as its row is computed
    /// (the actions read more of it than the metrics row).
    fn snapshot_with(
        &self,
        as_of: NaiveDate,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
        also: &mut dyn FnMut(&AccountData),
    ) -> Result<Vec<Row>, StoreError> {
        let day = day_number(as_of);
        let infos = self.accounts()?;
        let all: Vec<&AccountInfo> = infos.iter().collect();
        let mut rows: Vec<Row> = self
            .load(&all, day, day, config, currency)?
            .iter()
            .map(|data| {
                also(data);
                metrics::compute(data, day, config)
            })
            .collect();
        metrics::engagement_scores(&mut rows, config);
        Ok(rows)
    }

    /// How many days of the daily health history to compute from one [`Self::snapshots`]:
    /// their rows are all held at once (about 3 KB per account and day).
    fn days_per_load(&self) -> usize {
        1
    }

    /// [`Self::snapshot`] on each of `days` (ascending): one load covers them all, so a run
    /// of days costs about one snapshot where reading is what costs (ClickHouse).
    fn snapshots(
        &self,
        days: &[NaiveDate],
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<Vec<Row>>, StoreError> {
        let (Some(first), Some(last)) = (days.first(), days.last()) else {
            return Ok(Vec::new());
        };
        let infos = self.accounts()?;
        let all: Vec<&AccountInfo> = infos.iter().collect();
        let data = self.load(
            &all,
            day_number(*first),
            day_number(*last),
            config,
            currency,
        )?;
        Ok(days
            .iter()
            .map(|d| {
                let mut rows: Vec<Row> = data
                    .iter()
                    .map(|a| metrics::compute(a, day_number(*d), config))
                    .collect();
                metrics::engagement_scores(&mut rows, config);
                rows
            })
            .collect())
    }
}

/// Customer records: read, listed, deleted, imported, and their raw rows.
pub trait Records {
    /// An account's records of `kind`, the latest `order_by` first (ties by key), as JSON.
    fn of_account(
        &self,
        kind: &'static Kind,
        account: &str,
        order_by: &str,
        limit: usize,
    ) -> Result<Vec<Value>, StoreError>;
    /// `columns` of every current record of kind `table`, in no set order.
    fn record_rows(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Cell>>, StoreError>;
    /// The record with this key.
    fn get(&self, kind: &'static Kind, key: &[String]) -> Result<Option<Record>, StoreError>;
    /// A page of records by key order, after the key `after`.
    fn list(
        &self,
        kind: &'static Kind,
        filters: &[ListFilter],
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Page, StoreError>;
    /// Deletes a record nothing refers to.
    fn delete(&mut self, kind: &'static Kind, key: &[String]) -> Result<Deleted, StoreError>;
    /// Where one import of `kind` goes (stored whole or not at all).
    fn import_target(
        &mut self,
        kind: &'static Kind,
    ) -> Result<Box<dyn ImportTarget + '_>, StoreError>;
}

/// The stored health models.
pub trait Models {
    /// The model in force on `day` (see [`model_for`]).
    fn model_for(&self, day: Option<NaiveDate>) -> Result<Option<Model>, StoreError>;
    fn model(&self, id: i64) -> Result<Option<Model>, StoreError>;
    /// Every model as (id, body), newest first.
    fn model_bodies(&self) -> Result<Vec<(i64, String)>, StoreError>;
    /// Stores a model as a new version; returns its id.
    fn store_model(&self, model: &Model) -> Result<i64, StoreError>;
}

/// The daily health history and its tier changes.
pub trait History {
    /// The last day with stored history.
    fn history_last_day(&self) -> Result<Option<i32>, StoreError>;
    /// How many accounts have history on `day`, and how many of those rows came from another
    /// model than `model_id`.
    fn history_on(&self, day: i32, model_id: i64) -> Result<(i64, i64), StoreError>;
    /// Each account's stored history row of `day`.
    fn day_history(&self, day: i32) -> Result<HashMap<String, HistoryRow>, StoreError>;
    /// (account, tier changed to) of the changes recorded on days after `after` through `through`.
    fn changes_between(
        &self,
        after: i32,
        through: i32,
    ) -> Result<HashSet<(String, String)>, StoreError>;
    /// Stores one day's rows, replacing what that day had, with the changes found on it.
    fn write_history(
        &self,
        day: i32,
        model_id: i64,
        rows: &[HistoryRow],
        changes: &[TierChange],
    ) -> Result<(), StoreError>;
    /// One account's stored history over [from, to], oldest first.
    fn history(
        &self,
        account: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<HistoryPoint>, StoreError>;
    /// Tier changes on or after `since` (optionally of one account), oldest first.
    fn tier_changes(
        &self,
        since: NaiveDate,
        account: Option<&str>,
    ) -> Result<Vec<Change>, StoreError>;
}

/// What CSMs write on an account: notes and logged activities (calls, meetings, emails),
/// and review goals.
pub trait Notes {
    /// Stores a note or logged activity on an existing account; `None` when there is no
    /// such account.
    fn add_note(&self, note: &NewNote<'_>) -> Result<Option<i64>, StoreError>;
    /// Stores notes or logged activities all at once, or none (their accounts checked by
    /// the caller); how many were stored.
    fn add_notes(&self, notes: &[NewNote<'_>]) -> Result<usize, StoreError>;
    /// The notes of `account` (every account's with `None`).
    fn stored_notes(&self, account: Option<&str>) -> Result<Vec<Note>, StoreError>;
    /// When each account's newest note or activity happened (Unix ms), up to `through_ms`.
    fn last_notes(&self, through_ms: i64) -> Result<HashMap<String, i64>, StoreError>;
    /// What was set on an account's review of `quarter` (`YYYYQn`), if anything.
    fn review_plan(&self, account: &str, quarter: &str) -> Result<Option<ReviewPlan>, StoreError>;
    fn set_review_plan(
        &self,
        account: &str,
        quarter: &str,
        plan: &ReviewPlan,
    ) -> Result<(), StoreError>;
    /// Keeps a review share link (its `id` is given by the store and returned).
    fn add_share_link(&self, link: &ShareLink) -> Result<i64, StoreError>;
    /// The share links made for `account`, newest first.
    fn share_links(&self, account: &str) -> Result<Vec<ShareLink>, StoreError>;
    fn share_link(&self, id: i64) -> Result<Option<ShareLink>, StoreError>;
    /// Revokes a link of `account` (false when it has no such link, or it was revoked).
    fn revoke_share_link(&self, account: &str, id: i64, now_ms: i64) -> Result<bool, StoreError>;
}

/// The people of an account as a CSM knows them.
pub trait People {
    /// The account's people (everyone grouped into it, and anyone given a role on it), with
    /// name and email from their identify traits and their role on the account; by name.
    fn account_people(&self, account: &str) -> Result<Vec<Contact>, StoreError>;
    /// Sets a person's role on an account (`None` clears it).
    fn set_contact_role(
        &self,
        account: &str,
        user: &str,
        role: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

/// Settings an admin changes on the dashboard instead of in the config file (channels, the
/// survey policy), each a JSON text under a name.
pub trait StoredSettings {
    fn stored_setting(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Sets a setting (`None` removes it: the config file's holds again).
    fn set_stored_setting(&self, name: &str, value: Option<&str>) -> Result<(), StoreError>;
}

/// Views of a list a dashboard user saved: a name and the list's query string.
pub trait Views {
    /// `username`'s saved views of `page` (`portfolio`), by name.
    fn saved_views(&self, username: &str, page: &str) -> Result<Vec<SavedView>, StoreError>;
    /// Saves (or replaces, by name) a view.
    fn save_view(&self, username: &str, view: &SavedView, now_ms: i64) -> Result<(), StoreError>;
    /// Deletes a view; false when there was none by that name.
    fn delete_view(
        &self,
        username: &str,
        page: &str,
        name: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
}

/// A saved view.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedView {
    pub page: String,
    pub name: String,
    /// The list's query string, without `?`.
    pub query: String,
}

/// The roles a person can hold on an account, in the order people are listed.
pub const CONTACT_ROLES: &[&str] = &["champion", "sponsor", "admin", "user"];

/// A role as a form or the API gives it: one of [`CONTACT_ROLES`], or empty for none.
pub fn contact_role(text: &str) -> Result<Option<&'static str>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    CONTACT_ROLES
        .iter()
        .find(|r| **r == text)
        .map(|r| Some(*r))
        .ok_or_else(|| format!("{text:?} is not one of {}", CONTACT_ROLES.join(", ")))
}

/// A person of an account.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub user_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// champion, sponsor, admin or user ([`CONTACT_ROLES`]).
    pub role: Option<String>,
}

impl Contact {
    /// A person from their identify traits: `name`, else first and last name (Segment's
    /// `firstName`/`lastName`, or `first_name`/`last_name`); `email`.
    pub fn from_traits(
        user_id: &str,
        traits: &Map<String, Value>,
        role: Option<String>,
    ) -> Contact {
        let text = |key: &str| {
            traits
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|t| !t.is_empty())
        };
        let joined = |first: &str, last: &str| {
            let parts: Vec<&str> = [text(first), text(last)].into_iter().flatten().collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        };
        Contact {
            user_id: user_id.to_string(),
            name: text("name")
                .map(str::to_string)
                .or_else(|| joined("firstName", "lastName"))
                .or_else(|| joined("first_name", "last_name")),
            email: text("email").map(str::to_string),
            role,
        }
    }
}

/// People by role (champions and sponsors first), then by name or email, then id.
pub(crate) fn contact_order(a: &Contact, b: &Contact) -> std::cmp::Ordering {
    let rank = |c: &Contact| {
        c.role
            .as_deref()
            .and_then(|r| CONTACT_ROLES.iter().position(|x| *x == r))
            .unwrap_or(usize::MAX)
    };
    let shown = |c: &Contact| {
        c.name
            .clone()
            .or_else(|| c.email.clone())
            .unwrap_or_else(|| c.user_id.clone())
            .to_lowercase()
    };
    (rank(a), shown(a), &a.user_id).cmp(&(rank(b), shown(b), &b.user_id))
}

/// What a CSM set on an account's quarterly review.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReviewPlan {
    /// Goals for the next quarter, shown to the customer.
    pub goals: Option<String>,
    /// The sections the customer does not see (by their `data-section` names).
    pub hidden: Vec<String>,
    /// Targets of KPIs, by KPI name.
    pub targets: std::collections::BTreeMap<String, f64>,
}

impl ReviewPlan {
    /// The hidden sections as stored: names joined by commas.
    pub(crate) fn hidden_text(&self) -> String {
        self.hidden.join(",")
    }

    /// The targets as stored: a JSON object.
    pub(crate) fn targets_text(&self) -> String {
        serde_json::to_string(&self.targets).expect("invariant: a map of numbers serialises")
    }

    /// A plan from its stored columns (an unreadable targets column reads as none).
    pub(crate) fn from_stored(goals: String, hidden: &str, targets: &str) -> ReviewPlan {
        ReviewPlan {
            goals: (!goals.is_empty()).then_some(goals),
            hidden: hidden
                .split(',')
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect(),
            targets: serde_json::from_str(targets).unwrap_or_default(),
        }
    }
}

/// A review share link, kept so it can be listed, copied again and revoked (the token is
/// signed over its id, account, quarter and expiry).
#[derive(Debug, Clone, PartialEq)]
pub struct ShareLink {
    pub id: i64,
    pub account_id: String,
    /// `YYYYQn`.
    pub quarter: String,
    pub created_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// Alert rules saved through the API.
pub trait Rules {
    /// Rules made through the API, by name.
    fn stored_rules(&self) -> Result<Vec<Rule>, StoreError>;
    fn save_rule(&self, rule: &Rule) -> Result<(), StoreError>;
    fn delete_rule(&self, name: &str) -> Result<bool, StoreError>;
}

/// Fired alerts, each recorded with its outbox messages and tasks all or none.
pub trait Alerts {
    /// Records each firing whose rule has not fired for its account since its
    /// `cooldown_from_ms`, with what `follow_up` makes of its alert id; the ids (None: held
    /// back by the cooldown), in order.
    fn record_alerts(
        &self,
        now_ms: i64,
        alerts: &[NewAlert],
        follow_up: &dyn Fn(&NewAlert, i64) -> FollowUp,
    ) -> Result<Vec<Option<i64>>, StoreError>;
    /// Alerts fired since `since_ms` (optionally of one account), newest first.
    fn alerts(
        &self,
        since_ms: i64,
        account: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AlertRow>, StoreError>;
}

/// Notifications waiting, sent or dead, with their retries.
pub trait Outbox {
    /// Outbox messages of a status, newest first.
    fn outbox(&self, status: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;
    /// Pending messages due by `now_ms`, soonest first.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError>;
    /// Stores a message's new delivery state (status, attempts, next attempt, error, sent).
    fn mark(&self, row: &OutboxRow) -> Result<(), StoreError>;
    /// Puts a dead message back in line; false when there is no dead message with that id.
    fn retry(&self, id: i64, now_ms: i64) -> Result<bool, StoreError>;
}

/// The CSM task inbox.
pub trait Tasks {
    /// Tasks, filtered, in [`task_order`].
    fn tasks(&self, filter: TaskFilter<'_>, limit: usize) -> Result<Vec<TaskRow>, StoreError>;
    /// Sets a task's status, snooze day and (when given) due day; false when there is no such task.
    fn update_task(
        &self,
        id: i64,
        status: &str,
        snoozed_until: Option<NaiveDate>,
        due: Option<NaiveDate>,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Stores a task made by hand (open, due on `due`); its id.
    fn add_task(&self, task: &HandTask<'_>) -> Result<i64, StoreError>;
    /// Snoozed tasks whose day has come are open again.
    fn wake_snoozed(&self, today: NaiveDate) -> Result<(), StoreError>;
}

/// Survey invitations and their answers.
pub trait Surveys {
    fn survey_send(&self, id: i64) -> Result<Option<SendRow>, StoreError>;
    /// Every invitation sent to any of `users`.
    fn sends_to(&self, users: &[&str]) -> Result<Vec<SendRow>, StoreError>;
    /// The email address each of `users` gave in their traits, when they gave one.
    fn user_emails(&self, users: &[&str]) -> Result<HashMap<String, String>, StoreError>;
    /// Records the invitations whose key is still new, each with the email `email` makes
    /// of its id (for an `email` delivery); how many were recorded.
    fn record_sends(
        &self,
        now_ms: i64,
        sends: &[NewSend],
        email: &dyn Fn(&NewSend, i64) -> Option<NewMessage>,
    ) -> Result<usize, StoreError>;
    /// Records an answer as a survey response `survey-ID`, once per invitation.
    fn answer(
        &self,
        id: i64,
        score: i64,
        comment: Option<&str>,
        now_ms: i64,
    ) -> Result<Answered, StoreError>;
    /// The newest unanswered invitation sent to a person since `since_ms`.
    fn pending_survey(&self, user_id: &str, since_ms: i64) -> Result<Option<i64>, StoreError>;
}

/// Dashboard users.
pub trait Users {
    /// The user called `username` and their password hash.
    fn user_row(&self, username: &str) -> Result<Option<(User, String)>, StoreError>;
    /// Whether a `csms` record `csm_id` exists.
    fn csm_known(&self, csm_id: &str) -> Result<bool, StoreError>;
    /// Stores a user with a password hash; false when one exists already and `replace` is
    /// not set. Sessions opened before are ended.
    fn put_user(&self, user: &User, hash: &str, replace: bool) -> Result<bool, StoreError>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<User>, StoreError>;
    /// Deletes a user and ends their sessions; false when there was no such user.
    fn remove_user(&self, username: &str) -> Result<bool, StoreError>;
}

/// Sessions of dashboard users, and the server's named secrets.
pub trait Sessions {
    /// Opens a session, known by the SHA-256 of its cookie secret.
    fn open_session(
        &self,
        digest: &str,
        username: &str,
        csrf: &str,
        expires_ms: i64,
    ) -> Result<(), StoreError>;
    /// The session of a digest, if it is open at `now_ms` and its user still signs in with
    /// the password it was opened with.
    fn session_of(&self, digest: &str, now_ms: i64) -> Result<Option<Session>, StoreError>;
    fn end_session(&self, digest: &str) -> Result<(), StoreError>;
    /// The secret called `name`, made of `fresh` on first use (the first one stored wins).
    fn secret_or(&self, name: &str, fresh: [u8; 32]) -> Result<Vec<u8>, StoreError>;
}

/// API tokens.
pub trait Tokens {
    /// Every API token, by id.
    fn tokens(&self) -> Result<Vec<ApiToken>, StoreError>;
    /// Creates an API token and returns its secret (only its SHA-256 is kept).
    fn add_token(
        &self,
        name: &str,
        role: Role,
        valid_for_seconds: Option<i64>,
    ) -> Result<String, StoreError>;
    /// Revokes a token at once; false when there was none with that id.
    fn revoke_token(&self, id: i64) -> Result<bool, StoreError>;
}

/// Every capability at once: what a backend is, and what a handler given "the store"
/// holds. Functions ask for the capabilities they use, never for this.
pub trait Storage:
    Activity
    + Records
    + Models
    + History
    + Notes
    + Rules
    + Alerts
    + Outbox
    + Tasks
    + Surveys
    + Users
    + Sessions
    + Tokens
    + People
    + Views
    + StoredSettings
{
}

impl<
        T: Activity
            + Records
            + Models
            + History
            + Notes
            + Rules
            + Alerts
            + Outbox
            + Tasks
            + Surveys
            + Users
            + Sessions
            + Tokens
            + People
            + Views
            + StoredSettings
            + ?Sized,
    > Storage for T
{
}

pub(crate) fn model_body(model: &Model) -> Result<String, StoreError> {
    serde_json::to_string(model).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// The first and last day (day numbers) of the data the examples were read from.
pub type DaySpan = (i32, i32);

pub(crate) fn parse_model(id: i64, body: String) -> Result<Model, StoreError> {
    let mut model: Model = serde_json::from_str(&body)
        .map_err(|e| StoreError::Invalid(format!("health model {id}: {e}")))?;
    model.id = id;
    Ok(model)
}

// ---- what is kept ----

/// A fired alert as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    pub id: i64,
    pub rule: String,
    pub account_id: String,
    pub fired_ms: i64,
    pub reason: String,
}

impl AlertRow {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "rule": self.rule, "account_id": self.account_id,
               "fired_at": crate::ingest::format_timestamp(self.fired_ms), "reason": self.reason})
    }
}

/// One outbox message with its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: i64,
    pub idempotency_key: String,
    pub alert_id: Option<i64>,
    pub channel: String,
    /// `slack`, `webhook` or `email`.
    pub kind: String,
    pub target: String,
    pub subject: Option<String>,
    pub body: String,
    /// `pending`, `sent` or `dead`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub sent_ms: Option<i64>,
}

/// A CSM task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub id: i64,
    pub account_id: String,
    pub alert_id: Option<i64>,
    pub csm: Option<String>,
    pub title: String,
    /// `open`, `snoozed` or `done`.
    pub status: String,
    pub due: Option<String>,
    pub snoozed_until: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// What a rule's task is about (`None` for tasks made by hand or before causes).
    #[serde(default)]
    pub cause: Option<String>,
    /// The reasons of later alerts with the same cause, merged into this task.
    #[serde(default)]
    pub also: Vec<String>,
}

/// Which tasks to list.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskFilter<'a> {
    pub status: Option<&'a str>,
    pub csm: Option<&'a str>,
    pub account: Option<&'a str>,
}

impl TaskFilter<'_> {
    pub fn holds(&self, task: &TaskRow) -> bool {
        self.status.is_none_or(|s| task.status == s)
            && self.csm.is_none_or(|c| task.csm.as_deref() == Some(c))
            && self.account.is_none_or(|a| task.account_id == a)
    }
}

/// Open and snoozed tasks first, by due day (none last), then by id.
pub fn task_order(a: &TaskRow, b: &TaskRow) -> std::cmp::Ordering {
    let due = |t: &TaskRow| (t.due.is_none(), t.due.clone());
    (a.status == "done", due(a), a.id).cmp(&(b.status == "done", due(b), b.id))
}

/// A survey invitation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRow {
    pub id: i64,
    /// The occasion and person ([`Trigger::key`]): one invitation each.
    pub key: String,
    pub user_id: String,
    pub account_id: String,
    pub kind: String,
    pub trigger: String,
    /// `email` or `snippet`.
    pub delivery: String,
    pub sent_ms: i64,
    pub answered_ms: Option<i64>,
    pub response_id: Option<String>,
}

/// A firing to record, outside its rule's cooldown.
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub rule: String,
    pub account_id: String,
    pub account_name: String,
    pub reason: String,
    pub measures: Map<String, Value>,
    /// Held back when the rule fired for the account after this.
    pub cooldown_from_ms: i64,
}

/// How an alert merged into an open task of the same cause reads on it: its reason and rule.
pub(crate) fn merged_reason(alert: &NewAlert) -> String {
    format!("{} ({})", alert.reason, alert.rule)
}

/// A message to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub idempotency_key: String,
    pub channel: String,
    pub kind: String,
    pub target: String,
    pub subject: Option<String>,
    pub body: String,
}

/// A task to open.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// What it is about: an open or snoozed task of the account with the same cause takes
    /// the alert's reason (in `also`) instead.
    pub cause: String,
    pub csm: Option<String>,
    pub title: String,
    pub due: NaiveDate,
}

/// What an alert brings with it, made once its id is known (the messages carry it).
#[derive(Debug, Clone, Default)]
pub struct FollowUp {
    pub messages: Vec<NewMessage>,
    pub tasks: Vec<NewTask>,
}

/// A survey invitation to record.
#[derive(Debug, Clone)]
pub struct NewSend {
    pub key: String,
    pub user_id: String,
    pub account_id: String,
    pub kind: String,
    pub trigger: &'static str,
    /// The address an `email` delivery goes to.
    pub email: Option<String>,
}

/// How answering went.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered {
    Stored(String),
    AlreadyAnswered,
    NoSuchSurvey,
}

/// A CSM's note on an account.
#[derive(Debug, Clone)]
pub struct Note {
    pub id: i64,
    pub account_id: String,
    pub author: String,
    pub person: Option<String>,
    /// `note`, `call`, `meeting` or `email` (`listening::report::ACTIVITY_KINDS`).
    pub kind: String,
    pub text: String,
    /// When it happened (a note: when it was written).
    pub created_ms: i64,
}

/// A note or activity to store.
#[derive(Debug, Clone, Copy)]
pub struct NewNote<'a> {
    pub account: &'a str,
    pub author: &'a str,
    pub person: Option<&'a str>,
    pub kind: &'a str,
    pub text: &'a str,
    pub at_ms: i64,
}

/// A task made by hand.
#[derive(Debug, Clone, Copy)]
pub struct HandTask<'a> {
    pub account: &'a str,
    pub csm: Option<&'a str>,
    pub title: &'a str,
    pub due: NaiveDate,
    pub now_ms: i64,
}

/// A raw event as the account page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentEvent {
    pub timestamp_ms: i64,
    pub kind: String,
    pub event: Option<String>,
    pub user_id: Option<String>,
}

/// An account as the metrics see it.
#[derive(Debug, Clone)]
pub struct AccountInfo {
    pub account_id: String,
    pub parent_id: Option<String>,
    pub segment: String,
    pub plan: Option<String>,
    pub tz: chrono_tz::Tz,
}

/// The account and every account below it.
pub fn subtree(all: &[AccountInfo], root: &str) -> Vec<String> {
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for a in all {
        if let Some(parent) = &a.parent_id {
            children
                .entry(parent.as_str())
                .or_default()
                .push(a.account_id.as_str());
        }
    }
    let mut out = vec![root.to_string()];
    let mut index = 0;
    while index < out.len() {
        if let Some(kids) = children.get(out[index].as_str()) {
            out.extend(
                kids.iter()
                    .map(|k| k.to_string())
                    .filter(|k| !out.contains(k))
                    .collect::<Vec<_>>(),
            );
        }
        index += 1;
    }
    out
}

/// One filter of a list request, already checked against the kind's spec.
#[derive(Debug, Clone)]
pub enum ListFilter {
    Equals(&'static str, Cell),
    AtLeast(&'static str, Cell),
    AtMost(&'static str, Cell),
}

/// A page of records and the cursor of the next page, if there is one.
pub struct Page {
    pub records: Vec<Record>,
    pub next_cursor: Option<Vec<String>>,
}

impl Page {
    /// A page of `limit` records from up to `limit + 1` read in key order: a record past
    /// the limit means there is a next page, after the last one kept.
    pub(crate) fn of(kind: &Kind, mut records: Vec<Record>, limit: usize) -> Page {
        let next_cursor = if records.len() > limit {
            records.truncate(limit);
            records.last().map(|r| r.key(kind))
        } else {
            None
        };
        Page {
            records,
            next_cursor,
        }
    }
}

/// What a delete did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    NotFound,
    /// Other records still refer to it (named); nothing was deleted.
    Referenced(String),
}

/// Where an import's records go: the embedded store's transaction ([`Import::begin`]) or
/// ClickHouse (`store::clickhouse`). Nothing staged is visible until `commit`; a target
/// dropped without it stores nothing.
pub trait ImportTarget {
    fn account_exists(&mut self, id: &str) -> Result<bool, StoreError>;
    /// Stores (or stages) one valid record: a new key inserts, a known one updates (its
    /// traits merged as JSON merge patch).
    fn upsert(&mut self, kind: &'static Kind, record: &Record) -> Result<(), StoreError>;
    /// Every account's parent as the import would leave them.
    fn parents(&mut self) -> Result<HashMap<String, Option<String>>, StoreError>;
    /// Makes everything visible at once; how many keys were new and how many updated.
    fn commit(self: Box<Self>) -> Result<(usize, usize), StoreError>;
}

/// What deleting a person removed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UserDeletion {
    pub user_id: String,
    pub events: usize,
    pub trait_versions: usize,
    pub memberships: usize,
    pub identity_links: usize,
    pub survey_responses: usize,
    /// Tickets and suggestions keep their account but lose the person.
    pub tickets_unlinked: usize,
    pub suggestions_unlinked: usize,
    /// Survey invitations sent to the person (their rows go, with their emails in the
    /// outbox: the survey policy no longer needs them).
    pub survey_sends: usize,
    /// CSM notes keep their account and text but lose the person they were about.
    pub notes_unlinked: usize,
}

/// What a dashboard user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Everything, including users, tokens and settings.
    Admin,
    /// Reads everything, defaults to their own accounts, shares reviews, writes goals.
    Csm,
    /// Reads everything, changes nothing.
    Viewer,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Admin => "admin",
            UserRole::Csm => "csm",
            UserRole::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<UserRole> {
        match text {
            "admin" => Some(UserRole::Admin),
            "csm" => Some(UserRole::Csm),
            "viewer" => Some(UserRole::Viewer),
            _ => None,
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub role: UserRole,
    /// The `csms` record this user is, for "my accounts".
    pub csm_id: Option<String>,
}

/// A session: who, and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

/// One stored day of an account's health, as the API shows it (in this field order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    pub date: NaiveDate,
    pub health_score: Option<f64>,
    pub health_band: Option<String>,
    /// The held tier; `usage_tier` is the day's own.
    pub tier: Option<String>,
    pub usage_tier: Option<String>,
    pub expected_renewal_rate: Option<f64>,
    pub power_feature_monthly_uses: Option<f64>,
    pub model_id: i64,
    pub engagement_score: Option<f64>,
}

impl HistoryPoint {
    pub(crate) fn of(day: i32, row: &HistoryRow, model_id: i64) -> HistoryPoint {
        HistoryPoint {
            date: day_date(day),
            health_score: row.score,
            health_band: row.band.clone(),
            tier: row.tier.clone(),
            usage_tier: row.raw_tier.clone(),
            expected_renewal_rate: row.expected_rate,
            power_feature_monthly_uses: row.monthly_uses,
            model_id,
            engagement_score: row.engagement,
        }
    }
}

/// A stored tier change, as the API shows it (in this field order).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub id: i64,
    pub account_id: String,
    pub date: NaiveDate,
    pub from: String,
    pub to: String,
    pub model_id: i64,
    /// `usage` or `model` (see `health::Cause`).
    pub cause: String,
}

impl Change {
    pub(crate) fn of(id: i64, change: &TierChange) -> Change {
        Change {
            id,
            account_id: change.account_id.clone(),
            date: day_date(change.day),
            from: change.from_tier.clone(),
            to: change.to_tier.clone(),
            model_id: change.model_id,
            cause: change.cause.clone(),
        }
    }
}

/// An account's name, `Some(None)` when it has none, `None` when there is no such account
/// (a record, or on the embedded store and ClickHouse alike, an account only group calls named).
pub fn account_name(
    source: &(impl Records + ?Sized),
    account: &str,
) -> Result<Option<Option<String>>, StoreError> {
    let rows = source.record_rows("accounts", &["account_id", "name"])?;
    Ok(rows
        .iter()
        .find(|r| r[0].as_text() == Some(account))
        .map(|r| r[1].as_text().map(str::to_string)))
}

/// What a pass did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pruned {
    /// Raw events deleted.
    pub events: u64,
    /// First local day whose rollup rows are still backed by raw events.
    pub horizon: chrono::NaiveDate,
    /// Why nothing was deleted, when so.
    pub skipped: Option<String>,
}
