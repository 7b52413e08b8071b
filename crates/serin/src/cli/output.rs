//! `-o text|json`, shared by every command, and how commands write.
//!
//! `println!` panics when stdout is a pipe whose reader has gone
//! (`serin history x | head -1`). Commands write through these instead:
//! - [`outln!`](crate::outln) / [`out!`](crate::out): a one-shot command's
//!   output on stdout. A reader that went away ends the command quietly
//!   (exit 0, nothing on stderr); any other write error is exit 1 with a
//!   message.
//! - [`errln!`](crate::errln): a line on stderr; a write that fails is
//!   ignored (nothing else could be told).
//! - [`write_ignoring`]: what `serin run` prints; a closed output never stops
//!   a rollout, which goes on to its end and exits with its outcome.

use std::io::Write as _;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// One JSON document on stdout.
    Json,
}

/// A line of a one-shot command's output on stdout (see the module docs).
#[macro_export]
macro_rules! outln {
    () => {
        $crate::cli::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Text of a one-shot command's output on stdout, no newline added.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::stdout(format_args!($($arg)*))
    };
}

/// A line on stderr; a failed write is ignored.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout for a one-shot command: on a closed pipe the process
/// exits quietly (0); on another error it says so and exits 1.
pub fn stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let result = out.write_fmt(args).and_then(|()| out.flush());
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            stderr(format_args!("serin: cannot write the output: {e}\n"));
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

/// Writes to stderr, ignoring failure.
pub fn stderr(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.flush());
}

/// Writes `text` to stdout (`to_stdout`) or stderr, ignoring failure: for
/// long-running commands, whose work must not end with their reader.
pub fn write_ignoring(to_stdout: bool, text: &str) {
    if to_stdout {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    } else {
        stderr(format_args!("{text}"));
    }
}

/// Whether a panic is `print!`'s on a closed pipe ("failed printing to
/// stdout: Broken pipe"): the last net for a write that does not go through
/// this module. `main` ends such a process quietly instead of printing a
/// backtrace.
pub fn is_closed_pipe_panic(message: &str) -> bool {
    message.starts_with("failed printing to std") && message.contains("Broken pipe")
}
