//! The `serin` command line: parse, dispatch, map the outcome to an exit code.
//! Start reading at `Command`; the modules live in the library (`lib.rs`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use serin::cli::output::OutputFormat;
use serin::{cli, demo};

/// serin runs canary releases: it shifts traffic from stable to canary step by
/// step, judges the canary while traffic flows, and rolls back on its own.
#[derive(Debug, Parser)]
#[command(name = "serin", version, about, propagate_version = true)]
struct Cli {
    /// Output format: human-readable text or machine-readable JSON.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,

    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// The self-contained tour: a bad canary rolled back, a good one promoted (under 90 s).
    Demo(demo::tour::Args),
    /// Run one rollout in the foreground and exit with its outcome.
    Run(cli::run::Args),
    /// The daemon: API, dashboard, proxies and controllers of all registered rollouts.
    Serve(cli::serve::Args),
    /// Register (or update) a rollout with the daemon; all traffic on stable.
    Init(cli::control::InitArgs),
    /// Phase, step, weight, versions, last verdict and per-version metrics.
    Status(cli::inspect::StatusArgs),
    /// Start the automated rollout of VERSION as the canary.
    Deploy(cli::control::DeployArgs),
    /// Set the canary weight by hand and hold the automation.
    Traffic(cli::control::TrafficArgs),
    /// End the current pause; --full: the canary becomes stable now.
    Promote(cli::control::PromoteArgs),
    /// All traffic to stable now.
    Rollback(cli::control::NameArgs),
    /// Hold the automation.
    Pause(cli::control::NameArgs),
    /// Continue the automation.
    Resume(cli::control::NameArgs),
    /// Canary weight to 0 and the rollout unregistered (its runs kept; --purge deletes them).
    Cleanup(cli::control::CleanupArgs),
    /// Live per-interval comparison of stable and canary, with threshold flags.
    Monitor(cli::monitor::Args),
    /// The rollout's runs, newest last, each with its decisions (--run N: one).
    History(cli::inspect::HistoryArgs),
    /// The rollout report: timeline, decisions, per-version summaries, charts (html).
    Report(cli::inspect::ReportArgs),
    /// The data plane alone: a traffic-splitting reverse proxy.
    Proxy(cli::proxy::Args),
    /// Standalone canary analysis of recorded metrics (exit 3 on `fail`).
    Analyze(cli::analyze::Args),
    /// A small upstream for demos and tests, with fault injection.
    DemoApp(demo::app::Args),
    /// Steady open-loop load with a latency summary.
    Load(demo::load::Args),
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    // Commands that print their own events to a person keep the log to
    // warnings unless RUST_LOG asks for more.
    init_tracing(match cli.command {
        Command::Run(_) | Command::Demo(_) | Command::Load(_) => "warn",
        _ => "info",
    });
    serin::notify::install_crypto();
    use cli::control::Simple;
    let out = cli.output;
    let result = match cli.command {
        Command::Run(args) => cli::run::run(args, out),
        Command::Serve(args) => cli::serve::run(args),
        Command::Init(args) => cli::control::init(args, out),
        Command::Status(args) => cli::inspect::status(args, out),
        Command::Deploy(args) => cli::control::deploy(args, out),
        Command::Traffic(args) => cli::control::traffic(args, out),
        Command::Promote(args) => cli::control::promote(args, out),
        Command::Rollback(args) => cli::control::simple(args, Simple::Rollback, out),
        Command::Pause(args) => cli::control::simple(args, Simple::Pause, out),
        Command::Resume(args) => cli::control::simple(args, Simple::Resume, out),
        Command::Cleanup(args) => cli::control::cleanup(args, out),
        Command::Monitor(args) => cli::monitor::run(args, out),
        Command::History(args) => cli::inspect::history(args, out),
        Command::Report(args) => cli::inspect::report(args, out),
        Command::Proxy(args) => cli::proxy::run(args),
        Command::Analyze(args) => cli::analyze::run(args, cli.output),
        Command::Demo(args) => demo::tour::run(args, cli.output),
        Command::DemoApp(args) => demo::app::run(args),
        Command::Load(args) => demo::load::run(args, cli.output),
    };
    cli::report(result)
}

/// The last net, not the rule: a `print!` on a closed pipe that did not go
/// through `cli::output` (whose writers never panic) ends the process
/// quietly, exit 0, as one-shot commands that go through it end, instead of
/// with a panic and a backtrace.
///
/// What it covers: one-shot output written with `print!` outside
/// `cli::output` (today `serin analyze`'s result, `cli/analyze.rs`) and any
/// dependency that prints to stdout. It ends the process at once, so a
/// long-running command (`run`, `demo`, `serve`, `proxy`, `load`) must
/// never rely on it: those write with `cli::output::write_ignoring` (or log
/// through `tracing`, whose writer ignores failures) and reach their end.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if cli::output::is_closed_pipe_panic(message) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so stdout stays
/// clean for command output and `-o json`. Coloured only on a terminal (and
/// not with `NO_COLOR`): a log file or a pipe gets plain text.
fn init_tracing(default: &str) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // no-color.org: NO_COLOR set and not empty turns colour off.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let colour = std::io::stderr().is_terminal() && !no_color;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(cli::run::LogWriter)
        .with_target(false)
        .init();
}
