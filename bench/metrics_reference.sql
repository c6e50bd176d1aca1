-- Reference SQL for the activity metrics of `bellwether metrics` (bench/metrics.sh, issue 6).
-- DuckDB, one query, parameter $as_of (a DATE, or 'YYYY-MM-DD'). Computes, per account of
-- the accounts table, from the raw events (no rollups), the columns:
--   account_id, active_days_14d, active_minutes_14d, active_users_14d, active_users_30d,
--   dau, wau, mau, logins_per_user_week, seats, license_utilization, features_used_30d,
--   transactions_30d, education_events_30d, user_adoption_growth
-- with bellwether's definitions and default [metrics] settings (no passive events; login
-- 'Signed In', logout 'Signed Out', heartbeat 'Active Ping'; education prefixes 'Doc ',
-- 'Tutorial ', 'Webinar ', 'Course '; windows 14 / 30 / 28 days).
--
-- Tables (exported from bellwether's SQLite by bench/metrics_duckdb.py):
--   events(id, type, user_id, anonymous_id, group_id, event, timestamp_ms)
--       group_id is the groupId of a group call, else context.groupId
--   memberships(user_id, anonymous_id, account_id, timestamp_ms, event_id)
--   identity_links(previous_id, user_id, timestamp_ms, event_id)
--   accounts(account_id, segment, plan, timezone, parent_id)
--   subscriptions(account_id, seats, start_date DATE, end_date DATE)
--
-- Person: a userId, or an anonymousId, resolved through identity_links (each id's newest
-- link, by timestamp_ms then event_id, followed up to 16 hops the way bellwether does); an
-- anonymousId never linked is nobody. Account: context.groupId when set, else the account of
-- the person's latest membership (timestamp_ms, then event_id) at or before the event, where
-- the person's memberships are those of the person and of every id linked to it. Local day:
-- the event's date in the account's timezone (NULL = UTC). A window of N days ending at
-- as_of is the local days as_of-N+1 .. as_of.
--
-- Only events within [as_of - 61 days, as_of + 2 days] (UTC) are read: every local day of
-- the 60 days the columns look at lies inside it whatever the timezone (offsets are < 1 day).
WITH RECURSIVE
p AS (
    SELECT CAST($as_of AS DATE) AS d,
           (date_diff('day', DATE '1970-01-01', CAST($as_of AS DATE)) - 61) * 86400000::BIGINT AS lo_ms,
           (date_diff('day', DATE '1970-01-01', CAST($as_of AS DATE)) + 2) * 86400000::BIGINT AS hi_ms
),
-- The newest link of every previous id.
link AS (
    SELECT previous_id AS id, user_id AS next
    FROM identity_links
    QUALIFY row_number() OVER (PARTITION BY previous_id ORDER BY timestamp_ms DESC, event_id DESC) = 1
),
-- Follow the links from every linked id: a hop is taken from an id not seen before on the
-- walk, at most 16 ids seen (store::sqlite::rollup::Lookups::canonical_of).
walk AS (
    SELECT id AS start, id AS cur, []::VARCHAR[] AS seen FROM link
    UNION ALL
    SELECT w.start, l.next, list_append(w.seen, w.cur)
    FROM walk w JOIN link l ON l.id = w.cur
    WHERE NOT list_contains(w.seen, w.cur) AND len(w.seen) < 16
),
canon AS (
    SELECT start AS id, arg_max(cur, len(seen)) AS person FROM walk GROUP BY start
),
-- Activity events in the time range, with their person.
ev AS (
    SELECT e.id, e.type, e.event, e.group_id, e.timestamp_ms,
           CASE WHEN e.user_id IS NOT NULL THEN coalesce(cu.person, e.user_id) ELSE ca.person END AS person
    FROM events e
    CROSS JOIN p
    LEFT JOIN canon cu ON cu.id = e.user_id
    LEFT JOIN canon ca ON ca.id = e.anonymous_id
    WHERE e.timestamp_ms BETWEEN p.lo_ms AND p.hi_ms
      AND (e.type IN ('page', 'screen') OR (e.type = 'track' AND e.event IS NOT NULL))
),
-- Every id standing for a person who needs a membership lookup: the person and the ids
-- linked to it, transitively (store::sqlite::rollup::identity_set).
ids AS (
    SELECT DISTINCT person, person AS id FROM ev WHERE person IS NOT NULL AND group_id IS NULL
    UNION
    SELECT i.person, l.previous_id FROM ids i JOIN identity_links l ON l.user_id = i.id
),
-- The person's memberships; of several at one instant the one with the highest event id wins.
pm AS (
    SELECT i.person, m.timestamp_ms, m.account_id
    FROM ids i JOIN memberships m ON coalesce(m.user_id, m.anonymous_id) = i.id
    QUALIFY row_number() OVER (PARTITION BY i.person, m.timestamp_ms ORDER BY m.event_id DESC, m.account_id DESC) = 1
),
-- Each membership holds until the person's next one (people have few: a hash join on the
-- person and a range check beats DuckDB's ASOF JOIN here: 0.7 s of operator time against 2.1 s).
pm_range AS (
    SELECT person, account_id, timestamp_ms AS from_ms,
           lead(timestamp_ms, 1, 9223372036854775807) OVER (PARTITION BY person ORDER BY timestamp_ms) AS to_ms
    FROM pm
),
attributed AS (
    SELECT ev.person, ev.type, ev.event, ev.timestamp_ms, ev.group_id AS account_id
    FROM ev WHERE ev.person IS NOT NULL AND ev.group_id IS NOT NULL
    UNION ALL
    SELECT ev.person, ev.type, ev.event, ev.timestamp_ms, r.account_id
    FROM ev JOIN pm_range r ON r.person = ev.person AND ev.timestamp_ms >= r.from_ms AND ev.timestamp_ms < r.to_ms
    WHERE ev.group_id IS NULL
),
located AS (
    SELECT a.account_id, a.person, a.type, a.event, a.timestamp_ms // 60000 AS minute,
           coalesce(acc.timezone, 'UTC') AS tz
    FROM attributed a LEFT JOIN accounts acc ON acc.account_id = a.account_id
),
-- The local day of each (timezone, UTC minute) pair, converted once: offsets are whole
-- minutes, so every instant of a UTC minute falls on the same local day. (Converting every
-- event row with its own timezone is ~10x slower in DuckDB 1.5.)
minute_day AS (
    SELECT tz, minute, (to_timestamp(minute * 60) AT TIME ZONE tz)::DATE AS day
    FROM (SELECT DISTINCT tz, minute FROM located)
),
w AS (
    SELECT l.account_id, l.person, l.event, l.minute, md.day, date_diff('day', md.day, p.d) AS ago,
           l.type = 'track' AND l.event = 'Signed In' AS login,
           l.type = 'track' AND l.event NOT IN ('Signed In', 'Signed Out', 'Active Ping') AS feature,
           l.type = 'track' AND (starts_with(l.event, 'Doc ') OR starts_with(l.event, 'Tutorial ')
                                 OR starts_with(l.event, 'Webinar ') OR starts_with(l.event, 'Course ')) AS education
    FROM located l
    JOIN minute_day md ON md.tz = l.tz AND md.minute = l.minute
    CROSS JOIN p
    WHERE md.day BETWEEN p.d - 59 AND p.d
),
agg AS (
    SELECT account_id,
           count(DISTINCT day) FILTER (WHERE ago < 14) AS active_days_14d,
           count(DISTINCT (person, minute)) FILTER (WHERE ago < 14) AS active_minutes_14d,
           count(DISTINCT person) FILTER (WHERE ago < 14) AS active_users_14d,
           count(DISTINCT person) FILTER (WHERE ago < 30) AS active_users_30d,
           count(DISTINCT person) FILTER (WHERE ago = 0) AS dau,
           count(DISTINCT person) FILTER (WHERE ago < 7) AS wau,
           count(*) FILTER (WHERE ago < 28 AND login) AS logins_28d,
           count(DISTINCT event) FILTER (WHERE ago < 30 AND feature) AS features_used_30d,
           count(*) FILTER (WHERE ago < 30 AND feature) AS transactions_30d,
           count(*) FILTER (WHERE ago < 30 AND education) AS education_events_30d,
           count(DISTINCT person) FILTER (WHERE ago >= 30) AS active_users_prior_30d
    FROM w GROUP BY account_id
),
seats AS (
    SELECT s.account_id, sum(coalesce(s.seats, 0)) AS seats
    FROM subscriptions s CROSS JOIN p
    WHERE s.start_date <= p.d AND (s.end_date IS NULL OR s.end_date >= p.d)
    GROUP BY s.account_id
),
joined AS (
    SELECT a.account_id,
           coalesce(g.active_days_14d, 0) AS active_days_14d,
           coalesce(g.active_minutes_14d, 0) AS active_minutes_14d,
           coalesce(g.active_users_14d, 0) AS active_users_14d,
           coalesce(g.active_users_30d, 0) AS active_users_30d,
           coalesce(g.dau, 0) AS dau,
           coalesce(g.wau, 0) AS wau,
           coalesce(g.logins_28d, 0) AS logins_28d,
           coalesce(s.seats, 0) AS seats,
           coalesce(g.features_used_30d, 0) AS features_used_30d,
           coalesce(g.transactions_30d, 0) AS transactions_30d,
           coalesce(g.education_events_30d, 0) AS education_events_30d,
           coalesce(g.active_users_prior_30d, 0) AS active_users_prior_30d
    FROM accounts a
    LEFT JOIN agg g ON g.account_id = a.account_id
    LEFT JOIN seats s ON s.account_id = a.account_id
)
SELECT account_id,
       active_days_14d,
       active_minutes_14d,
       active_users_14d,
       active_users_30d,
       dau,
       wau,
       active_users_30d AS mau,
       CASE WHEN active_users_30d = 0 THEN NULL ELSE logins_28d::DOUBLE / active_users_30d / 4 END AS logins_per_user_week,
       seats,
       CASE WHEN seats = 0 THEN NULL ELSE active_users_30d::DOUBLE / seats END AS license_utilization,
       features_used_30d,
       transactions_30d,
       education_events_30d,
       CASE WHEN active_users_prior_30d = 0 THEN NULL ELSE active_users_30d::DOUBLE / active_users_prior_30d - 1 END AS user_adoption_growth
FROM joined
ORDER BY account_id;
