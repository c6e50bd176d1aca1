//! What the metrics read on ClickHouse: accounts, records and the `activity` rollups cut
//! into per-person local days as the embedded rollups count them.

use crate::identity;
use crate::store::Activity;
use crate::store::{EventFilter, RecentEvent};
use std::collections::BTreeSet;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;

use super::{
    block_on, error, fetch_all, non_empty, ClickHouse, ACTIVITY_DAYS_PER_READ,
    ACTIVITY_ROWS_PER_READ, FIRST_COPY, LINKED_ID, ROLLUP_READ_TIMEOUT,
};
use crate::config::{CurrencyConfig, MetricsConfig};
use crate::metrics::activity::{self, Classifier};
use crate::metrics::{self, FeatureDay, UserDay};
use crate::records::{self, Cell};
use crate::store::{AccountInfo, StoreError};

/// One link of an identity (alias previousId, or identify anonymousId, to a userId).
#[derive(clickhouse::Row, Deserialize)]
struct LinkRow {
    previous: String,
    user_id: String,
    timestamp_ms: i64,
    received_ms: i64,
    position: u32,
}

/// One group call.
#[derive(clickhouse::Row, Deserialize)]
pub(super) struct GroupRow {
    user_id: String,
    anonymous_id: String,
    group_id: String,
    timestamp_ms: i64,
    received_ms: i64,
    position: u32,
    name: String,
    plan: String,
}

/// The accounts only group calls name (`known` tells those with a record), with the name
/// and plan of their newest call that has one (as the embedded store merges group traits).
fn group_only_accounts<'a>(
    groups: &'a [GroupRow],
    known: &dyn Fn(&str) -> bool,
) -> BTreeMap<&'a str, (Option<String>, Option<String>)> {
    let mut sorted: Vec<&GroupRow> = groups.iter().filter(|g| !known(&g.group_id)).collect();
    sorted.sort_by_key(|g| (g.timestamp_ms, g.received_ms, g.position));
    let mut out: BTreeMap<&str, (Option<String>, Option<String>)> = BTreeMap::new();
    for group in sorted {
        let (name, plan) = out.entry(&group.group_id).or_default();
        *name = non_empty(&group.name).or(name.take());
        *plan = non_empty(&group.plan).or(plan.take());
    }
    out
}

/// One merged `activity` row.
#[derive(clickhouse::Row, Deserialize)]
struct ActivityRow {
    user_id: String,
    anonymous_id: String,
    group_id: String,
    kind: String,
    event: String,
    messages: u64,
    minutes: Vec<u32>,
    first_ms: i64,
}

/// Per-user-day rollups of every account, cut as the embedded store's rollup worker cuts
/// them (see `store::sqlite::rollup`): each activity row counts for the person its ids resolve to
/// and for its event's account (`context.groupId`, else the account the person was grouped
/// into at the time; none: not counted), on the local day of that account's timezone.
#[derive(Default)]
pub(super) struct Rollups {
    pub(super) days: HashMap<String, Vec<UserDay>>,
    pub(super) features: HashMap<String, Vec<FeatureDay>>,
    pub(super) first_use: HashMap<String, HashMap<String, i32>>,
    /// Each account's last local day with counted activity (found with `first_use`).
    pub(super) last_day: HashMap<String, i32>,
    /// The first local day with counted activity (of any account).
    pub(super) first_day: Option<i32>,
}

impl ClickHouse {
    /// Every group call, each message once.
    pub(super) async fn group_calls(&self) -> Result<Vec<GroupRow>, StoreError> {
        fetch_all(
            self.client.query(&format!(
                "SELECT user_id, anonymous_id, group_id, timestamp_ms, received_ms, position,
                        visitParamExtractString(traits, 'name') AS name, visitParamExtractString(traits, 'plan') AS plan
                 FROM events WHERE type = 'group' {FIRST_COPY}"
            )),
            "group calls",
        )
        .await
    }

    /// `columns` of every current record of kind `table`.
    pub(super) async fn record_cells(
        &self,
        table: &str,
        columns: &[&str],
    ) -> Result<Vec<Vec<Cell>>, StoreError> {
        let kind = records::kind(table)
            .ok_or_else(|| StoreError::Invalid(format!("no record kind {table}")))?;
        let index = columns
            .iter()
            .map(|c| {
                kind.columns
                    .iter()
                    .position(|k| k.name == *c)
                    .ok_or_else(|| StoreError::Invalid(format!("{table} has no column {c}")))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let stored = self.records_of(kind, None).await?;
        let mut rows: Vec<Vec<Cell>> = stored
            .iter()
            .map(|r| index.iter().map(|&i| r.cells[i].clone()).collect())
            .collect();
        if kind.name == records::ACCOUNTS.name {
            // Accounts known from group calls alone are accounts too, as on the embedded store.
            let known: HashSet<String> = stored
                .iter()
                .filter_map(|r| r.get(kind, "account_id").as_text().map(str::to_string))
                .collect();
            let groups = self.group_calls().await?;
            for (id, (name, plan)) in group_only_accounts(&groups, &|id| known.contains(id)) {
                let cell = |value: Option<String>| value.map_or(Cell::Null, Cell::Text);
                rows.push(
                    columns
                        .iter()
                        .map(|&c| match c {
                            "account_id" => Cell::Text(id.to_string()),
                            "name" => cell(name.clone()),
                            "plan" => cell(plan.clone()),
                            _ => Cell::Null,
                        })
                        .collect(),
                );
            }
        }
        Ok(rows)
    }

    /// Every account, by id order, as the embedded store lists them.
    pub async fn accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        self.account_infos(&self.group_calls().await?).await
    }

    /// The records the metrics read, of the accounts of `infos` only, of the kinds in
    /// `tables` (None: every kind the metrics read).
    async fn metric_records(
        &self,
        infos: &[&AccountInfo],
        currency: &CurrencyConfig,
        tables: Option<&[&str]>,
    ) -> Result<crate::store::load::AccountRecords, StoreError> {
        let wanted: HashSet<&str> = infos.iter().map(|i| i.account_id.as_str()).collect();
        let mut rows: HashMap<&str, Vec<Vec<Cell>>> = HashMap::new();
        for (table, columns) in crate::store::load::RECORD_COLUMNS
            .iter()
            .filter(|(t, _)| tables.is_none_or(|tables| tables.contains(t)))
        {
            let current = self.record_cells(table, columns).await?;
            rows.insert(
                table,
                current
                    .into_iter()
                    .filter(|cells| cells[0].as_text().is_some_and(|a| wanted.contains(a)))
                    .collect(),
            );
        }
        crate::store::load::build_records(
            &mut |table, _| Ok(rows.remove(table).unwrap_or_default()),
            infos.iter().copied(),
            currency,
        )
    }

    /// The data of `infos` as `store::sqlite::metrics::load` reads it on the embedded store: records
    /// and the `activity` rollups read from ClickHouse (events already aggregated there),
    /// cut into per-user local days here, from `from_day - lookback` to `to_day` plus each
    /// account's value window.
    pub async fn load(
        &self,
        infos: &[&AccountInfo],
        from_day: i32,
        to_day: i32,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<metrics::AccountData>, StoreError> {
        let groups = self.group_calls().await?;
        let mut records = self.metric_records(infos, currency, None).await?;
        let mut datas: Vec<metrics::AccountData> = infos
            .iter()
            .map(|info| records.account_data(info))
            .collect();
        let position: HashMap<&str, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, info)| (info.account_id.as_str(), i))
            .collect();
        let from = from_day - config.lookback_days();
        // The days the computation reads: the lookback window and the value window.
        let windows = |account: &str, first_use: &HashMap<String, i32>| -> Vec<(i32, i32)> {
            let mut windows = vec![(from, to_day)];
            let moment = position
                .get(account)
                .and_then(|&i| datas[i].value_moment_with(first_use, config));
            if let Some(moment) = moment {
                windows.push((moment, moment + config.windows.adoption_days as i32 - 1));
            }
            windows
        };
        let mut rollups = self
            .rollups(infos, &groups, config, Windows::AfterFirstUse(&windows))
            .await?;
        for (info, data) in infos.iter().zip(datas.iter_mut()) {
            let id = info.account_id.as_str();
            let days = rollups.days.remove(id).unwrap_or_default();
            data.features = rollups
                .features
                .remove(id)
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f.day >= from && f.day <= to_day)
                .collect();
            data.first_use = rollups.first_use.remove(id).unwrap_or_default();
            data.last_active = rollups.last_day.remove(id);
            data.days = days
                .iter()
                .filter(|d| d.day >= from && d.day <= to_day)
                .cloned()
                .collect();
            if let Some(moment) = data.value_moment(config) {
                let last = moment + config.windows.adoption_days as i32 - 1;
                data.value_days = days
                    .into_iter()
                    .filter(|d| d.day >= moment && d.day <= last)
                    .collect();
            }
        }
        Ok(datas)
    }

    /// Every account's subscriptions, in the report currency.
    async fn subscriptions(
        &self,
        infos: &[AccountInfo],
        currency: &CurrencyConfig,
    ) -> Result<HashMap<String, Vec<metrics::Subscription>>, StoreError> {
        let all: Vec<&AccountInfo> = infos.iter().collect();
        Ok(self
            .metric_records(&all, currency, Some(&["subscriptions"]))
            .await?
            .subscriptions)
    }

    /// The accounts of the records, plus those only group calls named (their plan from the
    /// newest call's traits), by id: as the embedded store lists them.
    async fn account_infos(&self, groups: &[GroupRow]) -> Result<Vec<AccountInfo>, StoreError> {
        let kind = &records::ACCOUNTS;
        let mut infos: BTreeMap<String, AccountInfo> = BTreeMap::new();
        for account in self.records_of(kind, None).await? {
            let text = |name: &str| account.get(kind, name).as_text().map(str::to_string);
            let id = text("account_id").unwrap_or_default();
            let plan = text("plan");
            infos.insert(
                id.clone(),
                AccountInfo {
                    account_id: id,
                    parent_id: text("parent_id"),
                    segment: text("segment")
                        .or_else(|| plan.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    plan,
                    tz: text("timezone")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(chrono_tz::UTC),
                },
            );
        }
        for (id, (_, plan)) in group_only_accounts(groups, &|id| infos.contains_key(id)) {
            infos.insert(
                id.to_string(),
                AccountInfo {
                    account_id: id.to_string(),
                    parent_id: None,
                    segment: plan.clone().unwrap_or_else(|| "unknown".into()),
                    plan,
                    tz: chrono_tz::UTC,
                },
            );
        }
        Ok(infos.into_values().collect())
    }

    /// Two passes over the `activity` rows, streamed: the first finds each account's first
    /// day of each feature, the second keeps the per-user days inside `windows(account,
    /// first uses)` only, so memory is that of the days an export reads. With `Windows::Known`
    /// the first pass is skipped and only the days around the windows are read.
    // Over 100 lines: Identity resolution duplicated from store/rollup.rs: issue 29 item 3 writes it once as a pure module and removes this.
    #[allow(clippy::too_many_lines)]
    pub(super) async fn rollups(
        &self,
        infos: &[&AccountInfo],
        groups: &[GroupRow],
        config: &MetricsConfig,
        windows: Windows<'_>,
    ) -> Result<Rollups, StoreError> {
        let links: Vec<LinkRow> = fetch_all(
            self.client.query(&format!(
                "SELECT {LINKED_ID} AS previous, user_id, timestamp_ms, received_ms, position
                 FROM events WHERE type IN ('alias', 'identify') AND user_id != '' AND {LINKED_ID} != '' {FIRST_COPY}"
            )),
            "identity links",
        )
        .await?;
        let timezones: HashMap<&str, chrono_tz::Tz> = infos
            .iter()
            .map(|i| (i.account_id.as_str(), i.tz))
            .collect();
        // The newest link of each id, as the rollup worker follows them.
        let mut newest_link: HashMap<&str, &LinkRow> = HashMap::new();
        let mut linked_from: HashMap<&str, Vec<&str>> = HashMap::new();
        for link in links.iter().filter(|l| l.previous != l.user_id) {
            let slot = newest_link.entry(&link.previous).or_insert(link);
            if (link.timestamp_ms, link.received_ms, link.position)
                >= (slot.timestamp_ms, slot.received_ms, slot.position)
            {
                *slot = link;
            }
            linked_from
                .entry(&link.user_id)
                .or_default()
                .push(&link.previous);
        }
        let mut known = KnownLinks {
            newest_link,
            linked_from,
        };
        // Each person's group calls under any id linked into it, by time.
        let mut calls_of: HashMap<&str, Vec<&GroupRow>> = HashMap::new();
        for group in groups {
            let id = if group.user_id.is_empty() {
                &group.anonymous_id
            } else {
                &group.user_id
            };
            calls_of.entry(id).or_default().push(group);
        }
        let mut memberships: HashMap<String, Vec<(i64, i64, u32, String)>> = HashMap::new();
        let mut account_at = |links: &mut KnownLinks, person: &str, ts: i64| -> Option<String> {
            let list = memberships.entry(person.to_string()).or_insert_with(|| {
                let Ok(ids) = identity::ids_of(links, person);
                let mut all: Vec<(i64, i64, u32, String)> = ids
                    .iter()
                    .flat_map(|id| calls_of.get(id.as_str()).into_iter().flatten())
                    .map(|g| {
                        (
                            g.timestamp_ms,
                            g.received_ms,
                            g.position,
                            g.group_id.clone(),
                        )
                    })
                    .collect();
                all.sort();
                all
            });
            identity::call_at(list, ts, |call| call.0).map(|call| call.3.clone())
        };

        let scope = people_of(infos, groups, &links);
        let mut classifier = Classifier::new(config);
        let mut cut: BTreeMap<(String, i32, String), crate::store::sqlite::rollup::DayAgg> =
            BTreeMap::new();
        let mut first_use: HashMap<String, HashMap<String, i32>> = HashMap::new();
        let mut last_day: HashMap<String, i32> = HashMap::new();
        let mut kept: Option<HashMap<String, Vec<(i32, i32)>>> = match &windows {
            Windows::Known(known) => Some(
                infos
                    .iter()
                    .map(|i| (i.account_id.clone(), known(&i.account_id)))
                    .collect(),
            ),
            Windows::AfterFirstUse(_) => None,
        };
        // Known windows: the UTC days that may hold their local days (a day either side).
        let span = kept.as_ref().and_then(|k| {
            let from = k.values().flatten().map(|w| w.0).min()?;
            let to = k.values().flatten().map(|w| w.1).max()?;
            Some((from - 1, to + 1))
        });
        if kept.is_some() && span.is_none() {
            return Ok(Rollups::default());
        }
        let mut first_day: Option<i32> = None;
        // An empty array literal has no element type on older servers: empty lists are left out.
        let filter = match &scope {
            None => "1".to_string(),
            Some((accounts, people)) => {
                let mut any = Vec::new();
                if !accounts.is_empty() {
                    any.push("has(?, group_id)");
                }
                if !people.is_empty() {
                    any.extend(["has(?, user_id)", "has(?, anonymous_id)"]);
                }
                if any.is_empty() {
                    "0".to_string()
                } else {
                    format!("({})", any.join(" OR "))
                }
            }
        };
        let bind_scope = |mut query: clickhouse::query::Query| {
            if let Some((accounts, people)) = &scope {
                if !accounts.is_empty() {
                    query = query.bind(accounts);
                }
                if !people.is_empty() {
                    query = query.bind(people).bind(people);
                }
            }
            query
        };
        // Merging every row's states in one query needs memory in proportion to all of them
        // (a year of 10 M events went past 3.7 GB): the rows are read in runs of days, each
        // under ACTIVITY_ROWS_PER_READ stored rows and ACTIVITY_DAYS_PER_READ days (a bucket
        // never spans two days, so no row is split between runs).
        #[derive(clickhouse::Row, Deserialize)]
        struct DayRows {
            day: u16,
            rows: u64,
        }
        let per_day: Vec<DayRows> = fetch_all(
            bind_scope(self.client.query(&format!("SELECT toUInt16(day) AS day, count() AS rows FROM activity WHERE {filter} GROUP BY day ORDER BY day"))),
            "activity rollups",
        )
        .await?;
        let mut runs: Vec<(u16, u16)> = Vec::new();
        let mut in_run = 0u64;
        let wanted = |day: u16| span.is_none_or(|(from, to)| (from..=to).contains(&i32::from(day)));
        for d in per_day.iter().filter(|d| wanted(d.day)) {
            match runs.last_mut() {
                Some(run)
                    if in_run + d.rows <= ACTIVITY_ROWS_PER_READ
                        && d.day - run.0 < ACTIVITY_DAYS_PER_READ =>
                {
                    run.1 = d.day;
                    in_run += d.rows;
                }
                _ => {
                    runs.push((d.day, d.day));
                    in_run = d.rows;
                }
            }
        }
        let date = |day: u16| activity::day_date(i32::from(day)).to_string();
        for _pass in 0..2 {
            for &(first, last) in &runs {
                // The rollup rows stream by (never all in memory).
                let query = self.client.query(&format!(
                    "SELECT user_id, anonymous_id, group_id, type AS kind, event, uniqExactMerge(messages) AS messages,
                            groupUniqArrayMerge(minutes) AS minutes, minMerge(first_ms) AS first_ms
                     FROM activity WHERE {filter} AND day BETWEEN toDate(?) AND toDate(?) GROUP BY user_id, anonymous_id, group_id, kind, event, bucket"
                ));
                let mut cursor = bind_scope(query)
                    .bind(date(first))
                    .bind(date(last))
                    .fetch::<ActivityRow>()
                    .map_err(|e| error("activity rollups", e))?;
                let deadline = tokio::time::Instant::now() + ROLLUP_READ_TIMEOUT;
                loop {
                    let next = match tokio::time::timeout_at(deadline, cursor.next()).await {
                        Ok(next) => next.map_err(|e| error("activity rollups", e))?,
                        Err(_) => {
                            return Err(StoreError::ClickHouse(format!(
                                "activity rollups: not read within {} s",
                                ROLLUP_READ_TIMEOUT.as_secs()
                            )))
                        }
                    };
                    let Some(row) = next else { break };
                    let Some(act) =
                        classifier.classify(&row.kind, non_empty(&row.event).as_deref())
                    else {
                        continue;
                    };
                    let person = if !row.user_id.is_empty() {
                        let Ok(person) = identity::person_of(&mut known, &row.user_id, true);
                        person
                    } else if !row.anonymous_id.is_empty() {
                        let Ok(person) = identity::person_of(&mut known, &row.anonymous_id, false);
                        person
                    } else {
                        None
                    };
                    let Some(person) = person else { continue };
                    let account = match non_empty(&row.group_id) {
                        Some(group) => group,
                        None => match account_at(&mut known, &person, row.first_ms) {
                            Some(account) => account,
                            None => continue,
                        },
                    };
                    let tz = timezones
                        .get(account.as_str())
                        .copied()
                        .unwrap_or(chrono_tz::UTC);
                    let local = activity::local_day(row.first_ms, tz);
                    let Some(kept) = &kept else {
                        first_day = Some(first_day.map_or(local, |d: i32| d.min(local)));
                        match last_day.get_mut(&account) {
                            Some(last) => *last = (*last).max(local),
                            None => {
                                last_day.insert(account.clone(), local);
                            }
                        }
                        if let Some(feature) = &act.feature {
                            let first = first_use
                                .entry(account)
                                .or_default()
                                .entry(feature.clone())
                                .or_insert(local);
                            *first = (*first).min(local);
                        }
                        continue;
                    };
                    // Days of accounts the export does not list, or outside its windows, are not kept.
                    let Some(spans) = kept.get(&account) else {
                        continue;
                    };
                    if !spans.iter().any(|&(from, to)| local >= from && local <= to) {
                        continue;
                    }
                    let day = cut.entry((account, local, person)).or_default();
                    let uses = row.messages as i64;
                    day.events += uses;
                    day.minutes.extend(&row.minutes);
                    if act.login {
                        day.logins += uses;
                        day.login_minutes.extend(&row.minutes);
                    }
                    if act.education {
                        day.education += uses;
                    }
                    if let Some(feature) = &act.feature {
                        day.transactions += uses;
                        *day.features.entry(feature.clone()).or_default() += uses;
                        if act.key {
                            day.key_minutes.extend(&row.minutes);
                        }
                    }
                }
            }
            let Windows::AfterFirstUse(windows) = &windows else {
                break;
            };
            if kept.is_some() {
                break;
            }
            let none = HashMap::new();
            let windows: HashMap<String, Vec<(i32, i32)>> = infos
                .iter()
                .map(|i| {
                    (
                        i.account_id.clone(),
                        windows(&i.account_id, first_use.get(&i.account_id).unwrap_or(&none)),
                    )
                })
                .collect();
            if windows.values().all(Vec::is_empty) {
                // Nothing to keep: no second pass.
                break;
            }
            kept = Some(windows);
        }
        let mut out = Rollups {
            first_use,
            last_day,
            first_day,
            ..Rollups::default()
        };
        for ((account, day, person), mut agg) in cut {
            for list in [
                &mut agg.minutes,
                &mut agg.login_minutes,
                &mut agg.key_minutes,
            ] {
                list.sort_unstable();
                list.dedup();
            }
            for (feature, uses) in agg.features {
                out.features
                    .entry(account.clone())
                    .or_default()
                    .push(FeatureDay { day, feature, uses });
            }
            out.days.entry(account).or_default().push(UserDay {
                day,
                user: person,
                logins: agg.logins,
                transactions: agg.transactions,
                education: agg.education,
                minutes: agg.minutes,
                login_minutes: agg.login_minutes,
                key_minutes: agg.key_minutes,
            });
        }
        Ok(out)
    }
}

/// Which per-user days a rollups read keeps, by account (local day number ranges).
pub(super) enum Windows<'a> {
    /// Known before reading: one pass over the days they cover.
    Known(&'a dyn Fn(&str) -> Vec<(i32, i32)>),
    /// Known from each feature's first use: a first pass over every day finds those.
    AfterFirstUse(&'a FromFirstUse<'a>),
}

/// An account's day windows from its features' first days of use.
type FromFirstUse<'a> = dyn Fn(&str, &HashMap<String, i32>) -> Vec<(i32, i32)> + 'a;

/// Accounts read together up to which the `activity` rows are filtered by who may count
/// for them (more: every row is read, which is cheaper than a long id list).
const SCOPED_ACCOUNTS_MAX: usize = 64;
/// Ids a scoped read may name before it reads every row instead.
const SCOPED_IDS_MAX: usize = 100_000;

/// For a read of a few accounts: their ids, and every user or anonymous id whose activity
/// may count for them: the ids in their group calls and every id linked to those, however
/// indirectly (a superset of the people the rollup rules resolve into these accounts).
/// None: read every row.
fn people_of(
    infos: &[&AccountInfo],
    groups: &[GroupRow],
    links: &[LinkRow],
) -> Option<(Vec<String>, Vec<String>)> {
    let accounts: HashSet<&str> = infos.iter().map(|i| i.account_id.as_str()).collect();
    // A quarter or more of the accounts with group calls: their people are most rows, and
    // matching every row against long id lists costs more than reading it (the 30-account
    // demo's export: 2.1 s scoped, 0.65 s reading every row).
    let grouped: HashSet<&str> = groups.iter().map(|g| g.group_id.as_str()).collect();
    if infos.len() > SCOPED_ACCOUNTS_MAX || accounts.len() * 4 > grouped.len() {
        return None;
    }
    let mut linked: HashMap<&str, Vec<&str>> = HashMap::new();
    for link in links {
        linked
            .entry(&link.previous)
            .or_default()
            .push(&link.user_id);
        linked
            .entry(&link.user_id)
            .or_default()
            .push(&link.previous);
    }
    let mut people: HashSet<&str> = HashSet::new();
    let mut next: Vec<&str> = groups
        .iter()
        .filter(|g| accounts.contains(g.group_id.as_str()))
        .flat_map(|g| [g.user_id.as_str(), g.anonymous_id.as_str()])
        .filter(|id| !id.is_empty())
        .collect();
    while let Some(id) = next.pop() {
        if people.insert(id) {
            if people.len() > SCOPED_IDS_MAX {
                return None;
            }
            next.extend(linked.get(id).into_iter().flatten());
        }
    }
    Some((
        accounts.into_iter().map(str::to_string).collect(),
        people.into_iter().map(str::to_string).collect(),
    ))
}

/// The metrics' reads, from synchronous code (a blocking thread of the server, or the CLI
/// inside a runtime): each waits for its queries.
impl Activity for ClickHouse {
    fn accounts(&self) -> Result<Vec<AccountInfo>, StoreError> {
        block_on(ClickHouse::accounts(self))?
    }

    fn load(
        &self,
        infos: &[&AccountInfo],
        from_day: i32,
        to_day: i32,
        config: &MetricsConfig,
        currency: &CurrencyConfig,
    ) -> Result<Vec<metrics::AccountData>, StoreError> {
        block_on(ClickHouse::load(
            self, infos, from_day, to_day, config, currency,
        ))?
    }

    fn subscriptions(
        &self,
        infos: &[AccountInfo],
        currency: &CurrencyConfig,
    ) -> Result<HashMap<String, Vec<metrics::Subscription>>, StoreError> {
        block_on(ClickHouse::subscriptions(self, infos, currency))?
    }

    /// A load reads every activity row of the lookback: a run of days costs about one
    /// snapshot (14 days of 2,000 accounts hold about 100 MB of rows).
    fn days_per_load(&self) -> usize {
        14
    }

    fn data_start(&self, config: &MetricsConfig) -> Result<Option<i32>, StoreError> {
        let infos = block_on(ClickHouse::accounts(self))??;
        let all: Vec<&AccountInfo> = infos.iter().collect();
        let nothing = |_: &str, _: &HashMap<String, i32>| Vec::new();
        block_on(async {
            let groups = self.group_calls().await?;
            Ok(self
                .rollups(&all, &groups, config, Windows::AfterFirstUse(&nothing))
                .await?
                .first_day)
        })?
    }

    fn feature_uses(
        &self,
        spans: &[(String, i32, i32)],
        config: &MetricsConfig,
    ) -> Result<Vec<HashMap<String, i64>>, StoreError> {
        block_on(ClickHouse::feature_uses(self, spans, config))?
    }

    /// ClickHouse's materialized view keeps the rollups as the events arrive.
    fn settled(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// The features of the tracked event names in the rollups.
    fn known_features(&self, config: &MetricsConfig) -> Result<Vec<String>, StoreError> {
        #[derive(clickhouse::Row, Deserialize)]
        struct Name {
            event: String,
        }
        let query = self
            .client
            .query("SELECT DISTINCT event FROM activity WHERE type = 'track'");
        let names = block_on(fetch_all::<Name>(query, "tracked event names"))??;
        let mut classifier = Classifier::new(config);
        let features: BTreeSet<String> = names
            .iter()
            .filter_map(|n| classifier.classify("track", Some(&n.event))?.feature)
            .collect();
        Ok(features.into_iter().collect())
    }

    /// Newest by receipt, as the embedded store's newest by id.
    fn recent_events(&self, account: &str, limit: usize) -> Result<Vec<RecentEvent>, StoreError> {
        let filter = EventFilter {
            since_ms: 0,
            until_ms: None,
            user: None,
            account: Some(account.to_string()),
            limit,
        };
        let mut events: Vec<RecentEvent> = block_on(self.events_in_order(&filter, true))??
            .into_iter()
            .map(|e| RecentEvent {
                timestamp_ms: e.timestamp_ms,
                kind: e.kind,
                event: e.event,
                user_id: e.user_id,
            })
            .collect();
        events.sort_by_key(|e| std::cmp::Reverse(e.timestamp_ms));
        Ok(events)
    }
}

/// The identity links read from the alias and identify calls, held in memory.
struct KnownLinks<'a> {
    /// Each id's newest link.
    newest_link: HashMap<&'a str, &'a LinkRow>,
    /// The ids linked to each user.
    linked_from: HashMap<&'a str, Vec<&'a str>>,
}

impl identity::Links for KnownLinks<'_> {
    type Error = std::convert::Infallible;

    fn newest_link(&mut self, id: &str) -> Result<Option<String>, Self::Error> {
        Ok(self.newest_link.get(id).map(|link| link.user_id.clone()))
    }

    fn linked_to(&mut self, user: &str) -> Result<Vec<String>, Self::Error> {
        Ok(self
            .linked_from
            .get(user)
            .into_iter()
            .flatten()
            .map(|id| id.to_string())
            .collect())
    }
}
