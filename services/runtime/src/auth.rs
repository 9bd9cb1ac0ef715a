//! Admin authorization: admin RPCs require `authorization: Bearer <token>` when
//! an admin token is configured. Without one (development) they are open and
//! the server says so at start.

use std::sync::Arc;

use tickmesh_core::Error;
use tonic::metadata::MetadataMap;

#[derive(Clone, Debug, Default)]
pub struct AdminAuth {
    token: Option<Arc<str>>,
}

impl AdminAuth {
    pub fn new(token: &str) -> Self {
        Self {
            token: (!token.is_empty()).then(|| Arc::from(token)),
        }
    }

    pub fn is_open(&self) -> bool {
        self.token.is_none()
    }

    /// Checks the caller's metadata for the admin token.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Error> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let header = metadata.get("authorization").ok_or_else(|| {
            Error::Unauthenticated(
                "this is an admin call: send `authorization: Bearer <admin token>`".into(),
            )
        })?;
        let presented = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                Error::Unauthenticated("authorization must be `Bearer <admin token>`".into())
            })?;
        if constant_time_eq(presented.trim().as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(
                "the admin token is not valid".into(),
            ))
        }
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = value {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn open_without_token() {
        assert!(AdminAuth::new("").check(&md(None)).is_ok());
    }

    #[test]
    fn requires_the_right_bearer_token() {
        let auth = AdminAuth::new("s3cret");
        assert!(auth.check(&md(Some("Bearer s3cret"))).is_ok());
        assert!(matches!(
            auth.check(&md(None)),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.check(&md(Some("Basic abc"))),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.check(&md(Some("Bearer wrong"))),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            auth.check(&md(Some("Bearer s3cre"))),
            Err(Error::PermissionDenied(_))
        ));
    }
}
