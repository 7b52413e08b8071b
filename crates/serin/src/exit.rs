//! The SPEC's exit codes, and how a command's error becomes one.
//!
//! `0` success (for `run`: promoted), `1` runtime failure, `2` invalid input or
//! usage, `3` rolled back by analysis, `4` stopped by an operator.

use std::process::ExitCode;

use crate::error::Kind;

/// Exit codes fixed by the SPEC; CI pipelines rely on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Runtime = 1,
    Invalid = 2,
    RolledBack = 3,
    Stopped = 4,
}

impl Exit {
    /// The exit code of a command that failed with an error of this kind:
    /// bad input is exit 2, anything else exit 1.
    pub fn of(kind: Kind) -> Exit {
        match kind {
            Kind::Invalid => Exit::Invalid,
            Kind::NotFound
            | Kind::Refused
            | Kind::Conflict
            | Kind::Unavailable
            | Kind::Internal => Exit::Runtime,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bad_input_is_exit_2() {
        let exits: Vec<Exit> = Kind::ALL.into_iter().map(Exit::of).collect();
        assert_eq!(exits[0], Exit::Invalid);
        assert!(exits[1..].iter().all(|e| *e == Exit::Runtime));
    }
}
