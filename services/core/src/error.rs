//! The domain error every service returns. It knows nothing of gRPC: the
//! runtime turns it into a `tonic::Status` in one place (`tickmesh_runtime::status`).

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A bad field in a request: which one and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; nothing was changed.
    #[error("invalid argument: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// A named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is well-formed but the system is not in a state to serve it.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A limit was reached (a slow client, a quota).
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// A backend (Redis, the history store, another service) cannot be reached;
    /// the caller may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The server is going away; the caller should reconnect elsewhere.
    #[error("server shutting down: {0}")]
    ShuttingDown(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// One bad field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// `Ok(())` when there are no violations, else `InvalidArgument` with all of them.
    pub fn check(violations: Vec<FieldViolation>) -> Result<()> {
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
