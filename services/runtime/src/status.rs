//! The one place where domain errors become gRPC status codes.
//!
//! Bad input carries `google.rpc.BadRequest` field violations in the status
//! details, so clients (and grpcurl) see exactly which field is wrong and why.

use tickmesh_core::Error;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Converts a domain error into the status a client sees.
pub fn to_status(error: Error) -> Status {
    match error {
        Error::InvalidArgument(violations) => {
            let message = error_message(&violations);
            let mut details = ErrorDetails::new();
            for v in violations {
                details.add_bad_request_violation(v.field, v.description);
            }
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        Error::FailedPrecondition(m) => Status::failed_precondition(m),
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::ResourceExhausted(m) => Status::resource_exhausted(m),
        Error::Unavailable(m) => Status::unavailable(m),
        Error::ShuttingDown(m) => Status::unavailable(format!("server shutting down: {m}")),
        Error::Internal(m) => {
            tracing::error!(error = %m, "internal error");
            Status::internal(m)
        }
    }
}

fn error_message(violations: &[tickmesh_core::FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Lets handlers write `logic(...).await.map_err(to_status)?` or `.into_status()?`.
pub trait IntoStatus<T> {
    fn into_status(self) -> Result<T, Status>;
}

impl<T> IntoStatus<T> for Result<T, Error> {
    fn into_status(self) -> Result<T, Status> {
        self.map_err(to_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickmesh_core::FieldViolation;

    #[test]
    fn invalid_argument_carries_field_violations() {
        let status = to_status(Error::InvalidArgument(vec![
            FieldViolation::new("trades[2].price", "must be positive"),
            FieldViolation::new("symbols", "must not be empty"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("trades[2].price: must be positive")
        );
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request details");
        assert_eq!(bad.field_violations.len(), 2);
        assert_eq!(bad.field_violations[0].field, "trades[2].price");
    }

    #[test]
    fn codes() {
        assert_eq!(
            to_status(Error::NotFound("instrument \"X\"".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            to_status(Error::Unavailable("redis".into())).code(),
            Code::Unavailable
        );
        assert_eq!(
            to_status(Error::ShuttingDown("bye".into())).code(),
            Code::Unavailable
        );
        assert_eq!(
            to_status(Error::ResourceExhausted("slow".into())).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            to_status(Error::Unauthenticated("x".into())).code(),
            Code::Unauthenticated
        );
    }
}
