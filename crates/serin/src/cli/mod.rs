//! One module per command group: each has an `Args` (clap) and a `run`.

pub mod analyze;
pub mod client;
pub mod control;
pub mod inspect;
pub mod kube;
pub mod local;
pub mod monitor;
pub mod output;
pub mod proxy;
pub mod run;
pub mod serve;
pub mod signals;

use crate::error::Error;

/// Runs a one-shot command's future on a runtime of its own (the client
/// commands: `control`, `inspect`, `kube`).
pub fn block_on<F: std::future::Future<Output = anyhow::Result<crate::exit::Exit>>>(
    f: F,
) -> anyhow::Result<crate::exit::Exit> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// A bearer token (`--token` or `SERIN_TOKEN` of `serin serve`, `serin
/// proxy` and the client commands): visible ASCII without spaces, as
/// `Authorization: Bearer TOKEN` carries it unchanged. An empty or blank
/// value is an error, never "no token" (a typo in an environment must not
/// open an API). The value is never echoed: it is a secret.
pub fn bearer_token(value: &str) -> Result<String, Error> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "--token: expected a token of visible characters (ASCII, no spaces or control characters; \
             it is sent as `Authorization: Bearer TOKEN`), got an empty, blank or spaced value \
             (from --token or SERIN_TOKEN)"
                .to_owned(),
        ));
    }
    Ok(value.to_owned())
}

/// What is said when serin's built-in proxy at `addr` closes: it was the
/// service's address. `then` says what keeps or brings it back.
pub fn closing(addr: &str, then: &str) -> String {
    format!("{addr} stops answering now: serin's built-in proxy was the service's address ({then})")
}

/// After `serin run`.
pub const AFTER_RUN: &str =
    "to keep an address up between rollouts, register them with `serin serve`";

/// After `serin cleanup`.
pub const AFTER_CLEANUP: &str = "`serin init FILE` opens it again";

/// Prints a command's error to stderr and picks the exit code from its
/// kind ([`crate::exit::Exit::of`]): bad input is exit 2, anything else
/// exit 1.
pub fn report(result: anyhow::Result<crate::exit::Exit>) -> std::process::ExitCode {
    match result {
        Ok(code) => code.into(),
        Err(err) => {
            let code = crate::exit::Exit::of(crate::error::kind_of(&err));
            crate::errln!("serin: {err:#}");
            code.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("s3cret-~").unwrap(), "s3cret-~");
        for bad in ["", " ", "\t \n", "two words", " lead", "tail ", "é"] {
            let err = bearer_token(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("--token: expected") && err.contains("SERIN_TOKEN"),
                "{bad:?}: {err}"
            );
        }
    }
}
