//! The command line: parses arguments, loads the config and runs one command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, Flags};
use crate::store::{self, EventFilter, Role, Store};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Segment tracking API, the REST API and the dashboard.
    Serve(ServeArgs),
    /// Run bellwether on demo data and serve it.
    Demo(ServeArgs),
    /// List stored events, to debug an integration (works while a server runs).
    Events(EventsArgs),
    /// Import customer records from a CSV or NDJSON file, all or nothing (works while a server runs).
    Import(ImportArgs),
    /// Erase a person (GDPR): their events, traits and survey answers.
    DeleteUser {
        /// The person's userId.
        user_id: String,
    },
    /// Manage API tokens for /api/v1.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8780] (also BELLWETHER_LISTEN). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
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
    /// Output format: a table, or each message as received plus receivedAt (ndjson).
    #[arg(long, value_enum, default_value_t = EventsFormat::Table)]
    format: EventsFormat,
    /// Most events to print (at most 10000).
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// What the file holds: accounts, subscriptions, tickets, survey_responses, suggestions, kpis or csms.
    #[arg(value_parser = crate::records::KINDS.iter().map(|k| k.name).collect::<Vec<_>>())]
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
    },
}

/// Runs the command line; errors are printed by `main`.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let listen = match &cli.command {
        Command::Serve(args) | Command::Demo(args) => args.listen.clone(),
        _ => None,
    };
    let flags = Flags { config: cli.config.clone(), data_dir: cli.data_dir.clone(), listen };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = Config::load(&flags, &env)?;
    match cli.command {
        Command::Serve(_) => serve(&config),
        Command::Demo(_) => demo(config),
        Command::Events(args) => events(&config, &args),
        Command::Import(args) => import(&config, &args),
        Command::DeleteUser { user_id } => {
            let store = Store::open(&config.data_dir)?;
            let deletion = store::records::delete_user(&mut store.connect()?, &user_id)?;
            println!("{}", serde_json::to_string_pretty(&deletion)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { command: TokenCommand::Create { role, name } } => {
            let role = Role::parse(&role).context("role must be admin or read")?;
            let store = Store::open(&config.data_dir)?;
            let secret = store::create_token(&store.connect()?, &name, role)?;
            println!("{secret}");
            eprintln!("created {} token {name:?}; it is shown only now", role.as_str());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bellwether").build()?)
}

fn serve(config: &Config) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(crate::web::serve(config, |addr| {
        println!("bellwether listening on http://{addr}");
        let _ = std::io::stdout().flush();
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// Until the demo generator exists, the demo serves an empty data dir with a demo write key.
fn demo(mut config: Config) -> anyhow::Result<ExitCode> {
    if config.write_keys.is_empty() {
        config.write_keys.insert("demo-write-key".into(), "demo".into());
    }
    eprintln!("bellwether demo: the demo data generator is not built yet; serving {} (empty unless you send events)", config.data_dir.display());
    eprintln!("send events with the write key(s): {}", config.write_keys.keys().cloned().collect::<Vec<_>>().join(", "));
    serve(&config)
}

fn import(config: &Config, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    use crate::ingest::import::Format;
    let kind = crate::records::kind(&args.kind).context("unknown record kind")?;
    let format = match &args.format {
        Some(f) => Format::parse(f).context("format must be csv or ndjson")?,
        None => Format::from_path(&args.file)
            .with_context(|| format!("cannot tell the format of {} from its extension; pass --format csv|ndjson", args.file.display()))?,
    };
    let input: Box<dyn std::io::Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?)
    };
    let store = Store::open(&config.data_dir)?;
    let mut conn = store.connect()?;
    let currency = config.currency.clone();
    let check = move |code: &str| currency.check(code);
    let checks = crate::store::records::Checks { currency: &check };
    let mut progress = |rows: usize| eprint!("\rimporting {}: {rows} rows", kind.name);
    let report = crate::ingest::import::import(&mut conn, kind, format, std::io::BufReader::new(input), checks, &mut progress)?;
    if report.rows >= crate::ingest::import::PROGRESS_EVERY_ROWS {
        eprintln!();
    }
    if report.stored {
        eprintln!("imported {} {}: {} new, {} updated", report.rows, kind.name, report.inserted, report.updated);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{}: nothing was imported; {} error(s) in {} rows:", args.file.display(), report.error_count, report.rows);
    for e in &report.errors {
        let column = if e.column.is_empty() { String::new() } else { format!(", column {}", e.column) };
        eprintln!("  row {}{column}: {}", e.row, e.reason);
    }
    if report.error_count > report.errors.len() {
        eprintln!("  ... and {} more", report.error_count - report.errors.len());
    }
    Ok(ExitCode::FAILURE)
}

fn events(config: &Config, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    if args.limit == 0 || args.limit > crate::limits::EVENTS_LIST_ROWS_MAX {
        bail!("--limit must be 1 to {}", crate::limits::EVENTS_LIST_ROWS_MAX);
    }
    let since_ms = match &args.since {
        Some(text) => crate::ingest::parse_date_or_time(text).map_err(|r| anyhow::anyhow!("--since: {r}"))?,
        None => chrono::Utc::now().timestamp_millis() - 86_400_000,
    };
    let until_ms = match &args.until {
        Some(text) => Some(crate::ingest::parse_date_or_time(text).map_err(|r| anyhow::anyhow!("--until: {r}"))?),
        None => None,
    };
    if !config.database_path().exists() {
        bail!("no database at {}: nothing has been stored in this data dir (see --data-dir)", config.database_path().display());
    }
    let store = Store::open(&config.data_dir)?;
    let filter = EventFilter { since_ms, until_ms, user: args.user.clone(), account: args.account.clone(), limit: args.limit };
    let events = store::list_events(&store.connect()?, &filter)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        EventsFormat::Ndjson => {
            for event in &events {
                writeln!(out, "{}", serde_json::Value::Object(event.as_received()))?;
            }
        }
        EventsFormat::Table => {
            writeln!(out, "{:<8} {:<24} {:<8} {:<20} {:<16} {:<24} {:<24} message_id", "id", "received_at", "type", "user_id", "account_id", "event", "timestamp")?;
            for e in &events {
                writeln!(
                    out,
                    "{:<8} {:<24} {:<8} {:<20} {:<16} {:<24} {:<24} {}",
                    e.id,
                    e.received_at,
                    e.kind,
                    e.user_id.as_deref().or(e.anonymous_id.as_deref()).unwrap_or("-"),
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
