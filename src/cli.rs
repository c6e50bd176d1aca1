//! The command line: parses arguments, loads the config and runs one command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, Flags};
use crate::store::Backend;
use crate::store::{self, EventFilter, Role};

/// Self-hosted customer-success analytics: Segment-compatible ingest, account health
/// learned from renewal outcomes.
#[derive(Debug, Parser)]
#[command(name = "bellwether", version, about, long_about = None)]
pub struct Cli {
    /// TOML config file (also BELLWETHER_CONFIG). Precedence: flag > environment > file > default.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory holding the database [default: ./bellwether-data] (also BELLWETHER_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where events are kept: `embedded` (files in the data dir, the default) or
    /// clickhouse://host:port/database (also BELLWETHER_STORE; credentials from
    /// BELLWETHER_CLICKHOUSE_USER and BELLWETHER_CLICKHOUSE_PASSWORD).
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Segment tracking API, the REST API and the dashboard.
    Serve(ServeArgs),
    /// Generate a demo customer base (first run), load it, and serve it [data dir: ./bellwether-demo].
    Demo(DemoArgs),
    /// Write a generated customer base with known ground truth to a directory: events
    /// (Segment batch NDJSON, gzipped), import CSVs, truth.json and the config they need.
    Generate(GenerateArgs),
    /// List stored events, to debug an integration (works while a server runs).
    Events(EventsArgs),
    /// Print every account's metrics at a date (the export contract; works while a server runs).
    Metrics(MetricsArgs),
    /// Drop the per-user-per-day rollups and recompute them from the raw events (days before
    /// the retention horizon, whose raw events are gone, are kept as they are).
    Rebuild,
    /// Drop raw events older than [retention] raw_events_days now; the rollups, and so every
    /// metric, keep them (a server does this every 6 hours by itself).
    Retention {
        /// Keep this many days instead of [retention] raw_events_days (at least the dedup window).
        #[arg(long, value_name = "DAYS")]
        raw_events_days: Option<u32>,
    },
    /// Rank features by how well their usage separated renewals from churns, per segment.
    Indicators(IndicatorsArgs),
    /// Run the health analysis now, store it as a new model version, and bring the daily
    /// score and tier history up to today.
    Recalibrate(RecalibrateArgs),
    /// Every account's tier, expected renewal rate and health score at a date.
    Health(HealthArgs),
    /// Score every account with only the data before a date and compare with the renewals
    /// decided after it.
    Backtest(BacktestArgs),
    /// Import customer records from a CSV or NDJSON file, all or nothing (works while a server runs).
    Import(ImportArgs),
    /// Erase a person (GDPR): their events, traits and survey answers.
    DeleteUser {
        /// The person's userId.
        user_id: String,
    },
    /// Write a consistent copy of the database to FILE, while a server may be running (on
    /// ClickHouse: every table of the database, in ClickHouse's Native format).
    Backup {
        /// The new backup file (must not exist).
        file: PathBuf,
    },
    /// Restore a backup as the data dir's database (stop the server first; on ClickHouse:
    /// into a database that holds nothing yet, the nodes may run).
    Restore {
        /// A file written by `bellwether backup`.
        file: PathBuf,
        /// Replace an existing database in the data dir.
        #[arg(long)]
        force: bool,
    },
    /// Manage API tokens for /api/v1.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Alert rules: `alerts test RULE` shows which accounts would fire now (sends nothing);
    /// `alerts rules` lists the rules in force.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Manage dashboard users (sign-in with roles admin, csm, viewer).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print a signed link to an account's quarterly review that works without sign-in.
    ReviewLink {
        /// The account's id.
        account: String,
        /// The quarter, like 2026-Q3 [default: the last complete quarter].
        #[arg(long)]
        quarter: Option<String>,
        /// How long the link works: 30d, 12h, 45m or 10s (at most 365d).
        #[arg(long, default_value = "30d")]
        valid_for: String,
        /// The dashboard's address as customers reach it [default: http://LISTEN].
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8780] (also BELLWETHER_LISTEN). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Debug, Args)]
struct SizeArgs {
    /// Random seed: the same seed, size and end date give byte-identical output.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Accounts, enterprise parents included.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    accounts: u64,
    /// Years of history.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    years: u32,
    /// Last day of the data (YYYY-MM-DD) [default: today, UTC].
    #[arg(long, value_name = "DATE")]
    end_date: Option<String>,
}

impl SizeArgs {
    fn options(&self) -> anyhow::Result<crate::demo::generate::Options> {
        let end_date = match &self.end_date {
            Some(text) => {
                crate::records::parse_date(text).map_err(|e| anyhow::anyhow!("--end-date: {e}"))?
            }
            None => chrono::Utc::now().date_naive(),
        };
        Ok(crate::demo::generate::Options {
            seed: self.seed,
            accounts: self.accounts as usize,
            years: self.years,
            end_date,
        })
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Address to listen on [default: 127.0.0.1:8780] (also BELLWETHER_LISTEN). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    #[command(flatten)]
    size: SizeArgs,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Directory to write (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    size: SizeArgs,
}

#[derive(Debug, Args)]
struct EventsArgs {
    /// Only events received at or after this date (YYYY-MM-DD, UTC) or ISO-8601 time [default: 24 hours ago].
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// Only events received before this date or time.
    #[arg(long, value_name = "DATE")]
    until: Option<String>,
    /// Only events of this user (userId, or an anonymousId later linked to it).
    #[arg(long, value_name = "USER_ID")]
    user: Option<String>,
    /// Only events attributed to this account.
    #[arg(long, value_name = "ACCOUNT_ID")]
    account: Option<String>,
    /// Output format: a table, each message as received plus receivedAt (ndjson), or the
    /// table's rows as a JSON array (json).
    #[arg(long, value_enum, default_value_t = EventsFormat::Table)]
    format: EventsFormat,
    /// Most events to print (at most 10000).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

#[derive(Debug, Args)]
struct MetricsArgs {
    /// The day the metrics are for (YYYY-MM-DD, in each account's timezone) [default: today, UTC].
    #[arg(long, value_name = "DATE")]
    as_of: Option<String>,
    /// csv (one row per account, null as empty) or json (an array of objects).
    #[arg(long, value_parser = ["csv", "json"], default_value = "csv")]
    format: String,
}

#[derive(Debug, Args)]
struct IndicatorsArgs {
    /// Only this segment.
    #[arg(long)]
    segment: Option<String>,
    /// Analyse the renewals decided before this day (YYYY-MM-DD) [default: the newest stored model, else today].
    #[arg(long, value_name = "DATE")]
    as_of: Option<String>,
    /// table (readable) or json (an array of objects).
    #[arg(long, value_parser = ["table", "json"], default_value = "table")]
    format: String,
}

#[derive(Debug, Args)]
struct RecalibrateArgs {
    /// Train on the renewals decided before this day [default: today, UTC].
    #[arg(long, value_name = "DATE")]
    as_of: Option<String>,
    /// Promote the new model even if its held-out test is worse than the model in force's
    /// (the test is still recorded with the model).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// The day [default: today, UTC].
    #[arg(long, value_name = "DATE")]
    as_of: Option<String>,
    /// csv or json (json includes the component breakdown).
    #[arg(long, value_parser = ["csv", "json"], default_value = "csv")]
    format: String,
}

#[derive(Debug, Args)]
struct BacktestArgs {
    /// Score with the data before this day (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    as_of: String,
    /// Renewals decided in this many days from --as-of are the outcomes.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(i64).range(1..=1098))]
    horizon_days: i64,
    /// table or json.
    #[arg(long, value_parser = ["table", "json"], default_value = "table")]
    format: String,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// What the file holds: accounts, subscriptions, tickets, survey_responses, suggestions,
    /// kpis or csms; or activities (logged calls, meetings, emails and notes, CSV only).
    #[arg(value_parser = crate::records::KINDS.iter().map(|k| k.name).chain(["activities"]).collect::<Vec<_>>())]
    kind: String,
    /// The file (`-` for standard input).
    file: PathBuf,
    /// csv or ndjson [default: from the file extension].
    #[arg(long, value_parser = ["csv", "ndjson"])]
    format: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EventsFormat {
    Table,
    Ndjson,
    /// One JSON array of the table's rows (user and account resolved), as the API lists them.
    Json,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token and print it once.
    Create {
        /// admin (read and write) or read (read only).
        #[arg(long, value_parser = ["admin", "read"])]
        role: String,
        /// A label to recognise the token by.
        #[arg(long, default_value = "api")]
        name: String,
        /// How long it works: 90d, 12h, 45m or 10s (at most 365d) [default: until revoked].
        #[arg(long, value_name = "DURATION")]
        valid_for: Option<String>,
    },
    /// List the API tokens: id, name, role, created, expires (their secrets are not kept).
    List,
    /// Revoke an API token at once, by the id `token list` shows.
    Revoke { id: i64 },
}

#[derive(Debug, Subcommand)]
enum AlertsCommand {
    /// Which accounts RULE fires for now, with the reason; records and sends nothing.
    Test {
        rule: String,
        /// Evaluate as of this day [default: today].
        #[arg(long, value_name = "DATE")]
        as_of: Option<String>,
        #[arg(long, value_parser = ["table", "json"], default_value = "table")]
        format: String,
    },
    /// The rules in force (config and API) and their conditions.
    Rules,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user (or reset one with --replace). The password is read from the first
    /// line of stdin with --password-stdin, else from BELLWETHER_PASSWORD, else generated
    /// and printed once.
    Create {
        username: String,
        /// admin (everything), csm (reads, shares reviews; sees their accounts first) or viewer (reads).
        #[arg(long, value_parser = ["admin", "csm", "viewer"])]
        role: String,
        /// The csms record this user is (for "my accounts").
        #[arg(long, value_name = "CSM_ID")]
        csm: Option<String>,
        #[arg(long)]
        password_stdin: bool,
        /// Reset the role and password of an existing user (ends their sessions).
        #[arg(long)]
        replace: bool,
    },
    /// List users.
    List,
    /// Delete a user and end their sessions.
    Delete { username: String },
}

/// Runs the command line; errors are printed by `main`.
// Over 100 lines: A dispatch table: one arm per subcommand.
#[allow(clippy::too_many_lines)]
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let listen = match &cli.command {
        Command::Serve(args) => args.listen.clone(),
        Command::Demo(args) => args.listen.clone(),
        _ => None,
    };
    // The demo keeps its data apart unless a data dir is named.
    let demo_dir_default = matches!(cli.command, Command::Demo(_))
        && cli.data_dir.is_none()
        && std::env::var_os("BELLWETHER_DATA_DIR").is_none();
    let flags = Flags {
        config: cli.config.clone(),
        data_dir: cli.data_dir.clone(),
        store: cli.store.clone(),
        listen,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = Config::load(&flags, &env)?;
    if demo_dir_default && config.file.is_none() {
        config.data_dir = PathBuf::from(DEMO_DATA_DIR);
    }
    // A demo data dir carries money in the demo's currencies: every command on it knows
    // their rates unless the config sets its own.
    if crate::demo::read_marker(&config.data_dir).is_some() {
        for (code, rate) in crate::demo::generate::RATES {
            config
                .currency
                .rates
                .entry(code.to_string())
                .or_insert(*rate);
        }
    }
    match cli.command {
        Command::Serve(_) => serve(&config),
        Command::Demo(args) => demo(config, &args),
        Command::Generate(args) => generate(&args),
        Command::Events(args) => events(&config, &args),
        Command::Import(args) => import(&config, &args),
        Command::Metrics(args) => metrics(&config, &args),
        Command::Rebuild => rebuild(&config),
        Command::Retention { raw_events_days } => retention(&config, raw_events_days),
        Command::Indicators(args) => indicators(&config, &args),
        Command::Recalibrate(args) => recalibrate(&config, &args),
        Command::Health(args) => health(&config, &args),
        Command::Backtest(args) => backtest(&config, &args),
        Command::DeleteUser { user_id } => {
            let deletion = on_store(&config, false, |backend| Ok(backend.delete_user(&user_id)?))?;
            println!("{}", serde_json::to_string_pretty(&deletion)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { file } => {
            let (bytes, name) = on_existing(&config, |backend| {
                Ok((backend.backup(&file)?, backend.describe()))
            })?;
            eprintln!("backed up {name} to {} ({bytes} bytes)", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { file, force } => {
            let runtime = runtime()?;
            let _entered = runtime.enter();
            let (backend, restored) =
                Backend::restore(&config.store, &config.data_dir, &file, force)?;
            for (table, rows) in &restored {
                eprintln!("{table}: {rows} rows");
            }
            eprintln!("restored {} into {}", file.display(), backend.describe());
            Ok(ExitCode::SUCCESS)
        }
        Command::User { command } => user(&config, command),
        Command::Alerts { command } => alerts(&config, command),
        Command::ReviewLink {
            account,
            quarter,
            valid_for,
            base_url,
        } => review_link(
            &config,
            &account,
            quarter.as_deref(),
            &valid_for,
            base_url.as_deref(),
        ),
        Command::Token {
            command:
                TokenCommand::Create {
                    role,
                    name,
                    valid_for,
                },
        } => {
            let role = Role::parse(&role).context("role must be admin or read")?;
            let seconds = valid_for
                .as_deref()
                .map(|text| {
                    crate::share::parse_validity(text)
                        .map_err(|r| anyhow::anyhow!("--valid-for: {r}"))
                })
                .transpose()?;
            let secret =
                on_dashboard(
                    &config,
                    |source| Ok(source.add_token(&name, role, seconds)?),
                )?;
            println!("{secret}");
            let until = valid_for.map_or("until revoked".to_string(), |text| format!("for {text}"));
            eprintln!(
                "created {} token {name:?}, valid {until}; it is shown only now",
                role.as_str()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: TokenCommand::List,
        } => {
            for t in on_dashboard(&config, |source| Ok(source.tokens()?))? {
                let expires = t
                    .expires_ms
                    .map_or("never".to_string(), crate::ingest::format_timestamp);
                println!(
                    "{}\t{}\t{}\t{}\t{expires}",
                    t.id,
                    t.name,
                    t.role,
                    crate::ingest::format_timestamp(t.created_ms)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: TokenCommand::Revoke { id },
        } => {
            if !on_dashboard(&config, |source| Ok(source.revoke_token(id)?))? {
                bail!("no token {id}");
            }
            eprintln!("revoked token {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bellwether")
        .build()?)
}

fn serve(config: &Config) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(crate::web::serve(config, |addr| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "bellwether listening on http://{addr}");
        let _ = out.flush();
    }))?;
    Ok(ExitCode::SUCCESS)
}

const DEMO_DATA_DIR: &str = "./bellwether-demo";
const DEMO_WRITE_KEY: &str = "demo-write-key";

fn generation_bar(accounts: usize) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(accounts as u64).with_style(
        indicatif::ProgressStyle::with_template("  accounts {bar:40} {pos}/{len}  {msg}")
            .expect("invariant: valid template"),
    )
}

fn generate(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let options = args.size.options()?;
    let bar = generation_bar(options.accounts);
    let summary = crate::demo::generate::generate(&options, &args.out, &mut |summary, done| {
        bar.set_position(done as u64);
        bar.set_message(format!(
            "{} users, {} events",
            summary.users, summary.events
        ));
    })
    .with_context(|| format!("writing {}", args.out.display()))?;
    bar.finish();
    eprintln!(
        "wrote {}: {} accounts, {} users, {} events in {} batches, {} subscriptions, {} tickets, {} survey responses",
        args.out.display(), summary.accounts, summary.users, summary.events, summary.batches, summary.subscriptions, summary.tickets, summary.survey_responses
    );
    Ok(ExitCode::SUCCESS)
}

/// Generates and loads the demo on the first run (through the import and ingest paths a
/// user's data takes), then serves. Later runs reuse the loaded data dir.
fn demo(mut config: Config, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    config
        .write_keys
        .entry(DEMO_WRITE_KEY.into())
        .or_insert_with(|| "demo".into());
    for (code, rate) in crate::demo::generate::RATES {
        config
            .currency
            .rates
            .entry(code.to_string())
            .or_insert(*rate);
    }
    // The demo is the only node on its ClickHouse: it keeps the health history itself.
    config.health.background.get_or_insert(true);
    let options = args.size.options()?;
    // No rule may fire, and no model be learned, on half-loaded data: held back from the start.
    let reused = crate::demo::read_marker(&config.data_dir);
    let signals = crate::workers::Signals::default();
    signals.pause(reused.is_none());
    runtime()?.block_on(async {
        let app = crate::web::App::start_with(&config, signals.clone())?;
        let mut loaded = match reused {
            Some(loaded) => {
                eprintln!("bellwether demo: reusing the demo data in {} (delete it to start over)", config.data_dir.display());
                loaded
            }
            None => {
                let loaded = load_demo(&config, &options, &app).await;
                signals.pause(false);
                loaded?
            }
        };
        let backend = app.state.backend.clone();
        tokio::task::block_in_place(|| {
            backend.run(|storage| crate::demo::ensure_logins(storage, &config.data_dir, &mut loaded))
        })??;
        app.serve(config.listen, |addr| {
            // Written without println!: a closed stdout must not stop the server.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "bellwether demo listening on http://{addr}");
            let _ = writeln!(out, "  dashboard: http://{addr}/   sign in as:");
            for (user, password, role) in &loaded.logins {
                let _ = writeln!(out, "    {user} / {password}   ({role})");
            }
            let _ = writeln!(out, "  data:      {} ({} accounts, {} years to {}, {} events)", config.data_dir.display(), loaded.accounts, loaded.years, loaded.end_date, loaded.events);
            let _ = writeln!(out, "  API:       http://{addr}/api/v1/accounts   (Authorization: Bearer {})", loaded.api_token);
            let _ = writeln!(out, "  OpenAPI:   http://{addr}/api/v1/openapi.json");
            let _ = writeln!(out, "  send more: curl -u {DEMO_WRITE_KEY}: http://{addr}/v1/track -d '{{\"userId\":\"u1\",\"event\":\"Tried It\"}}'");
            let _ = writeln!(out, "  metrics:   http://{addr}/api/v1/metrics?as_of={}   or: bellwether metrics --data-dir {} --as-of {}", loaded.end_date, config.data_dir.display(), loaded.end_date);
            let _ = out.flush();
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn user(config: &Config, command: UserCommand) -> anyhow::Result<ExitCode> {
    on_dashboard(config, |source| user_on(source, command))
}

fn user_on(source: &dyn store::Storage, command: UserCommand) -> anyhow::Result<ExitCode> {
    use crate::store::{User, UserRole};

    match command {
        UserCommand::Create {
            username,
            role,
            csm,
            password_stdin,
            replace,
        } => {
            let role = UserRole::parse(&role).context("role must be admin, csm or viewer")?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("cannot read the password from stdin")?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            } else if let Ok(password) = std::env::var("BELLWETHER_PASSWORD") {
                (password, false)
            } else {
                (store::sqlite::hex(&rand::random::<[u8; 12]>()), true)
            };
            crate::users::create_user(
                source,
                &User {
                    username: username.clone(),
                    role,
                    csm_id: csm,
                },
                &password,
                replace,
            )?;
            if generated {
                println!("{password}");
                eprintln!(
                    "created {} user {username:?} with the password above; it is shown only now",
                    role.as_str()
                );
            } else {
                eprintln!("saved {} user {username:?}", role.as_str());
            }
        }
        UserCommand::List => {
            for u in crate::users::list_users(source)? {
                println!(
                    "{}\t{}\t{}",
                    u.username,
                    u.role.as_str(),
                    u.csm_id.unwrap_or_default()
                );
            }
        }
        UserCommand::Delete { username } => {
            if !crate::users::delete_user(source, &username)? {
                bail!("no user {username:?}");
            }
            eprintln!("deleted user {username:?}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn alerts(config: &Config, command: AlertsCommand) -> anyhow::Result<ExitCode> {
    on_source(config, |source| alerts_on(config, command, source))
}

fn alerts_on(
    config: &Config,
    command: AlertsCommand,
    source: &dyn store::Storage,
) -> anyhow::Result<ExitCode> {
    match command {
        AlertsCommand::Rules => {
            for ready in crate::actions::run::rules(source, &config.actions)? {
                let r = &ready.rule;
                println!(
                    "{}\t{}\tcooldown {} d\tnotify [{}]\t{} task(s){}",
                    r.name,
                    r.when,
                    r.cooldown_days,
                    ready.notify.join(", "),
                    ready.tasks.len(),
                    if r.enabled { "" } else { "\t(disabled)" }
                );
            }
        }
        AlertsCommand::Test {
            rule,
            as_of,
            format,
        } => {
            let as_of = date_arg("as-of", as_of.as_deref())?;
            let fired = crate::actions::run::evaluate(
                source,
                as_of,
                settings(config),
                &config.actions,
                &config.base_url(),
                Some(&rule),
                true,
            )?;
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&fired)?);
            } else {
                for f in &fired {
                    println!("{}\t{}\t{}", f.account_id, f.account_name, f.reason);
                }
            }
            eprintln!("rule {rule} fires for {} account(s) as of {as_of} (dry run: nothing recorded or sent)", fired.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn review_link(
    config: &Config,
    account: &str,
    quarter: Option<&str>,
    valid_for: &str,
    base_url: Option<&str>,
) -> anyhow::Result<ExitCode> {
    use crate::share::{self, Quarter};
    let quarter = match quarter {
        Some(text) => Quarter::parse(text).map_err(|r| anyhow::anyhow!("--quarter: {r}"))?,
        None => Quarter::of(chrono::Utc::now().date_naive()).previous(),
    };
    let seconds =
        share::parse_validity(valid_for).map_err(|r| anyhow::anyhow!("--valid-for: {r}"))?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let link = crate::store::ShareLink {
        id: 0,
        account_id: account.to_string(),
        quarter: quarter.to_string(),
        created_by: "cli".into(),
        created_ms: now_ms,
        expires_ms: (now_ms / 1000 + seconds) * 1000,
        revoked_ms: None,
    };
    let (secret, id) = on_dashboard(config, |source| {
        if crate::store::account_name(source, account)?.is_none() {
            bail!("no account {account:?}");
        }
        let secret = crate::users::secret(source, share::SECRET_NAME)?;
        Ok((secret, source.add_share_link(&link)?))
    })?;
    let token = share::sign(&secret, account, quarter, id, link.expires_ms / 1000);
    let base = base_url
        .map(|b| b.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{}", config.listen));
    println!("{base}/r/{token}");
    eprintln!("review of {account} for {quarter}, valid for {valid_for} (link {id}: listed and revocable on the review page)");
    Ok(ExitCode::SUCCESS)
}

/// An import's file, or standard input for `-`.
fn import_input(file: &std::path::Path) -> anyhow::Result<Box<dyn std::io::Read>> {
    Ok(if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        )
    })
}

/// `bellwether import activities FILE.csv`: all or none, repeats of logged ones skipped.
fn import_activities(config: &Config, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    if args.format.as_deref().is_some_and(|f| f != "csv") {
        bail!("--format: activities are imported from CSV");
    }
    let input = import_input(&args.file)?;
    let input = std::io::BufReader::new(input);
    let report = on_store(config, false, |backend| {
        Ok(backend.run(|storage| {
            crate::import::activities::import(storage, input, chrono::Utc::now().timestamp_millis())
        })??)
    })?;
    if report.stored {
        eprintln!(
            "imported {} activities: {} logged, {} already logged",
            report.rows,
            report.inserted,
            report.rows - report.inserted
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_import_errors(&args.file, &report);
    Ok(ExitCode::FAILURE)
}

async fn load_demo(
    config: &Config,
    options: &crate::demo::generate::Options,
    app: &crate::web::App,
) -> anyhow::Result<crate::demo::Loaded> {
    let input = config.data_dir.join("demo-input");
    eprintln!(
        "bellwether demo: generating {} accounts over {} years (seed {}) into {}",
        options.accounts,
        options.years,
        options.seed,
        input.display()
    );
    let bar = generation_bar(options.accounts);
    let summary = crate::demo::generate::generate(options, &input, &mut |summary, done| {
        bar.set_position(done as u64);
        bar.set_message(format!(
            "{} users, {} events",
            summary.users, summary.events
        ));
    })?;
    bar.finish();
    eprintln!("bellwether demo: loading records and events");
    // The dashboard should open on real tiers, not wait for the background thread's
    // schedule: roll up what was loaded (ClickHouse's views did as it arrived) and learn
    // the first model from its renewals now.
    let learn = |source: &dyn store::Storage| -> anyhow::Result<String> {
        let model = crate::health::history::recalibrate(
            source,
            chrono::Utc::now().date_naive(),
            "demo loaded",
            false,
            settings(config),
        )?;
        eprintln!(
            "bellwether demo: health model {} learned from {} decided renewals",
            model.id, model.decided_renewals
        );
        Ok(source.add_token("demo", Role::Admin, None)?)
    };
    let backend = app.state.backend.clone();
    tokio::task::block_in_place(|| {
        backend.run(|storage| {
            crate::demo::import_records(storage, &input, &config.currency, &config.listening)
        })
    })??;
    let events = crate::demo::load_events(&app.state.ingestor, &input).await?;
    eprintln!("bellwether demo: rolling up activity and learning the health model");
    tokio::task::block_in_place(|| backend.catch_up(&config.metrics, &mut rollup_progress()))?;
    let api_token = tokio::task::block_in_place(|| backend.run(|storage| learn(storage)))??;
    let loaded = crate::demo::Loaded {
        seed: options.seed,
        accounts: summary.accounts,
        years: options.years,
        end_date: options.end_date.to_string(),
        events,
        api_token,
        logins: Vec::new(),
    };
    std::fs::write(
        config.data_dir.join(crate::demo::MARKER),
        serde_json::to_string_pretty(&loaded)?,
    )?;
    Ok(loaded)
}

fn import(config: &Config, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    use crate::import::Format;
    if args.kind == "activities" {
        return import_activities(config, args);
    }
    let kind = crate::records::kind(&args.kind).context("unknown record kind")?;
    let format = match &args.format {
        Some(f) => Format::parse(f).context("format must be csv or ndjson")?,
        None => Format::from_path(&args.file).with_context(|| {
            format!(
                "cannot tell the format of {} from its extension; pass --format csv|ndjson",
                args.file.display()
            )
        })?,
    };
    let input = import_input(&args.file)?;
    let currency = config.currency.clone();
    let check = move |code: &str| currency.check(code);
    let reason = |code: &str| config.listening.check_reason(code);
    let checks = crate::import::Checks {
        currency: &check,
        reason: &reason,
    };
    let mut progress = |rows: usize| eprint!("\rimporting {}: {rows} rows", kind.name);
    let input = std::io::BufReader::new(input);
    let report = on_store(config, false, |backend| {
        backend.run(|storage| {
            let import =
                crate::import::Import::into_target(storage.import_target(kind)?, kind, checks);
            Ok(crate::import::read_into(
                import,
                format,
                input,
                &mut progress,
            )?)
        })?
    })?;
    if report.rows >= crate::import::PROGRESS_EVERY_ROWS {
        eprintln!();
    }
    if report.stored {
        eprintln!(
            "imported {} {}: {} new, {} updated",
            report.rows, kind.name, report.inserted, report.updated
        );
        return Ok(ExitCode::SUCCESS);
    }
    print_import_errors(&args.file, &report);
    Ok(ExitCode::FAILURE)
}

/// What a refused import says: nothing imported, and each error by row and column.
fn print_import_errors(file: &std::path::Path, report: &crate::import::ImportReport) {
    eprintln!(
        "{}: nothing was imported; {} error(s) in {} rows:",
        file.display(),
        report.error_count,
        report.rows
    );
    for e in &report.errors {
        let column = if e.column.is_empty() {
            String::new()
        } else {
            format!(", column {}", e.column)
        };
        eprintln!("  row {}{column}: {}", e.row, e.reason);
    }
    if report.error_count > report.errors.len() {
        eprintln!(
            "  ... and {} more",
            report.error_count - report.errors.len()
        );
    }
}

/// A bar for rolling up events, shown only when there is much to do.
fn rollup_progress() -> impl FnMut(i64, i64) {
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |done, total| {
        if bar.is_none() && total - done > store::sqlite::rollup::STEP_EVENTS as i64 {
            let b = indicatif::ProgressBar::new(total as u64).with_style(
                indicatif::ProgressStyle::with_template("  rollups {bar:40} {pos}/{len} events")
                    .expect("invariant: valid template"),
            );
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position(done as u64);
            if done >= total {
                b.finish();
            }
        }
    }
}

/// Runs `work` on the configured store, inside a runtime (ClickHouse's calls wait on it).
/// With `reads`, the store must hold data already and its rollups are brought up to date
/// first; without, an embedded store is created if need be.
fn on_store<T>(
    config: &Config,
    reads: bool,
    work: impl FnOnce(&Backend) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = runtime()?;
    let _entered = runtime.enter();
    if !reads {
        return work(&Backend::open(&config.store, &config.data_dir)?);
    }
    let backend = Backend::open_existing(&config.store, &config.data_dir)?;
    backend.catch_up(&config.metrics, &mut rollup_progress())?;
    work(&backend)
}

/// Runs `work` on the configured store as it is: it must hold data already.
fn on_existing<T>(
    config: &Config,
    work: impl FnOnce(&Backend) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = runtime()?;
    let _entered = runtime.enter();
    work(&Backend::open_existing(&config.store, &config.data_dir)?)
}

/// Runs `work` on the store's users, tokens, secrets and records (no rollup catch-up).
fn on_dashboard<T>(
    config: &Config,
    work: impl FnOnce(&dyn store::Storage) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    on_store(config, false, |backend| {
        backend.run(|storage| work(storage))?
    })
}

/// Runs `work` on what the metrics and health read, the rollups caught up.
fn on_source<T>(
    config: &Config,
    work: impl FnOnce(&dyn store::Storage) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    on_store(config, true, |backend| {
        backend.run(|storage| work(storage))?
    })
}

fn metrics(config: &Config, args: &MetricsArgs) -> anyhow::Result<ExitCode> {
    let as_of = date_arg("as-of", args.as_of.as_deref())?;
    let rows = on_source(config, |source| {
        Ok(source.snapshot(as_of, &config.metrics, &config.currency)?)
    })?;
    let mut out = std::io::stdout().lock();
    if args.format == "json" {
        serde_json::to_writer(&mut out, &rows)?;
        writeln!(out)?;
    } else {
        let mut writer = csv::Writer::from_writer(&mut out);
        writer.write_record(crate::metrics::COLUMNS)?;
        for row in &rows {
            writer.write_record(
                crate::metrics::COLUMNS
                    .iter()
                    .map(|c| crate::metrics::csv_cell(&row.get(c).unwrap_or_default())),
            )?;
        }
        writer.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn date_arg(flag: &str, text: Option<&str>) -> anyhow::Result<chrono::NaiveDate> {
    match text {
        Some(text) => {
            crate::records::parse_date(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
        }
        None => Ok(chrono::Utc::now().date_naive()),
    }
}

/// Opens the store with the rollups brought up to date (a server may not be running).
fn settings(config: &Config) -> crate::health::model::Settings<'_> {
    crate::health::model::Settings {
        metrics: &config.metrics,
        health: &config.health,
        currency: &config.currency,
    }
}

fn fmt(value: &serde_json::Value, digits: usize) -> String {
    match value.as_f64() {
        Some(x) if value.is_f64() => format!("{x:.digits$}"),
        _ if value.is_null() => "-".into(),
        _ => crate::metrics::csv_cell(value),
    }
}

// Over 100 lines: Prints the ranking and the tiers in both output formats; splitting it is part of issue 29's typed values (item 4).
#[allow(clippy::too_many_lines)]
fn indicators(config: &Config, args: &IndicatorsArgs) -> anyhow::Result<ExitCode> {
    let as_of = args
        .as_of
        .as_deref()
        .map(|text| date_arg("as-of", Some(text)))
        .transpose()?;
    let model = on_source(config, |source| {
        Ok(match as_of {
            Some(day) => {
                crate::health::history::analyse(source, day, "indicators", settings(config))?
            }
            None => match crate::health::history::model_for(source, None)? {
                Some(model) => model,
                None => crate::health::history::analyse(
                    source,
                    chrono::Utc::now().date_naive(),
                    "indicators",
                    settings(config),
                )?,
            },
        })
    })?;
    if let Some(segment) = &args.segment {
        if !model.segments.contains_key(segment) {
            bail!(
                "--segment: no segment {segment:?}; segments: {}",
                model
                    .segments
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let rows = crate::health::history::indicator_rows(&model, args.segment.as_deref());
    let mut out = std::io::stdout().lock();
    if args.format == "json" {
        serde_json::to_writer(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "renewals decided before {} ({} decisions, terms {} to {})",
        model.as_of,
        model.decided_renewals,
        model.data_from.as_deref().unwrap_or("-"),
        model.data_to.as_deref().unwrap_or("-")
    )?;
    for (name, segment) in &model.segments {
        if args.segment.as_ref().is_some_and(|s| s != name) {
            continue;
        }
        writeln!(
            out,
            "\n{name}: power feature {}{}",
            segment.power_feature.as_deref().unwrap_or("-"),
            if segment.fallback {
                " (not its own ranking: see the note)"
            } else {
                ""
            }
        )?;
        if let Some(note) = &segment.note {
            writeln!(out, "  note: {note}")?;
        }
        writeln!(
            out,
            "  {:>4} {:<28} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "rank", "feature", "auc", "arr_auc", "renewed", "churned", "users_rr", "non_rr"
        )?;
        for i in segment.indicators.iter().take(10) {
            let v = serde_json::to_value(i)?;
            writeln!(
                out,
                "  {:>4} {:<28} {:>6} {:>8} {:>8} {:>8} {:>9} {:>9}{}",
                i.rank,
                i.feature,
                fmt(&v["auc"], 3),
                fmt(&v["arr_weighted_auc"], 3),
                i.renewed_accounts,
                i.churned_accounts,
                fmt(&v["renewal_rate_users"], 2),
                fmt(&v["renewal_rate_non_users"], 2),
                if i.power_feature {
                    "  <- power feature"
                } else {
                    ""
                }
            )?;
        }
        if let Some(warning) = segment.indicators.first().and_then(|i| i.warning.as_ref()) {
            writeln!(out, "  warning: {warning}")?;
        }
        writeln!(out, "  tiers by monthly uses:")?;
        for b in &segment.buckets {
            let v = serde_json::to_value(b)?;
            writeln!(
                out,
                "    {:<10} {:<7} {:>5} decided  renewal rate {} (95% {} - {})",
                b.label,
                b.tier,
                b.decided,
                fmt(&v["renewal_rate"], 2),
                fmt(&v["interval_low"], 2),
                fmt(&v["interval_high"], 2)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn recalibrate(config: &Config, args: &RecalibrateArgs) -> anyhow::Result<ExitCode> {
    let as_of = date_arg("as-of", args.as_of.as_deref())?;
    let model = on_source(config, |source| {
        Ok(crate::health::history::recalibrate(
            source,
            as_of,
            "manual",
            args.force,
            settings(config),
        )?)
    })?;
    eprintln!(
        "stored health model {} (renewals decided before {}: {}), {}",
        model.id, model.as_of, model.decided_renewals, model.status
    );
    if let Some(gate) = &model.gate {
        eprintln!("  held-out test: {}", gate.reason);
    }
    for (name, segment) in &model.segments {
        let note = segment
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        eprintln!(
            "  {name}: power feature {}{note}",
            segment.power_feature.as_deref().unwrap_or("-")
        );
    }
    // Tiers and scores from the new model, day by day up to today.
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("  history {bar:40} {pos}/{len} days")
            .expect("invariant: valid template"),
    );
    let days = on_source(config, |source| {
        Ok(crate::health::history::update_history(
            source,
            chrono::Utc::now().date_naive(),
            settings(config),
            &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )?)
    })?;
    bar.finish_and_clear();
    eprintln!("daily score and tier history brought up to today ({days} days computed)");
    Ok(ExitCode::SUCCESS)
}

fn health(config: &Config, args: &HealthArgs) -> anyhow::Result<ExitCode> {
    let as_of = date_arg("as-of", args.as_of.as_deref())?;
    let Some((model, rows)) = on_source(config, |source| {
        Ok(crate::health::history::snapshot(
            source,
            as_of,
            settings(config),
        )?)
    })?
    else {
        bail!("no health model yet: run `bellwether recalibrate` (a running server makes the first one itself)");
    };
    let mut out = std::io::stdout().lock();
    if args.format == "json" {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"as_of": as_of.to_string(), "model_id": model.id, "accounts": rows}),
        )?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let columns = [
        "account_id",
        "segment",
        "tier",
        "expected_renewal_rate",
        "power_feature",
        "power_feature_monthly_uses",
        "health_score",
        "health_band",
        "model_id",
    ];
    let mut writer = csv::Writer::from_writer(&mut out);
    writer.write_record(columns)?;
    for row in &rows {
        let row = serde_json::to_value(row)?;
        writer.write_record(columns.iter().map(|c| crate::metrics::csv_cell(&row[*c])))?;
    }
    writer.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn backtest(config: &Config, args: &BacktestArgs) -> anyhow::Result<ExitCode> {
    let as_of = date_arg("as-of", Some(&args.as_of))?;
    let report = on_source(config, |source| {
        Ok(crate::health::backtest::backtest(
            source,
            as_of,
            args.horizon_days,
            settings(config),
        )?)
    })?;
    let mut out = std::io::stdout().lock();
    if args.format == "json" {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "backtest: scored with data through {}, renewals decided {} + {} days",
        report["scored_with_data_through"].as_str().unwrap_or("-"),
        as_of,
        args.horizon_days
    )?;
    writeln!(
        out,
        "{:<12} {:>8} {:>8} {:>8} {:>9} {:>10} {:>10} {:>6} {:>12} {:>9} {:>13} {:>11}",
        "segment",
        "decided",
        "renewed",
        "churned",
        "auc_rate",
        "auc_score",
        "auc_logins",
        "lift",
        "brier_skill",
        "cal_error",
        "arr_at_risk",
        "arr_lost"
    )?;
    for s in report["segments"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<12} {:>8} {:>8} {:>8} {:>9} {:>10} {:>10} {:>6} {:>12} {:>9} {:>13} {:>11}",
            s["segment"].as_str().unwrap_or("-"),
            s["decided"],
            s["renewed"],
            s["churned"],
            fmt(&s["auc_expected_renewal_rate"], 3),
            fmt(&s["auc_health_score"], 3),
            fmt(&s["auc_logins_per_user_week"], 3),
            fmt(&s["top_decile_lift"], 2),
            fmt(&s["brier_skill_health_score"], 3),
            fmt(&s["calibration_error"], 3),
            fmt(&s["arr_at_risk_predicted"], 0),
            fmt(&s["arr_lost_observed"], 0)
        )?;
        for c in s["calibration"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["decided"].as_u64().unwrap_or(0) > 0)
        {
            writeln!(
                out,
                "    {:<7} decided {:>5}  predicted {:>5}  observed {:>5} (95% {} - {})",
                c["tier"].as_str().unwrap_or("-"),
                c["decided"],
                fmt(&c["predicted_renewal_rate"], 2),
                fmt(&c["observed_renewal_rate"], 2),
                fmt(&c["observed_low"], 2),
                fmt(&c["observed_high"], 2)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rebuild(config: &Config) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let rebuilt = Backend::rebuild_rollups(
        &config.store,
        &config.data_dir,
        &config.metrics,
        &mut rollup_progress(),
    )?;
    let Some(step) = rebuilt else {
        bail!(
            "rebuild is not needed on the ClickHouse store: its materialized view keeps the activity rollups as the events arrive, and what an event means \
             (features, logins, passive events) is applied when they are read, so a changed config takes effect at once"
        )
    };
    eprintln!(
        "rebuilt the rollups from {} activity events (up to event {}) in {:.1} s",
        step.events,
        step.last_event_id,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn retention(config: &Config, flag: Option<u32>) -> anyhow::Result<ExitCode> {
    let window = config.ingest.dedup_window_days;
    let days = match flag {
        Some(days) if days == 0 || days < window => {
            bail!("--raw-events-days: {days} is shorter than the dedup window ({window} days); give at least {window}")
        }
        Some(days) => days,
        None if config.retention.raw_events_days == 0 => {
            bail!("raw events are kept forever: set [retention] raw_events_days in the config file or pass --raw-events-days")
        }
        None => config.retention.raw_events_days,
    };
    // Everything received so far is rolled up first (on_store), so it can go.
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("dropping raw events {bar:30} {percent}% of ids")
            .expect("valid template"),
    );
    let (pruned, rollups) = on_store(config, true, |backend| {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let pruned = backend.prune(days, now_ms, &mut |done, total| {
            bar.set_length(total.max(0) as u64);
            bar.set_position(done.max(0) as u64);
        })?;
        Ok((pruned, backend.has_rollups()))
    })?;
    bar.finish_and_clear();
    if !rollups {
        eprintln!(
            "dropped {} raw track, page and screen events older than {days} days (identify, group and alias calls stay); the activity rollups keep every day",
            pruned.events
        );
        return Ok(ExitCode::SUCCESS);
    }
    match pruned.skipped {
        Some(reason) => eprintln!("nothing dropped: {reason}"),
        None => eprintln!(
            "dropped {} raw events older than {days} days; rollups of days before {} are kept without their raw events",
            pruned.events, pruned.horizon
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn events(config: &Config, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    if args.limit == 0 || args.limit > crate::limits::EVENTS_LIST_ROWS_MAX {
        bail!(
            "--limit must be 1 to {}",
            crate::limits::EVENTS_LIST_ROWS_MAX
        );
    }
    let since_ms = match &args.since {
        Some(text) => {
            crate::ingest::parse_date_or_time(text).map_err(|r| anyhow::anyhow!("--since: {r}"))?
        }
        None => chrono::Utc::now().timestamp_millis() - 86_400_000,
    };
    let until_ms = match &args.until {
        Some(text) => Some(
            crate::ingest::parse_date_or_time(text).map_err(|r| anyhow::anyhow!("--until: {r}"))?,
        ),
        None => None,
    };
    let filter = EventFilter {
        since_ms,
        until_ms,
        user: args.user.clone(),
        account: args.account.clone(),
        limit: args.limit,
    };
    let events = on_existing(config, |backend| Ok(backend.list_events(&filter)?))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        EventsFormat::Ndjson => {
            for event in &events {
                writeln!(out, "{}", serde_json::Value::Object(event.as_received()))?;
            }
        }
        EventsFormat::Json => {
            writeln!(out, "{}", serde_json::to_string_pretty(&events)?)?;
        }
        EventsFormat::Table => {
            writeln!(
                out,
                "{:<8} {:<24} {:<8} {:<20} {:<16} {:<24} {:<24} message_id",
                "id", "received_at", "type", "user_id", "account_id", "event", "timestamp"
            )?;
            for e in &events {
                writeln!(
                    out,
                    "{:<8} {:<24} {:<8} {:<20} {:<16} {:<24} {:<24} {}",
                    e.id,
                    e.received_at,
                    e.kind,
                    e.user_id
                        .as_deref()
                        .or(e.anonymous_id.as_deref())
                        .unwrap_or("-"),
                    e.account_id.as_deref().unwrap_or("-"),
                    e.event.as_deref().unwrap_or("-"),
                    e.timestamp,
                    e.message_id
                )?;
            }
            eprintln!("{} event(s)", events.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
