//! The demo generator: a deterministic B2B SaaS customer base with known ground truth.
//!
//! Same seed, size and end date give byte-identical files. Output (in `--out DIR`):
//! `events.ndjson.gz` (one Segment `/v1/batch` body per line), the import CSVs of every
//! record kind, `bellwether.toml` (the exchange rates the CSVs need) and `truth.json`.
//!
//! Planted truth: each segment has its own power feature. An account's monthly use of it
//! (account-wide uses x 30 / term days) during a contract term decides the renewal
//! probability at the term's end, in the seed's steps (0 / 1-5 / 6-10 / 11-15 / 16+ per
//! month). Power-feature usage is drawn independently of general activity, so the other
//! features, however popular, carry no signal. A few accounts drift: their power usage
//! fades during their last term and they churn.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};
use serde_json::json;

/// Size and shape of the generated company.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Accounts including enterprise parents.
    pub accounts: usize,
    pub years: u32,
    /// The last day of data (inclusive).
    pub end_date: NaiveDate,
}

/// Counts of what was written, for progress and the summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub accounts: usize,
    pub users: usize,
    pub events: u64,
    pub batches: u64,
    pub subscriptions: usize,
    pub tickets: usize,
    pub survey_responses: usize,
}

pub const SEGMENTS: &[&str] = &["trial", "starter", "pro", "enterprise"];
/// Monthly power-feature uses are cut at these points: [0], [1,5], [6,10], [11,15], [16,inf).
pub const CUT_POINTS: [u32; 4] = [1, 6, 11, 16];

fn power_feature(segment: &str) -> &'static str {
    match segment {
        "trial" => "Project Created",
        "starter" => "Report Exported",
        "pro" => "Dashboard Shared",
        _ => "Workflow Automated",
    }
}

/// Renewal (for trials: conversion) probability per usage bucket.
fn planted_rates(segment: &str) -> [f64; 5] {
    match segment {
        "trial" => [0.10, 0.25, 0.40, 0.55, 0.70],
        "starter" => [0.80, 0.88, 0.92, 0.95, 0.98], // monthly terms
        // The seed's yearly steps (50/60/70/80%), made steeper so that the ~50 yearly
        // decisions per segment of the default demo show them above the noise.
        _ => [0.10, 0.35, 0.55, 0.75, 0.92],
    }
}

pub fn bucket(monthly_uses: f64) -> usize {
    let uses = monthly_uses.floor() as u32;
    CUT_POINTS.iter().take_while(|&&cut| uses >= cut).count()
}

/// Popular everyday features; none of them drives renewal.
const FEATURES: &[&str] = &[
    "Report Viewed",
    "Filter Applied",
    "Search Performed",
    "Comment Added",
    "File Uploaded",
    "Task Created",
    "Task Completed",
    "Invite Sent",
    "Integration Connected",
    "Alert Configured",
    "Template Used",
    "Calendar Synced",
    "Export Scheduled",
    "Tag Added",
    "Board Viewed",
    "Note Created",
];
const PAGES: &[&str] = &[
    "Dashboard",
    "Reports",
    "Projects",
    "Settings",
    "Billing",
    "Team",
];
const EDUCATION: &[&str] = &[
    "Doc Viewed",
    "Tutorial Started",
    "Webinar Attended",
    "Course Completed",
];
const REGIONS: &[(&str, &str, &str)] = &[
    ("US", "America/New_York", "USD"),
    ("EU", "Europe/Berlin", "EUR"),
    ("UK", "Europe/London", "GBP"),
    ("Nordics", "Europe/Stockholm", "SEK"),
];
/// Exchange rates to USD of the currencies the demo uses.
pub const RATES: &[(&str, f64)] = &[("EUR", 1.08), ("GBP", 1.27), ("SEK", 0.095)];
const NAMES_A: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
    "Cyberdyne",
    "Wonka",
    "Gringotts",
    "Oscorp",
    "Pied",
    "Dunder",
    "Prestige",
    "Monarch",
    "Nakatomi",
    "Aperture",
];
const NAMES_B: &[&str] = &[
    "Labs",
    "Systems",
    "Works",
    "Group",
    "Partners",
    "Logistics",
    "Health",
    "Foods",
    "Media",
    "Energy",
    "Retail",
    "Capital",
    "Robotics",
    "Studios",
    "Analytics",
];
const CSAT_COMMENTS: &[&str] = &[
    "Quick and helpful answer",
    "Took too long to get a reply",
    "Solved my problem",
    "Support did not understand the issue",
    "Great support team",
];
/// Churn reason codes with what a customer leaving for it says; the first is for accounts
/// that never used their power feature.
const CHURN_REASONS: &[(&str, &str)] = &[
    ("no_adoption", "We never really got the team using it"),
    ("price", "Too expensive for what we use"),
    ("competitor", "Moving to a competitor with built-in SSO"),
    ("missing_feature", "Missing scheduled PDF exports"),
    ("budget", "Budget cuts across the department"),
    ("support", "Support was slow to answer our tickets"),
    (
        "company_closed",
        "The company was acquired and the office closed",
    ),
];
const NPS_COMMENTS: &[&str] = &[
    "Exports are slow on big reports",
    "Love the dashboards",
    "Too expensive for what we use",
    "Missing an SSO integration",
    "Easy to onboard new colleagues",
    "The mobile app is clunky",
];
const SUGGESTIONS: &[(&str, &str)] = &[
    ("Scheduled PDF exports", "reporting"),
    ("SSO with Okta", "security"),
    ("Dark mode", "ui"),
    ("Slack notifications", "integrations"),
    ("Bulk edit tasks", "productivity"),
    ("API rate limit increase", "platform"),
];
const HOLIDAYS: &[(u32, u32)] = &[
    (1, 1),
    (12, 24),
    (12, 25),
    (12, 26),
    (12, 31),
    (7, 4),
    (5, 1),
];

struct Csv {
    writer: csv::Writer<File>,
}

impl Csv {
    fn create(dir: &Path, name: &str, header: &[&str]) -> std::io::Result<Csv> {
        let mut writer = csv::Writer::from_path(dir.join(format!("{name}.csv")))?;
        writer.write_record(header)?;
        Ok(Csv { writer })
    }

    fn row(&mut self, fields: &[String]) -> std::io::Result<()> {
        self.writer
            .write_record(fields)
            .map_err(std::io::Error::other)
    }
}

/// Streams messages into `/v1/batch` bodies of at most [`BATCH_MESSAGES`].
struct Events {
    out: flate2::write::GzEncoder<BufWriter<File>>,
    batch: Vec<String>,
    next_id: u64,
    seed: u64,
    summary_events: u64,
    summary_batches: u64,
}

const BATCH_MESSAGES: usize = 100;

impl Events {
    fn push(&mut self, message: serde_json::Value) -> std::io::Result<()> {
        let mut message = message;
        self.next_id += 1;
        message["messageId"] = json!(format!("demo-{:x}-{:09}", self.seed, self.next_id));
        self.batch.push(message.to_string());
        self.summary_events += 1;
        if self.batch.len() == BATCH_MESSAGES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        writeln!(self.out, "{{\"batch\":[{}]}}", self.batch.join(","))?;
        self.batch.clear();
        self.summary_batches += 1;
        Ok(())
    }
}

fn ts(t: NaiveDateTime) -> String {
    t.and_utc().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

struct User {
    id: String,
    engagement: f64,
    joined: NaiveDate,
    last_survey: Option<NaiveDate>,
}

struct Account {
    id: String,
    segment: &'static str,
    timezone: chrono_tz::Tz,
    currency: &'static str,
    activity: f64,
    power_rate: f64,
    drifter: bool,
    seats: i64,
    feature_weights: Vec<f64>,
}

/// Realized outcome counts per segment and bucket, written to truth.json.
#[derive(Default)]
struct Tally {
    decided: BTreeMap<(&'static str, usize), (u64, u64)>,
}

// Over 100 lines: The generator's script: each file written in order from one seeded random stream.
#[allow(clippy::too_many_lines)]
pub fn generate(
    options: &Options,
    out: &Path,
    progress: &mut dyn FnMut(&Summary, usize),
) -> std::io::Result<Summary> {
    std::fs::create_dir_all(out)?;
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let start = options.end_date - Duration::days(365 * i64::from(options.years));
    let gz = flate2::write::GzEncoder::new(
        BufWriter::new(File::create(out.join("events.ndjson.gz"))?),
        flate2::Compression::fast(),
    );
    let mut events = Events {
        out: gz,
        batch: Vec::new(),
        next_id: 0,
        seed: options.seed,
        summary_events: 0,
        summary_batches: 0,
    };
    let mut csms = Csv::create(out, "csms", &["csm_id", "name", "email"])?;
    let csm_names = [
        "Maja Lind",
        "Omar Haddad",
        "Priya Nair",
        "Lukas Berg",
        "Sofia Rossi",
        "Kenji Sato",
    ];
    for (i, name) in csm_names.iter().enumerate() {
        let first = name.split(' ').next().unwrap_or("csm").to_lowercase();
        csms.row(&[
            format!("csm-{}", i + 1),
            name.to_string(),
            format!("{first}@vendor.example"),
        ])?;
    }
    csms.writer.flush()?;
    let mut accounts_csv = Csv::create(
        out,
        "accounts",
        &[
            "account_id",
            "name",
            "parent_id",
            "segment",
            "plan",
            "csm",
            "timezone",
            "created_at",
            "region",
            "employees",
        ],
    )?;
    let mut subs = Csv::create(
        out,
        "subscriptions",
        &[
            "subscription_id",
            "account_id",
            "product",
            "plan",
            "seats",
            "arr",
            "currency",
            "start_date",
            "end_date",
            "status",
            "outcome",
            "provisioned_at",
            "go_live_at",
            "reason",
            "feedback",
        ],
    )?;
    let mut tickets = Csv::create(
        out,
        "tickets",
        &[
            "ticket_id",
            "account_id",
            "user_id",
            "type",
            "priority",
            "opened_at",
            "first_response_at",
            "resolved_at",
            "escalated",
            "subject",
        ],
    )?;
    let mut surveys = Csv::create(
        out,
        "survey_responses",
        &[
            "response_id",
            "account_id",
            "user_id",
            "kind",
            "score",
            "comment",
            "answered_at",
            "trigger",
        ],
    )?;
    let mut suggestions = Csv::create(
        out,
        "suggestions",
        &[
            "suggestion_id",
            "account_id",
            "user_id",
            "title",
            "category",
            "status",
            "created_at",
        ],
    )?;
    let mut kpis = Csv::create(out, "kpis", &["account_id", "name", "date", "value"])?;
    let mut summary = Summary::default();
    let mut tally = Tally::default();
    let mut drifters = Vec::new();
    let mut counters: HashMap<&str, usize> = HashMap::new();
    let mut next = |kind: &'static str| {
        let n = counters.entry(kind).or_insert(0);
        *n += 1;
        *n
    };

    let mut index = 0;
    while index < options.accounts {
        let segment = pick_segment(&mut rng);
        let created = start
            + Duration::days(rng.random_range(0..(365 * i64::from(options.years) - 45).max(1)));
        let region = REGIONS[rng.random_range(0..REGIONS.len())];
        let csm = match segment {
            "pro" | "enterprise" => format!("csm-{}", rng.random_range(1..=csm_names.len())),
            _ => String::new(),
        };
        let name = format!(
            "{} {}",
            NAMES_A[rng.random_range(0..NAMES_A.len())],
            NAMES_B[rng.random_range(0..NAMES_B.len())]
        );
        // Enterprise customers are a parent with regional children; the children hold the
        // contracts and the users.
        let mut leaves = Vec::new();
        if segment == "enterprise" && index + 3 <= options.accounts {
            let parent = format!("acct-{:04}", index + 1);
            accounts_csv.row(&[
                parent.clone(),
                format!("{name} Holding"),
                String::new(),
                segment.into(),
                segment.into(),
                csm.clone(),
                region.1.into(),
                created.to_string(),
                region.0.into(),
                rng.random_range(2000..20000).to_string(),
            ])?;
            index += 1;
            summary.accounts += 1;
            let children = rng.random_range(2..=3).min(options.accounts - index);
            for c in 0..children {
                let child_region =
                    REGIONS[(REGIONS.iter().position(|r| r.0 == region.0).unwrap_or(0) + c)
                        % REGIONS.len()];
                let id = format!("acct-{:04}", index + 1);
                accounts_csv.row(&[
                    id.clone(),
                    format!("{name} {}", child_region.0),
                    parent.clone(),
                    segment.into(),
                    segment.into(),
                    csm.clone(),
                    child_region.1.into(),
                    created.to_string(),
                    child_region.0.into(),
                    String::new(),
                ])?;
                leaves.push((id, child_region));
                index += 1;
                summary.accounts += 1;
            }
        } else {
            let id = format!("acct-{:04}", index + 1);
            let plan = segment;
            accounts_csv.row(&[
                id.clone(),
                name.clone(),
                String::new(),
                segment.into(),
                plan.into(),
                csm.clone(),
                region.1.into(),
                created.to_string(),
                region.0.into(),
                rng.random_range(5..2000).to_string(),
            ])?;
            leaves.push((id, region));
            index += 1;
            summary.accounts += 1;
        }
        for (id, leaf_region) in leaves {
            let account = new_account(&mut rng, id, segment, leaf_region);
            if account.drifter {
                drifters.push(account.id.clone());
            }
            simulate_account(
                &mut rng,
                options,
                created,
                &account,
                &mut events,
                &mut subs,
                &mut tickets,
                &mut surveys,
                &mut suggestions,
                &mut kpis,
                &mut summary,
                &mut tally,
                &mut next,
            )?;
            progress(&summary, index);
        }
    }
    events.flush()?;
    events.out.finish()?.flush()?;
    for csv in [
        &mut accounts_csv,
        &mut subs,
        &mut tickets,
        &mut surveys,
        &mut suggestions,
        &mut kpis,
    ] {
        csv.writer.flush()?;
    }
    summary.events = events.summary_events;
    summary.batches = events.summary_batches;
    write_truth(out, options, start, &tally, &drifters, &summary)?;
    write_config(out)?;
    Ok(summary)
}

fn pick_segment(rng: &mut ChaCha8Rng) -> &'static str {
    match rng.random_range(0..100) {
        0..15 => "trial",
        15..50 => "starter",
        50..82 => "pro",
        _ => "enterprise",
    }
}

fn new_account(
    rng: &mut ChaCha8Rng,
    id: String,
    segment: &'static str,
    region: (&str, &str, &'static str),
) -> Account {
    let seats = match segment {
        "trial" => rng.random_range(2..6),
        "starter" => rng.random_range(3..11),
        "pro" => rng.random_range(10..41),
        _ => rng.random_range(30..121),
    };
    // Monthly power-feature uses: a tenth never use it; the rest spread over every bucket.
    let power_rate = if rng.random_bool(0.1) {
        0.0
    } else {
        LogNormal::new(8.0_f64.ln(), 0.8)
            .expect("invariant: valid parameters")
            .sample(rng)
            .min(60.0)
    };
    // Each plan has its own feature popularity (a fixed draw per segment); accounts vary
    // around it.
    let mut plan_rng = ChaCha8Rng::seed_from_u64(
        SEGMENTS.iter().position(|s| *s == segment).unwrap_or(0) as u64 + 1000,
    );
    let feature_weights = FEATURES
        .iter()
        .map(|_| plan_rng.random_range(0.05..1.0_f64).powi(2) * rng.random_range(0.7..1.3))
        .collect();
    Account {
        id,
        segment,
        timezone: region.1.parse().unwrap_or(chrono_tz::UTC),
        currency: region.2,
        activity: rng.random_range(0.4..1.0),
        power_rate,
        drifter: segment != "trial" && rng.random_bool(0.05),
        seats,
        feature_weights,
    }
}

fn term_months(segment: &str) -> u32 {
    match segment {
        "trial" | "starter" => 1,
        _ => 12,
    }
}

fn price_per_seat_month(segment: &str) -> f64 {
    match segment {
        "trial" => 0.0,
        "starter" => 30.0,
        "pro" => 50.0,
        _ => 70.0,
    }
}

fn add_months(date: NaiveDate, months: u32) -> NaiveDate {
    date.checked_add_months(chrono::Months::new(months))
        .unwrap_or(date)
}

#[allow(clippy::too_many_arguments)]
// Over 100 lines: One account's whole simulated life (users, terms, usage, tickets, surveys) from one seeded stream; split it and the draws move.
#[allow(clippy::too_many_lines)]
fn simulate_account(
    rng: &mut ChaCha8Rng,
    options: &Options,
    created: NaiveDate,
    account: &Account,
    events: &mut Events,
    subs: &mut Csv,
    tickets: &mut Csv,
    surveys: &mut Csv,
    suggestions: &mut Csv,
    kpis: &mut Csv,
    summary: &mut Summary,
    tally: &mut Tally,
    next: &mut dyn FnMut(&'static str) -> usize,
) -> std::io::Result<()> {
    let mut users: Vec<User> = Vec::new();
    let mut seats = account.seats;
    let mut plan = account.segment;
    let mut term_start = created;
    let provisioned = created + Duration::days(rng.random_range(0..8));
    let go_live = provisioned + Duration::days(rng.random_range(3..40));
    let mut first_term = true;
    let mut last_quarter_survey: Option<(i32, u32)> = None;
    let mut ticket_days: Vec<NaiveDate> = Vec::new();
    loop {
        let months = if plan == "trial" {
            1
        } else {
            term_months(plan)
        };
        let term_end = add_months(term_start, months) - Duration::days(1);
        let last_term = account.drifter && rng.random_bool(0.35);
        let days = (term_end - term_start).num_days() + 1;
        let mut power_uses: u64 = 0;
        let mut day = term_start;
        while day <= term_end.min(options.end_date) {
            grow_users(rng, account, seats, day, &mut users, events, summary)?;
            let fade = if last_term {
                1.0 - (day - term_start).num_days() as f64 / days as f64
            } else {
                1.0
            };
            power_uses += simulate_day(rng, account, day, &users, fade, events)?;
            if rng.random_bool((0.008 * (seats.max(1) as f64).sqrt()).min(0.2)) {
                ticket(
                    rng,
                    account,
                    day,
                    &mut users,
                    tickets,
                    surveys,
                    &mut ticket_days,
                    summary,
                    next,
                )?;
            }
            if day.day() == 1 && matches!(day.month(), 1 | 4 | 7 | 10) {
                quarterly(
                    rng,
                    account,
                    day,
                    &mut users,
                    surveys,
                    suggestions,
                    kpis,
                    &mut last_quarter_survey,
                    &ticket_days,
                    power_uses,
                    summary,
                    next,
                )?;
            }
            day += Duration::days(1);
        }
        let decided = term_end < options.end_date;
        let monthly = power_uses as f64 * 30.0 / days as f64;
        let b = bucket(monthly);
        let renewed = decided && !last_term && rng.random_bool(planted_rates(account.segment)[b]);
        if decided {
            let entry = tally.decided.entry((account.segment, b)).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += u64::from(renewed);
        }
        let arr = seats as f64 * price_per_seat_month(plan) * 12.0;
        let (status, outcome) = match (decided, renewed) {
            (false, _) => (
                if plan == "trial" {
                    "trialing"
                } else {
                    "active"
                },
                "open",
            ),
            (true, true) => ("ended", "renewed"),
            (true, false) => ("ended", "churned"),
        };
        let sub_id = format!("sub-{:06}", next("sub"));
        // Why it churned: chosen without drawing from the random stream, so the rest of
        // the data stays as it was; accounts that never used the power feature did not adopt.
        let (reason, feedback) = match (outcome, b) {
            ("churned", 0) => CHURN_REASONS[0],
            ("churned", _) => CHURN_REASONS[1 + summary.subscriptions % (CHURN_REASONS.len() - 1)],
            _ => ("", ""),
        };
        subs.row(&[
            sub_id,
            account.id.clone(),
            "platform".into(),
            plan.into(),
            seats.to_string(),
            format!("{arr:.2}"),
            account.currency.into(),
            term_start.to_string(),
            term_end.to_string(),
            status.into(),
            outcome.into(),
            if first_term {
                ts(provisioned
                    .and_hms_opt(9, 0, 0)
                    .expect("invariant: valid time"))
            } else {
                String::new()
            },
            if first_term {
                ts(go_live.and_hms_opt(9, 0, 0).expect("invariant: valid time"))
            } else {
                String::new()
            },
            reason.into(),
            feedback.into(),
        ])?;
        summary.subscriptions += 1;
        if first_term {
            go_live_survey(rng, account, go_live, &mut users, surveys, summary, next)?;
        }
        first_term = false;
        if !renewed {
            return Ok(());
        }
        // Renewal: trials convert to starter; others may expand or contract.
        if plan == "trial" {
            plan = "starter";
        } else if rng.random_bool(0.2) {
            seats += (seats as f64 * rng.random_range(0.1..0.3)).ceil() as i64;
        } else if rng.random_bool(0.08) {
            seats = (seats - (seats as f64 * rng.random_range(0.1..0.3)).ceil() as i64).max(1);
        }
        if plan != "starter" && account.segment != "trial" && rng.random_bool(0.05) {
            let start = term_end + Duration::days(1);
            let end = add_months(start, 12) - Duration::days(1);
            let addon_seats = (seats / 2).max(1);
            let (status, outcome) = if end < options.end_date {
                ("ended", "renewed")
            } else {
                ("active", "open")
            };
            subs.row(&[
                format!("sub-{:06}", next("sub")),
                account.id.clone(),
                "automation".into(),
                plan.into(),
                addon_seats.to_string(),
                format!("{:.2}", addon_seats as f64 * 20.0 * 12.0),
                account.currency.into(),
                start.to_string(),
                end.to_string(),
                status.into(),
                outcome.into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ])?;
            summary.subscriptions += 1;
        }
        term_start = term_end + Duration::days(1);
        if term_start > options.end_date {
            return Ok(());
        }
    }
}

/// Adds users up to the account's seat use, each arriving with anonymous visits that an
/// identify then links, and a group call.
fn grow_users(
    rng: &mut ChaCha8Rng,
    account: &Account,
    seats: i64,
    day: NaiveDate,
    users: &mut Vec<User>,
    events: &mut Events,
    summary: &mut Summary,
) -> std::io::Result<()> {
    // Most people arrive in the first weeks (a rollout), then one now and then: general
    // activity barely grows with an account's age, so it does not stand in for survival.
    let target = ((seats as f64) * account.activity * 0.75).ceil() as usize;
    if users.len() >= target || !(users.is_empty() || rng.random_bool(0.3)) {
        return Ok(());
    }
    for _ in 0..target.div_ceil(8).min(target - users.len()) {
        add_user(rng, account, day, users, events, summary)?;
    }
    Ok(())
}

/// People's names in the demo (picked by their number, not drawn: the random stream stays
/// as it was).
const FIRST_NAMES: &[&str] = &[
    "Ana", "Ben", "Chen", "Dana", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kofi", "Lena",
    "Maya", "Nils", "Omar", "Priya", "Rosa", "Sven", "Tara", "Ugo", "Vera", "Wen",
];
const LAST_NAMES: &[&str] = &[
    "Andersson",
    "Baker",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Okafor",
    "Park",
    "Rossi",
    "Silva",
    "Tanaka",
    "Weber",
];

fn add_user(
    rng: &mut ChaCha8Rng,
    account: &Account,
    day: NaiveDate,
    users: &mut Vec<User>,
    events: &mut Events,
    summary: &mut Summary,
) -> std::io::Result<()> {
    let n = users.len() + 1;
    let user_id = format!("{}-u{:03}", account.id, n);
    let anonymous = format!("anon-{}-{:03}", account.id, n);
    let at = |hour: u32, minute: u32| local(account, day, hour, minute);
    for v in 0..rng.random_range(0..3) {
        events.push(json!({"type": "page", "anonymousId": anonymous, "name": "Pricing", "timestamp": ts(at(8, 5 + v)), "properties": {"path": "/pricing"}}))?;
    }
    events.push(json!({"type": "identify", "userId": user_id, "anonymousId": anonymous, "timestamp": ts(at(8, 20)),
        "traits": {"email": format!("{user_id}@customer.example"), "firstName": FIRST_NAMES[n % FIRST_NAMES.len()],
                   "lastName": LAST_NAMES[(n * 7 + account.id.len() + usize::from(account.id.bytes().last().unwrap_or(0))) % LAST_NAMES.len()],
                   "role": if n == 1 { "admin" } else { "member" }}}))?;
    events.push(json!({"type": "group", "userId": user_id, "groupId": account.id, "timestamp": ts(at(8, 21)), "traits": {"plan": account.segment}}))?;
    users.push(User {
        id: user_id,
        engagement: rng.random_range(0.15..0.75),
        joined: day,
        last_survey: None,
    });
    summary.users += 1;
    Ok(())
}

/// The account's local time on `day` as UTC.
fn local(account: &Account, day: NaiveDate, hour: u32, minute: u32) -> NaiveDateTime {
    let naive = day
        .and_hms_opt(hour.min(23), minute.min(59), 0)
        .expect("invariant: valid time");
    account
        .timezone
        .from_local_datetime(&naive)
        .earliest()
        .map(|t| t.naive_utc())
        .unwrap_or(naive)
}

fn day_factor(day: NaiveDate) -> f64 {
    if HOLIDAYS.contains(&(day.month(), day.day())) {
        return 0.05;
    }
    match day.weekday() {
        Weekday::Sat | Weekday::Sun => 0.08,
        Weekday::Fri => 0.8,
        _ => 1.0,
    }
}

/// One day of the account: sessions of its users, and its power-feature uses. Returns the
/// power-feature uses emitted.
fn simulate_day(
    rng: &mut ChaCha8Rng,
    account: &Account,
    day: NaiveDate,
    users: &[User],
    fade: f64,
    events: &mut Events,
) -> std::io::Result<u64> {
    let factor = day_factor(day);
    let mut active: Vec<(usize, u32)> = Vec::new();
    for (i, user) in users.iter().enumerate() {
        if user.joined > day
            || !rng.random_bool((user.engagement * account.activity * factor).min(0.95))
        {
            continue;
        }
        let start_minute = rng.random_range(0..9 * 60);
        active.push((i, start_minute));
        session(rng, account, day, &users[i].id, start_minute, events)?;
    }
    // Power usage: account-wide, at its own rate (weekday-shaped), by whoever is active
    // (anyone of the account on a quiet day), so it does not follow general activity.
    let lambda = account.power_rate * fade * factor / 30.0 * (7.0 / 5.3);
    let joined: Vec<usize> = (0..users.len())
        .filter(|i| users[*i].joined <= day)
        .collect();
    if joined.is_empty() || lambda <= 0.0 {
        return Ok(0);
    }
    let uses = Poisson::new(lambda)
        .map(|p| p.sample(rng) as u64)
        .unwrap_or(0);
    for u in 0..uses {
        let (i, start_minute) = if active.is_empty() {
            (
                joined[rng.random_range(0..joined.len())],
                rng.random_range(0..9 * 60),
            )
        } else {
            active[rng.random_range(0..active.len())]
        };
        let minute = start_minute + 3 + u as u32;
        events.push(
            json!({"type": "track", "userId": users[i].id, "event": power_feature(account.segment),
            "timestamp": ts(local(account, day, 8 + minute / 60, minute % 60))}),
        )?;
    }
    Ok(uses)
}

fn session(
    rng: &mut ChaCha8Rng,
    account: &Account,
    day: NaiveDate,
    user: &str,
    start_minute: u32,
    events: &mut Events,
) -> std::io::Result<()> {
    let mut minute = start_minute;
    let mut at = |step: u32| {
        minute += step;
        ts(local(account, day, 8 + minute / 60, minute % 60))
    };
    events
        .push(json!({"type": "track", "userId": user, "event": "Signed In", "timestamp": at(0)}))?;
    for _ in 0..rng.random_range(1..3) {
        let page = PAGES[rng.random_range(0..PAGES.len())];
        events.push(json!({"type": "page", "userId": user, "name": page, "timestamp": at(1), "properties": {"path": format!("/{}", page.to_lowercase())}}))?;
    }
    let total: f64 = account.feature_weights.iter().sum();
    let uses = Poisson::new(3.0)
        .map(|p| p.sample(rng) as usize)
        .unwrap_or(2);
    for _ in 0..uses {
        let mut pick = rng.random_range(0.0..total);
        let mut feature = FEATURES[0];
        for (name, weight) in FEATURES.iter().zip(&account.feature_weights) {
            if pick < *weight {
                feature = name;
                break;
            }
            pick -= weight;
        }
        events.push(json!({"type": "track", "userId": user, "event": feature, "timestamp": at(rng.random_range(1..4))}))?;
    }
    for _ in 0..rng.random_range(0..3) {
        events.push(
            json!({"type": "track", "userId": user, "event": "Active Ping", "timestamp": at(1)}),
        )?;
    }
    if rng.random_bool(0.04) {
        events.push(json!({"type": "track", "userId": user, "event": EDUCATION[rng.random_range(0..EDUCATION.len())], "timestamp": at(2)}))?;
    }
    Ok(())
}

/// May a survey go to this person on `day`: never two within 14 days, and (after a ticket)
/// at most one per 30 days.
fn may_survey(user: &User, day: NaiveDate, min_gap_days: i64) -> bool {
    user.last_survey
        .is_none_or(|last| (day - last).num_days() >= min_gap_days)
}

#[allow(clippy::too_many_arguments)]
fn ticket(
    rng: &mut ChaCha8Rng,
    account: &Account,
    day: NaiveDate,
    users: &mut [User],
    tickets: &mut Csv,
    surveys: &mut Csv,
    ticket_days: &mut Vec<NaiveDate>,
    summary: &mut Summary,
    next: &mut dyn FnMut(&'static str) -> usize,
) -> std::io::Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    let who = rng.random_range(0..users.len());
    let opened = local(
        account,
        day,
        rng.random_range(8..17),
        rng.random_range(0..60),
    );
    let first_response = opened + Duration::minutes(rng.random_range(10..24 * 60));
    let resolved = first_response + Duration::hours(rng.random_range(1..240));
    let kinds = [
        ("question", "How do I share a dashboard?"),
        ("bug", "Export fails on large reports"),
        ("how-to", "Setting up SSO"),
        ("billing", "Invoice address change"),
    ];
    let (kind, subject) = kinds[rng.random_range(0..kinds.len())];
    let priority = ["low", "normal", "normal", "high", "urgent"][rng.random_range(0..5)];
    let escalated = rng.random_bool(0.08);
    tickets.row(&[
        format!("tkt-{:06}", next("ticket")),
        account.id.clone(),
        users[who].id.clone(),
        kind.into(),
        priority.into(),
        ts(opened),
        ts(first_response),
        ts(resolved),
        escalated.to_string(),
        subject.into(),
    ])?;
    summary.tickets += 1;
    ticket_days.push(day);
    // CSAT after a ticket closes: at most once per 30 days per person.
    let answer_day = resolved.date();
    if may_survey(&users[who], answer_day, 30) && rng.random_bool(0.4) {
        let score = if escalated {
            rng.random_range(1..4)
        } else {
            rng.random_range(3..6)
        };
        users[who].last_survey = Some(answer_day);
        surveys.row(&[
            format!("resp-{:06}", next("response")),
            account.id.clone(),
            users[who].id.clone(),
            "csat".into(),
            score.to_string(),
            CSAT_COMMENTS[rng.random_range(0..CSAT_COMMENTS.len())].into(),
            ts(resolved + Duration::hours(2)),
            "ticket".into(),
        ])?;
        summary.survey_responses += 1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn quarterly(
    rng: &mut ChaCha8Rng,
    account: &Account,
    day: NaiveDate,
    users: &mut [User],
    surveys: &mut Csv,
    suggestions: &mut Csv,
    kpis: &mut Csv,
    last_quarter_survey: &mut Option<(i32, u32)>,
    ticket_days: &[NaiveDate],
    power_uses: u64,
    summary: &mut Summary,
    next: &mut dyn FnMut(&'static str) -> usize,
) -> std::io::Result<()> {
    let quarter_start = day - Duration::days(91);
    let had_ticket = ticket_days.iter().any(|d| *d >= quarter_start && *d < day);
    // Quarterly NPS only for accounts that did not reach out (no ticket in the quarter).
    if !had_ticket && last_quarter_survey.is_none_or(|q| q != (day.year(), day.month())) {
        *last_quarter_survey = Some((day.year(), day.month()));
        let healthy = account.power_rate >= 11.0;
        for user in users.iter_mut().filter(|u| u.joined < day).take(2) {
            if !may_survey(user, day, 14) || !rng.random_bool(0.5) {
                continue;
            }
            let score = if healthy {
                rng.random_range(7..11)
            } else {
                rng.random_range(2..10)
            };
            user.last_survey = Some(day);
            let comment = if rng.random_bool(0.5) {
                NPS_COMMENTS[rng.random_range(0..NPS_COMMENTS.len())]
            } else {
                ""
            };
            surveys.row(&[
                format!("resp-{:06}", next("response")),
                account.id.clone(),
                user.id.clone(),
                "nps".into(),
                score.to_string(),
                comment.into(),
                ts(local(account, day, 11, 0)),
                "quarterly".into(),
            ])?;
            summary.survey_responses += 1;
        }
    }
    if !users.is_empty() && rng.random_bool(0.3) {
        let (title, category) = SUGGESTIONS[rng.random_range(0..SUGGESTIONS.len())];
        let who = users[rng.random_range(0..users.len())].id.clone();
        suggestions.row(&[
            format!("sug-{:06}", next("suggestion")),
            account.id.clone(),
            who,
            title.into(),
            category.into(),
            "open".into(),
            ts(local(account, day, 10, 0)),
        ])?;
    }
    let hours = (power_uses as f64 * 0.5 + users.len() as f64 * 2.0).round();
    kpis.row(&[
        account.id.clone(),
        "hours_saved".into(),
        (day - Duration::days(1)).to_string(),
        format!("{hours:.0}"),
    ])?;
    Ok(())
}

fn go_live_survey(
    rng: &mut ChaCha8Rng,
    account: &Account,
    go_live: NaiveDate,
    users: &mut [User],
    surveys: &mut Csv,
    summary: &mut Summary,
    next: &mut dyn FnMut(&'static str) -> usize,
) -> std::io::Result<()> {
    let Some(admin) = users.first_mut() else {
        return Ok(());
    };
    if !may_survey(admin, go_live, 14) || !rng.random_bool(0.7) {
        return Ok(());
    }
    admin.last_survey = Some(go_live);
    let yes = rng.random_bool(if account.power_rate >= 6.0 { 0.85 } else { 0.6 });
    surveys.row(&[
        format!("resp-{:06}", next("response")),
        account.id.clone(),
        admin.id.clone(),
        "go_live_recommend".into(),
        if yes { "yes" } else { "no" }.into(),
        String::new(),
        ts(local(account, go_live, 15, 0)),
        "go-live".into(),
    ])?;
    summary.survey_responses += 1;
    Ok(())
}

fn write_truth(
    out: &Path,
    options: &Options,
    start: NaiveDate,
    tally: &Tally,
    drifters: &[String],
    summary: &Summary,
) -> std::io::Result<()> {
    let labels = ["0", "1-5", "6-10", "11-15", "16+"];
    let segments: serde_json::Map<String, serde_json::Value> = SEGMENTS
        .iter()
        .map(|segment| {
            let rates = planted_rates(segment);
            let buckets: Vec<serde_json::Value> = (0..5)
                .map(|b| {
                    let (decided, renewed) = tally.decided.get(&(*segment, b)).copied().unwrap_or((0, 0));
                    json!({"bucket": labels[b], "min_monthly_uses": if b == 0 { 0 } else { CUT_POINTS[b - 1] },
                           "renewal_probability": rates[b], "decided": decided, "renewed": renewed})
                })
                .collect();
            (segment.to_string(), json!({"power_feature": power_feature(segment), "term_months": term_months(segment), "buckets": buckets}))
        })
        .collect();
    let truth = json!({
        "seed": options.seed, "accounts": options.accounts, "years": options.years,
        "start_date": start.to_string(), "end_date": options.end_date.to_string(),
        "cut_points": CUT_POINTS,
        "monthly_uses": "power-feature uses by all users of the account in the term x 30 / term days",
        "segments": segments,
        "uninformative_features": FEATURES,
        "drifting_accounts": drifters,
        "summary": summary,
    });
    std::fs::write(
        out.join("truth.json"),
        serde_json::to_string_pretty(&truth)? + "\n",
    )
}

fn write_config(out: &Path) -> std::io::Result<()> {
    let mut text = String::from("# Exchange rates the generated subscriptions need (report currency USD).\n[currency]\nreport = \"USD\"\n\n[currency.rates]\n");
    for (code, rate) in RATES {
        text.push_str(&format!("{code} = {rate}\n"));
    }
    std::fs::write(out.join("bellwether.toml"), text)
}
