//! Actions, pure: the `[actions]` configuration (channels, playbooks, alert rules, survey
//! policy), rule conditions and their evaluation on one account's measures, the messages
//! sent (Slack Block Kit, signed webhook JSON, email text) and the retry schedule.
//! `actions::run` decides and records through the store; `actions::deliver` sends.

pub mod deliver;
pub mod run;
pub mod surveys;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Measures a rule may test beside every metric of `metrics::COLUMNS`.
pub const EXTRA_MEASURES: &[(&str, &str)] = &[
    ("plan", "the account's plan"),
    (
        "tier",
        "health tier today: red, orange, yellow, green (null: none)",
    ),
    ("tier_before", "tier 7 days ago, from the stored history"),
    (
        "tier_dropped",
        "true when the account's use moved its tier down in the last 7 days (not a new model)",
    ),
    ("health_score", "0-100 health score"),
    ("health_band", "band of the score"),
    (
        "expected_renewal_rate",
        "the tier's historical renewal rate",
    ),
    ("arr", "ARR in force, report currency"),
    (
        "renewal_in_days",
        "days to the earliest end of a contract in force",
    ),
    (
        "escalation_open_days",
        "age in days of the oldest open escalated ticket (null: none)",
    ),
    (
        "nps_detractor_answers_7d",
        "NPS answers 0-6 in the last 7 days",
    ),
    (
        "power_feature_first_use_days",
        "days since the account first used its segment's power feature (null: never)",
    ),
    (
        "days_since_last_activity",
        "days since any person of the account was active (null: never)",
    ),
];

fn default_true() -> bool {
    true
}
fn default_cooldown() -> u32 {
    7
}
fn default_due() -> u32 {
    7
}

/// `[actions]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionsConfig {
    /// Base of the links in messages [default: http://LISTEN].
    pub dashboard_url: Option<String>,
    /// Rules are evaluated this often, and soon after imports and health updates.
    pub evaluate_every_seconds: u64,
    /// First retry delay; each further retry doubles it (capped at an hour).
    pub retry_base_seconds: u64,
    /// Attempts before a message goes to the dead letters.
    pub max_attempts: u32,
    /// Ship the example rules (they alert and make tasks; add `notify` by redefining them).
    pub builtin_rules: bool,
    pub channels: BTreeMap<String, Channel>,
    pub smtp: Option<SmtpConfig>,
    pub playbooks: BTreeMap<String, Playbook>,
    pub rules: Vec<Rule>,
    pub surveys: surveys::Policy,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            dashboard_url: None,
            evaluate_every_seconds: 300,
            retry_base_seconds: 10,
            max_attempts: 8,
            builtin_rules: true,
            channels: BTreeMap::new(),
            smtp: None,
            playbooks: BTreeMap::new(),
            rules: Vec::new(),
            surveys: surveys::Policy::default(),
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Channel {
    /// A Slack incoming-webhook URL.
    Slack { url: String },
    /// Any URL taking a JSON POST, signed with HMAC-SHA256 under `secret`.
    Webhook { url: String, secret: Option<String> },
    /// An address, or `owner` for the account's CSM (`csms.email`).
    Email { to: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    pub from: String,
    /// `none` (plain, for a local relay), `starttls` or `tls`.
    #[serde(default = "default_tls")]
    pub tls: String,
    pub username: Option<String>,
}

fn default_smtp_port() -> u16 {
    25
}
fn default_tls() -> String {
    "none".into()
}

/// A task a rule or playbook creates in the owning CSM's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    pub title: String,
    #[serde(default = "default_due")]
    pub due_days: u32,
}

/// A named list of notifications and tasks a rule starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Playbook {
    pub notify: Vec<String>,
    pub tasks: Vec<TaskTemplate>,
}

/// An alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Clauses joined by `and`: `measure op value`, op one of == != < <= > >=, value a
    /// number, true/false, null or a 'quoted' text.
    pub when: String,
    /// Only these segments (empty: all).
    #[serde(default)]
    pub segments: Vec<String>,
    /// After firing for an account, the rule stays quiet for it this many days.
    #[serde(default = "default_cooldown")]
    pub cooldown_days: u32,
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default)]
    pub tasks: Vec<TaskTemplate>,
    pub playbook: Option<String>,
    /// What the rule's tasks are about: an open task of the account with the same cause
    /// takes a firing's reason instead of a new task being made. Default: see [`cause_of`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// The example rules shipped with bellwether (the issue's list).
pub fn builtin_rules() -> Vec<Rule> {
    let rule = |name: &str, when: &str, cooldown_days: u32, task: &str| Rule {
        name: name.into(),
        when: when.into(),
        segments: Vec::new(),
        cooldown_days,
        notify: Vec::new(),
        tasks: vec![TaskTemplate {
            title: task.into(),
            due_days: 7,
        }],
        playbook: None,
        cause: None,
        enabled: true,
    };
    vec![
        rule(
            "tier-dropped",
            "tier_dropped == true",
            14,
            "Find out why {account}'s health tier dropped",
        ),
        rule(
            "usage-infrequent",
            "usage_frequency == 'infrequent'",
            30,
            "{account} uses the product infrequently: reach out",
        ),
        rule(
            "low-licence-use-before-renewal",
            "license_utilization < 0.5 and renewal_in_days <= 60 and renewal_in_days >= 0",
            30,
            "{account} uses under half its seats and renews within 60 days",
        ),
        rule(
            "red-near-renewal",
            "tier == 'red' and renewal_in_days <= 90 and renewal_in_days >= 0",
            30,
            "Save plan for {account}: red tier, renewal within 90 days",
        ),
        rule(
            "escalation-open-7-days",
            "escalation_open_days > 7",
            7,
            "Escalation open over a week at {account}",
        ),
        rule(
            "nps-detractor",
            "nps_detractor_answers_7d > 0",
            7,
            "Call back the NPS detractor at {account}",
        ),
        rule(
            "power-feature-adopted",
            "power_feature_first_use_days <= 7",
            365,
            "Congratulate {account} on adopting the power feature",
        ),
    ]
}

/// Longest title of a task made by hand, in characters.
pub const TASK_TITLE_CHARS_MAX: usize = 200;

/// Checks a task made by hand: a title of 1 to [`TASK_TITLE_CHARS_MAX`] characters, due
/// today or later; the error names the field.
pub fn check_task(
    title: &str,
    due: chrono::NaiveDate,
    today: chrono::NaiveDate,
) -> Result<(), (String, String)> {
    let length = title.trim().chars().count();
    if length == 0 || length > TASK_TITLE_CHARS_MAX {
        return Err((
            "title".into(),
            format!("1 to {TASK_TITLE_CHARS_MAX} characters"),
        ));
    }
    if due < today {
        return Err(("due".into(), format!("{due} is before today ({today})")));
    }
    Ok(())
}

/// The comparisons a condition may use, as written.
pub const OPS: &[&str] = &["==", "!=", "<", "<=", ">", ">="];

/// A condition built from a form's rows (measure, comparison, value): a number, `true`,
/// `false` or `null` as written, anything else as quoted text. Rows without a measure are
/// skipped; the error names the row's field.
pub fn condition_from(rows: &[(&str, &str, &str)]) -> Result<String, (String, String)> {
    let mut clauses = Vec::new();
    for (i, (measure, op, value)) in rows.iter().enumerate() {
        let (measure, value) = (measure.trim(), value.trim());
        if measure.is_empty() {
            continue;
        }
        let n = i + 1;
        if !OPS.contains(op) {
            return Err((format!("op_{n}"), format!("one of {}", OPS.join(" "))));
        }
        if value.is_empty() {
            return Err((format!("value_{n}"), "a value to compare with".into()));
        }
        let literal = value.parse::<f64>().is_ok() || matches!(value, "true" | "false" | "null");
        let value = if literal {
            value.to_string()
        } else if value.contains('\'') {
            return Err((format!("value_{n}"), "text without a quote (')".into()));
        } else {
            format!("'{value}'")
        };
        clauses.push(format!("{measure} {op} {value}"));
    }
    if clauses.is_empty() {
        return Err(("measure_1".into(), "at least one condition".into()));
    }
    Ok(clauses.join(" and "))
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One `measure op value` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub measure: String,
    pub op: Op,
    pub value: Value,
}

/// A parsed `when`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub clauses: Vec<Clause>,
}

/// Longest `when` text.
pub const CONDITION_CHARS_MAX: usize = 1_000;

/// `uses_7d:FEATURE`: the account's uses of one feature (as `[metrics] features` names
/// them) in the last 7 days: a condition on events.
pub const FEATURE_USES_PREFIX: &str = "uses_7d:";

fn known_measure(name: &str) -> bool {
    crate::metrics::COLUMNS.contains(&name)
        || EXTRA_MEASURES.iter().any(|(m, _)| *m == name)
        || name
            .strip_prefix(FEATURE_USES_PREFIX)
            .is_some_and(|f| !f.trim().is_empty())
}

impl Condition {
    /// The features named by `uses_7d:` clauses.
    pub fn features(&self) -> impl Iterator<Item = &str> {
        self.clauses
            .iter()
            .filter_map(|c| c.measure.strip_prefix(FEATURE_USES_PREFIX))
    }
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, String> {
        if text.trim().is_empty() || text.len() > CONDITION_CHARS_MAX {
            return Err(format!("must be 1 to {CONDITION_CHARS_MAX} characters"));
        }
        let mut clauses = Vec::new();
        for part in text.split(" and ") {
            let part = part.trim();
            let (at, op, width) = ["<=", ">=", "==", "!=", "<", ">"]
                .iter()
                .filter_map(|op| part.find(op).map(|at| (at, *op, op.len())))
                .min_by_key(|(at, _, _)| *at)
                .ok_or_else(|| format!("{part:?}: no comparison (== != < <= > >=)"))?;
            let measure = part[..at].trim();
            let literal = part[at + width..].trim();
            if !known_measure(measure) {
                return Err(format!(
                    "{measure:?} is not a measure (a metric of the export, uses_7d:FEATURE, or one of: {})",
                    EXTRA_MEASURES.iter().map(|(m, _)| *m).collect::<Vec<_>>().join(", ")
                ));
            }
            let value =
                if literal.len() >= 2 && literal.starts_with('\'') && literal.ends_with('\'') {
                    Value::String(literal[1..literal.len() - 1].to_string())
                } else {
                    match literal {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        "null" => Value::Null,
                        number => json!(number.parse::<f64>().map_err(|_| format!(
                            "{part:?}: {literal:?} is not a number, true, false, null or 'text'"
                        ))?),
                    }
                };
            let op = match op {
                "==" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                _ => Op::Ge,
            };
            if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge) && !value.is_number() {
                return Err(format!("{part:?}: {op:?} compares numbers only"));
            }
            clauses.push(Clause {
                measure: measure.to_string(),
                op,
                value,
            });
        }
        Ok(Condition { clauses })
    }

    /// Whether every clause holds. A number comparison with a missing (null) measure is
    /// false: an account without an NPS is not a detractor.
    pub fn holds(&self, measures: &Map<String, Value>) -> bool {
        self.clauses.iter().all(|c| {
            let actual = measures.get(&c.measure).unwrap_or(&Value::Null);
            match c.op {
                Op::Eq => equal(actual, &c.value),
                Op::Ne => !equal(actual, &c.value),
                op => match (actual.as_f64(), c.value.as_f64()) {
                    (Some(a), Some(b)) => match op {
                        Op::Lt => a < b,
                        Op::Le => a <= b,
                        Op::Gt => a > b,
                        _ => a >= b,
                    },
                    _ => false,
                },
            }
        })
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A rule ready to run: its condition parsed and its playbook merged in.
#[derive(Debug, Clone)]
pub struct Ready {
    pub rule: Rule,
    pub condition: Condition,
    pub notify: Vec<String>,
    pub tasks: Vec<TaskTemplate>,
}

impl Ready {
    /// Whether the rule fires for an account with these measures.
    pub fn fires(&self, measures: &Map<String, Value>) -> bool {
        let segment = measures
            .get("segment")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.rule.enabled
            && (self.rule.segments.is_empty() || self.rule.segments.iter().any(|s| s == segment))
            && self.condition.holds(measures)
    }
}

/// What a rule's tasks are about, for merging them (one open task per account per cause):
/// the rule's `cause`; else `renewal` when its condition looks at `renewal_in_days` (the
/// licence and tier rules before a renewal are one conversation); else its first clause's
/// measure.
pub fn cause_of(rule: &Rule, condition: &Condition) -> String {
    if let Some(cause) = &rule.cause {
        return cause.clone();
    }
    if condition
        .clauses
        .iter()
        .any(|c| c.measure == "renewal_in_days")
    {
        return "renewal".into();
    }
    condition
        .clauses
        .first()
        .map_or_else(|| rule.name.clone(), |c| c.measure.clone())
}

/// Checks one rule against the configured channels and playbooks.
pub fn prepare(rule: &Rule, config: &ActionsConfig) -> Result<Ready, String> {
    if rule.name.is_empty()
        || rule.name.len() > 64
        || !rule
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("name: 1 to 64 letters, digits, - or _".into());
    }
    let condition = Condition::parse(&rule.when).map_err(|r| format!("when: {r}"))?;
    if !(1..=3660).contains(&rule.cooldown_days) {
        return Err(format!(
            "cooldown_days: must be 1 to 3660, got {}",
            rule.cooldown_days
        ));
    }
    let mut notify = rule.notify.clone();
    let mut tasks = rule.tasks.clone();
    if let Some(name) = &rule.playbook {
        let playbook = config
            .playbooks
            .get(name)
            .ok_or_else(|| format!("playbook: no playbook {name:?} in [actions.playbooks]"))?;
        notify.extend(playbook.notify.iter().cloned());
        tasks.extend(playbook.tasks.iter().cloned());
    }
    for channel in &notify {
        if !config.channels.contains_key(channel) {
            return Err(format!(
                "notify: no channel {channel:?} in [actions.channels]"
            ));
        }
    }
    for task in &tasks {
        if task.title.trim().is_empty() || task.title.len() > 200 || task.due_days > 365 {
            return Err("tasks: a title of 1 to 200 characters and due_days of at most 365".into());
        }
    }
    Ok(Ready {
        rule: rule.clone(),
        condition,
        notify,
        tasks,
    })
}

/// The playbooks shipped with bellwether (with the built-in rules): checklists a CSM
/// starts from the account page, each step due so many days after the start.
pub fn builtin_playbooks() -> BTreeMap<String, Playbook> {
    let playbook = |steps: &[(&str, u32)]| Playbook {
        notify: Vec::new(),
        tasks: steps
            .iter()
            .map(|(title, due_days)| TaskTemplate {
                title: (*title).into(),
                due_days: *due_days,
            })
            .collect(),
    };
    BTreeMap::from([
        (
            "save-plan".to_string(),
            playbook(&[
                (
                    "Call {account}'s sponsor about what would make them renew",
                    2,
                ),
                ("Agree a success plan with {account}", 7),
                (
                    "Check {account}'s use of the power feature against the plan",
                    21,
                ),
            ]),
        ),
        (
            "adoption-push".to_string(),
            playbook(&[
                ("Book a training on the power feature for {account}", 3),
                (
                    "Send {account}'s admins a how-to for their unused features",
                    7,
                ),
                ("Review {account}'s active users against its seats", 30),
            ]),
        ),
        (
            "renewal-prep".to_string(),
            playbook(&[
                ("Prepare {account}'s quarterly review", 7),
                (
                    "Share the review with {account} and agree next year's goals",
                    14,
                ),
                ("Confirm {account}'s renewal", 30),
            ]),
        ),
    ])
}

impl ActionsConfig {
    /// The playbooks in force: the built-in ones with the built-in rules (a configured
    /// playbook of the same name replaces one), then the configured ones.
    pub fn playbooks_in_force(&self) -> BTreeMap<String, Playbook> {
        let mut out = if self.builtin_rules {
            builtin_playbooks()
        } else {
            BTreeMap::new()
        };
        out.extend(self.playbooks.clone());
        out
    }

    /// The rules in force from the config: the built-in examples unless turned off (a
    /// configured rule of the same name replaces one), then the configured ones.
    pub fn ready_rules(&self) -> Result<Vec<Ready>, (String, String)> {
        let mut rules: Vec<Rule> = if self.builtin_rules {
            builtin_rules()
        } else {
            Vec::new()
        };
        for rule in &self.rules {
            rules.retain(|r| r.name != rule.name);
            rules.push(rule.clone());
        }
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                prepare(r, self).map_err(|reason| (format!("rules[{i}] ({})", r.name), reason))
            })
            .collect()
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        if !(1..=86_400).contains(&self.evaluate_every_seconds) {
            return Err(("evaluate_every_seconds".into(), "must be 1 to 86400".into()));
        }
        if !(1..=3_600).contains(&self.retry_base_seconds) {
            return Err(("retry_base_seconds".into(), "must be 1 to 3600".into()));
        }
        if !(1..=50).contains(&self.max_attempts) {
            return Err(("max_attempts".into(), "must be 1 to 50".into()));
        }
        self.check_channels()?;
        if let Some(smtp) = &self.smtp {
            if !["none", "starttls", "tls"].contains(&smtp.tls.as_str()) {
                return Err(("smtp.tls".into(), "none, starttls or tls".into()));
            }
            if !smtp.from.contains('@') {
                return Err(("smtp.from".into(), "an email address".into()));
            }
        }
        self.surveys
            .check()
            .map_err(|(k, r)| (format!("surveys.{k}"), r))?;
        self.ready_rules().map(|_| ())
    }

    /// Each channel's URL or address, and SMTP for email channels.
    pub fn check_channels(&self) -> Result<(), (String, String)> {
        for (name, channel) in &self.channels {
            match channel {
                Channel::Slack { url } | Channel::Webhook { url, .. } => {
                    if !(url.starts_with("http://") || url.starts_with("https://"))
                        || url.parse::<axum::http::Uri>().is_err()
                    {
                        return Err((
                            format!("channels.{name}.url"),
                            "must be an http:// or https:// URL".into(),
                        ));
                    }
                }
                Channel::Email { to } => {
                    if self.smtp.is_none() {
                        return Err((
                            format!("channels.{name}"),
                            "an email channel needs [actions.smtp]".into(),
                        ));
                    }
                    if to != "owner" && !to.contains('@') {
                        return Err((
                            format!("channels.{name}.to"),
                            "an address or \"owner\" (the account's CSM)".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The stored setting that holds channels added on the dashboard (a JSON object of name to
/// channel, as `[actions.channels]`).
pub const CHANNELS_SETTING: &str = "actions.channels";
/// The stored setting that holds the survey policy set on the dashboard (JSON, as
/// `[actions.surveys]`); it replaces the config file's.
pub const SURVEYS_SETTING: &str = "actions.surveys";

/// Channels as stored.
pub fn stored_channels(text: Option<&str>) -> Result<BTreeMap<String, Channel>, String> {
    text.map_or(Ok(BTreeMap::new()), |t| {
        serde_json::from_str(t).map_err(|e| e.to_string())
    })
}

impl ActionsConfig {
    /// This config with what was set on the dashboard: channels added there (a config
    /// channel of the same name wins) and the survey policy set there (it replaces the
    /// file's). A stored setting that no longer holds (say an email channel after
    /// `[actions.smtp]` left the file) is left out, with the reason.
    pub fn in_force(
        &self,
        channels: Option<&str>,
        surveys: Option<&str>,
    ) -> (ActionsConfig, Vec<String>) {
        let mut config = self.clone();
        let mut warnings = Vec::new();
        match stored_channels(channels) {
            Ok(stored) => {
                for (name, channel) in stored {
                    if config.channels.contains_key(&name) {
                        continue;
                    }
                    let mut with = config.clone();
                    with.channels = BTreeMap::from([(name.clone(), channel.clone())]);
                    match with.check_channels() {
                        Ok(()) => {
                            config.channels.insert(name, channel);
                        }
                        Err((key, reason)) => warnings.push(format!("{key}: {reason}")),
                    }
                }
            }
            Err(reason) => warnings.push(format!("stored channels: {reason}")),
        }
        if let Some(text) = surveys {
            match serde_json::from_str::<surveys::Policy>(text) {
                Ok(policy) if policy.check().is_ok() => config.surveys = policy,
                Ok(_) => warnings.push("stored survey policy: out of bounds".into()),
                Err(e) => warnings.push(format!("stored survey policy: {e}")),
            }
        }
        (config, warnings)
    }
}

/// Retry delay after `attempts` failed attempts: base x 2^(attempts-1), at most an hour.
pub fn retry_delay_ms(base_seconds: u64, attempts: u32) -> i64 {
    let factor = 1u64 << attempts.saturating_sub(1).min(20);
    (base_seconds.saturating_mul(factor).min(3_600) * 1_000) as i64
}

/// What fired: the text every channel renders.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: i64,
    pub rule: String,
    pub account_id: String,
    pub account_name: String,
    pub reason: String,
    pub link: String,
    pub measures: Map<String, Value>,
}

/// `{account}` in a title becomes the account's name.
pub fn task_title(template: &str, alert: &Alert) -> String {
    template.replace("{account}", &alert.account_name)
}

/// The reason a rule fired, in words: its clauses with the account's values ("Licence use
/// is 40%, renewal in 44 days").
pub fn reason(ready: &Ready, measures: &Map<String, Value>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for clause in &ready.condition.clauses {
        let value = measures.get(&clause.measure).unwrap_or(&Value::Null);
        let part = match clause.measure.strip_prefix(FEATURE_USES_PREFIX) {
            Some(feature) => format!(
                "{} in the last 7 days",
                crate::format::count(
                    value.as_i64().unwrap_or(0),
                    &format!("use of {feature}"),
                    &format!("uses of {feature}")
                )
            ),
            None => crate::format::clause(&clause.measure, value),
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    let mut text = parts.join(", ");
    if let Some(first) = text.get(..1) {
        text = first.to_uppercase() + &text[1..];
    }
    text
}

/// A Slack incoming-webhook body (Block Kit): account, reason and a dashboard button.
pub fn slack_payload(alert: &Alert) -> Value {
    let title = format!("{}: {}", alert.account_name, alert.rule);
    json!({
        "text": format!("{title} ({})", alert.reason),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": format!("*Account*\n{}", alert.account_name)},
                {"type": "mrkdwn", "text": format!("*Rule*\n{}", alert.rule)},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Why*: {}", alert.reason)}},
            {"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Open in bellwether"}, "url": alert.link}
            ]}
        ]
    })
}

/// The generic webhook body.
pub fn webhook_payload(alert: &Alert, idempotency_key: &str) -> Value {
    json!({
        "type": "alert",
        "id": idempotency_key,
        "alert_id": alert.id,
        "rule": alert.rule,
        "account_id": alert.account_id,
        "account_name": alert.account_name,
        "reason": alert.reason,
        "link": alert.link,
        "measures": alert.measures,
    })
}

/// `X-Bellwether-Signature: t=UNIX,v1=HEX` where HEX is HMAC-SHA256(secret, "UNIX.BODY").
pub fn signature(secret: &str, unix: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("invariant: HMAC takes keys of any length");
    mac.update(format!("{unix}.").as_bytes());
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "t={unix},v1={}",
        tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measures(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn settings_made_on_the_dashboard_add_channels_and_replace_the_survey_policy() {
        let config = ActionsConfig {
            channels: BTreeMap::from([(
                "cs".to_string(),
                Channel::Slack {
                    url: "https://hooks.example/cs".into(),
                },
            )]),
            ..ActionsConfig::default()
        };
        let stored = r#"{"cs": {"type": "webhook", "url": "https://elsewhere.example"},
                         "ops": {"type": "webhook", "url": "https://ops.example/hook", "secret": "s"},
                         "mail": {"type": "email", "to": "owner"}}"#;
        let policy = r#"{"enabled": true, "after_ticket": true, "after_ticket_days": 10, "after_ticket_kind": "ces",
                         "quarterly_nps": false, "go_live": true, "global_gap_days": 7, "token_valid_days": 5}"#;
        let (in_force, warnings) = config.in_force(Some(stored), Some(policy));
        // The config's channel wins its name; the webhook is added; the email channel needs
        // SMTP, which the file does not have: left out, with the reason.
        assert_eq!(
            in_force.channels.keys().collect::<Vec<_>>(),
            vec!["cs", "ops"]
        );
        assert_eq!(in_force.channels["cs"], config.channels["cs"]);
        assert_eq!(
            warnings,
            vec!["channels.mail: an email channel needs [actions.smtp]"]
        );
        assert_eq!(
            (
                in_force.surveys.enabled,
                in_force.surveys.after_ticket_kind.as_str(),
                in_force.surveys.global_gap_days
            ),
            (true, "ces", 7)
        );
        // A policy out of bounds or unreadable settings leave the file's in force.
        let bad = policy.replace("\"token_valid_days\": 5", "\"token_valid_days\": 0");
        let (in_force, warnings) = config.in_force(Some("not json"), Some(&bad));
        assert_eq!(in_force.surveys, config.surveys);
        assert_eq!(in_force.channels, config.channels);
        assert_eq!(warnings.len(), 2);
        assert_eq!(config.in_force(None, None).0.channels, config.channels);
    }

    #[test]
    fn a_rules_cause_is_its_own_else_renewal_else_its_first_measure() {
        let cause = |name: &str, when: &str| {
            let rule = builtin_rules()
                .into_iter()
                .find(|r| r.name == name)
                .unwrap();
            let rule = Rule {
                when: when.into(),
                ..rule
            };
            cause_of(&rule, &Condition::parse(&rule.when).unwrap())
        };
        // The two rules before a renewal are one conversation with the customer.
        assert_eq!(
            cause(
                "low-licence-use-before-renewal",
                "license_utilization < 0.5 and renewal_in_days <= 60"
            ),
            "renewal"
        );
        assert_eq!(
            cause(
                "red-near-renewal",
                "tier == 'red' and renewal_in_days <= 90"
            ),
            "renewal"
        );
        assert_eq!(
            cause("usage-infrequent", "usage_frequency == 'infrequent'"),
            "usage_frequency"
        );
        let own = Rule {
            cause: Some("adoption".into()),
            ..builtin_rules().remove(0)
        };
        assert_eq!(
            cause_of(&own, &Condition::parse(&own.when).unwrap()),
            "adoption"
        );
    }

    #[test]
    fn a_form_builds_a_condition_the_parser_reads() {
        let when = condition_from(&[
            ("tier", "==", "red"),
            ("renewal_in_days", "<=", "90"),
            ("", "==", ""),
        ])
        .unwrap();
        assert_eq!(when, "tier == 'red' and renewal_in_days <= 90");
        assert_eq!(Condition::parse(&when).unwrap().clauses.len(), 2);
        assert_eq!(
            condition_from(&[("tier_dropped", "==", "true")]).unwrap(),
            "tier_dropped == true"
        );
        assert_eq!(condition_from(&[("", "", "")]).unwrap_err().0, "measure_1");
        assert_eq!(condition_from(&[("nps", "=~", "1")]).unwrap_err().0, "op_1");
        assert_eq!(
            condition_from(&[("nps", "<", "")]).unwrap_err().0,
            "value_1"
        );
        assert_eq!(
            condition_from(&[("plan", "==", "o'brien")]).unwrap_err().0,
            "value_1"
        );
    }

    #[test]
    fn conditions_parse_and_hold_by_clause() {
        let c = Condition::parse("tier == 'red' and renewal_in_days <= 90").unwrap();
        assert!(c.holds(&measures(&[
            ("tier", json!("red")),
            ("renewal_in_days", json!(90))
        ])));
        assert!(!c.holds(&measures(&[
            ("tier", json!("red")),
            ("renewal_in_days", json!(91))
        ])));
        assert!(!c.holds(&measures(&[
            ("tier", json!("green")),
            ("renewal_in_days", json!(10))
        ])));
        // A missing number is never below a threshold.
        assert!(!Condition::parse("nps < 0").unwrap().holds(&measures(&[])));
        assert!(Condition::parse("tier_dropped == true")
            .unwrap()
            .holds(&measures(&[("tier_dropped", json!(true))])));
        // A condition on events: a feature's uses in the last 7 days.
        let uses = Condition::parse("uses_7d:Report Exported >= 3").unwrap();
        assert_eq!(uses.features().collect::<Vec<_>>(), vec!["Report Exported"]);
        assert!(uses.holds(&measures(&[("uses_7d:Report Exported", json!(3))])));
        assert!(!uses.holds(&measures(&[("uses_7d:Report Exported", json!(2))])));
    }

    #[test]
    fn bad_conditions_name_the_problem() {
        assert!(Condition::parse("tierr == 'red'")
            .unwrap_err()
            .contains("\"tierr\" is not a measure"));
        assert!(Condition::parse("tier = 'red'")
            .unwrap_err()
            .contains("no comparison"));
        assert!(Condition::parse("tier < 'red'")
            .unwrap_err()
            .contains("compares numbers only"));
        assert!(Condition::parse("nps > lots")
            .unwrap_err()
            .contains("is not a number"));
    }

    #[test]
    fn every_builtin_rule_is_valid() {
        assert_eq!(ActionsConfig::default().ready_rules().unwrap().len(), 7);
    }

    #[test]
    fn retries_back_off_exponentially_to_an_hour() {
        assert_eq!(retry_delay_ms(10, 1), 10_000);
        assert_eq!(retry_delay_ms(10, 2), 20_000);
        assert_eq!(retry_delay_ms(10, 4), 80_000);
        assert_eq!(retry_delay_ms(10, 30), 3_600_000);
    }

    #[test]
    fn signature_is_hmac_of_time_and_body() {
        // Reference: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
