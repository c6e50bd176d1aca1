use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::field::MakeExt;

fn main() -> ExitCode {
    release_large_allocations();
    init_logging();
    let cli = bellwether::cli::Cli::parse();
    match bellwether::cli::run(cli) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bellwether: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Large blocks (a sign-in's 19 MiB argon2 memory) are mapped and unmapped rather than
/// kept in glibc's heaps, so memory goes back to the system after a burst of sign-ins.
/// glibc raises its threshold after the first such free unless it is set once.
fn release_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// Output piped into `head` and closed early is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Logs go to stderr: `BELLWETHER_LOG` is the filter (default `info`),
/// `BELLWETHER_LOG_FORMAT=json` gives one JSON object per line.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BELLWETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("BELLWETHER_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        // Every field is written with its control characters escaped, so input (a user
        // name with a newline, say) can never start a forged line. JSON escapes by itself.
        let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
            let raw = format!("{value:?}");
            let text = bellwether::telemetry::escape_controls(&raw);
            match field.name() {
                "message" => write!(writer, "{text}"),
                name => write!(writer, "{name}={text}"),
            }
        })
        .delimited(" ");
        builder.fmt_fields(fields).init();
    }
}
