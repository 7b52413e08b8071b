//! The error every seam speaks: a message that names the cause, and a
//! [`Kind`] that says whose move it is.
//!
//! The data plane ([`crate::controller::seams::TrafficRouter`] and its
//! start), the metric sources and the daemon's operations all fail with a
//! kind, and the edges turn the kind into an exit code (`serin run`, the
//! client commands) or an HTTP status (the daemon's API), each in one
//! place: [`crate::exit::Exit::of`] and [`Kind::status`]: a port in use or a refused `nginx -t`
//! is "unavailable" (exit 1, HTTP 503) wherever it happens, never "invalid
//! input".

use std::fmt;

use http::StatusCode;

/// What kind of failure an [`Error`] is: what the caller can do about it.
///
/// | kind | exit | HTTP |
/// |---|---|---|
/// | `Invalid` | 2 | 400 |
/// | `NotFound` | 1 | 404 |
/// | `Refused` | 1 | 403 |
/// | `Conflict` | 1 | 409 |
/// | `Unavailable` | 1 | 503 |
/// | `Internal` | 1 | 500 |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The input is wrong (a flag, a rollout file, a request body); nothing
    /// changed. The message names the place and what was expected.
    Invalid,
    /// No such thing (a rollout name).
    NotFound,
    /// Not allowed by the operator's configuration (a rollout file naming
    /// commands `serin serve --allow-command` did not allow).
    Refused,
    /// Does not fit the current state: a command in a phase that does not
    /// take it, a file at a path serin must own that someone else wrote.
    Conflict,
    /// Something serin depends on cannot do it now: a listen port in use,
    /// `nginx -t` or its reload refusing, a cluster or Prometheus that does
    /// not answer, the state database locked. The same request may succeed
    /// later.
    Unavailable,
    /// serin's own fault.
    Internal,
}

impl Kind {
    /// The daemon's HTTP status for an operation that failed with this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::Refused => StatusCode::FORBIDDEN,
            Kind::Conflict => StatusCode::CONFLICT,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failure with its [`Kind`] and a message naming the cause
/// (`traffic.listen 127.0.0.1:8080: Address already in use`,
/// `nginx -t: …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    message: String,
}

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Bad input: exit 2, HTTP 400.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(Kind::Invalid, message)
    }

    /// A dependency that cannot do it now: exit 1, HTTP 503.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(Kind::Unavailable, message)
    }

    /// Not allowed by the operator: exit 1, HTTP 403.
    pub fn refused(message: impl Into<String>) -> Error {
        Error::new(Kind::Refused, message)
    }

    /// Does not fit the current state: exit 1, HTTP 409.
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, message)
    }

    /// `place ADDR` (a flag or a file's field) cannot be listened on: the
    /// machine's state, not bad input, so unavailable (exit 1, HTTP 503).
    pub fn cannot_listen(place: &str, addr: std::net::SocketAddr, e: &std::io::Error) -> Error {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "address already in use".to_owned(),
            std::io::ErrorKind::AddrNotAvailable => {
                "address not available on this machine".to_owned()
            }
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            _ => e.to_string(),
        };
        Error::unavailable(format!("{place} {addr}: cannot listen: {why}"))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, its message prefixed with `context: `.
    pub fn context(self, context: impl fmt::Display) -> Error {
        Error {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The kind of a command's error: that of the first [`Error`] in its chain,
/// [`Kind::Internal`] for anything else (an I/O error with context, say).
pub fn kind_of(err: &anyhow::Error) -> Kind {
    err.chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .map_or(Kind::Internal, Error::kind)
}

impl Kind {
    /// Every kind, in declaration order (tests walk them all).
    #[cfg(test)]
    pub(crate) const ALL: [Kind; 6] = [
        Kind::Invalid,
        Kind::NotFound,
        Kind::Refused,
        Kind::Conflict,
        Kind::Unavailable,
        Kind::Internal,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_status() {
        let statuses: Vec<u16> = Kind::ALL.iter().map(|k| k.status().as_u16()).collect();
        assert_eq!(statuses, [400, 404, 403, 409, 503, 500]);
    }

    #[test]
    fn the_kind_is_found_under_context() {
        let e = anyhow::Error::new(Error::unavailable("nginx -t: refused")).context("starting");
        assert_eq!(kind_of(&e), Kind::Unavailable);
        assert_eq!(format!("{e:#}"), "starting: nginx -t: refused");
        assert_eq!(kind_of(&anyhow::anyhow!("other")), Kind::Internal);
        let e = Error::invalid("x").context("file.yaml");
        assert_eq!((e.kind(), e.message()), (Kind::Invalid, "file.yaml: x"));
    }
}
