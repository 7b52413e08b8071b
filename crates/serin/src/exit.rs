//! The SPEC's exit codes, and how a command's error becomes one.
//!
//! `0` success (for `run`: promoted), `1` runtime failure, `2` invalid input or
//! usage, `3` rolled back by analysis, `4` stopped by an operator.

use std::process::ExitCode;

/// Exit codes fixed by the SPEC; CI pipelines rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Runtime = 1,
    Invalid = 2,
    RolledBack = 3,
    Stopped = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// Bad input from the user (a flag, a file, a value) as an `anyhow::Error`:
/// exit 2, nothing changed. The message names the place (flag,
/// file:line:column) and what was expected.
pub fn invalid(message: impl Into<String>) -> anyhow::Error {
    crate::error::Error::invalid(message).into()
}

/// Prints a command's error to stderr and picks the exit code from its
/// kind ([`crate::error::Kind::exit`]): bad input is exit 2, anything else
/// exit 1.
pub fn report(result: anyhow::Result<Exit>) -> ExitCode {
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            let code = crate::error::kind_of(&err).exit();
            crate::errln!("serin: {err:#}");
            code.into()
        }
    }
}
