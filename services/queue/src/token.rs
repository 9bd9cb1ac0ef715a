//! Signed queue tokens.
//!
//! A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))`
//! (no padding). The payload is compact binary:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version (1) |
//! | 1 | kind: 1 waiting (from Enter), 2 admission |
//! | 8 | issued at, ms since the epoch, big-endian |
//! | 8 | expires at, ms since the epoch, big-endian |
//! | 1 + n | key id |
//! | 1 + n | room id |
//! | 2 + n | user id |
//!
//! The key id picks the secret among the current key and the previous ones
//! (`queue.previous_token_keys`), so tokens signed before a rotation stay
//! valid during the overlap. The MAC is compared in constant time. Any token
//! that does not verify — forged, tampered, truncated, signed with an unknown
//! key, or expired — is `Unauthenticated`.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use tickmesh_core::{Error, Result};
use tickmesh_runtime::config::check_token_key;

const VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Longest token accepted before any decoding.
pub const MAX_TOKEN_LEN: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Waiting,
    Admission,
}

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub kind: Kind,
    pub room: String,
    pub user: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
}

/// The signing key and every key still accepted.
#[derive(Clone)]
pub struct Keyring {
    current_id: String,
    secrets: HashMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.secrets.keys().collect();
        ids.sort();
        f.debug_struct("Keyring")
            .field("current_id", &self.current_id)
            .field("accepted", &ids)
            .finish()
    }
}

impl Keyring {
    /// From `<key id>:<secret>` strings (as in `[queue]`).
    pub fn new(current: &str, previous: &[String]) -> Result<Self> {
        let parse = |field: &str, value: &str| -> Result<(String, Vec<u8>)> {
            check_token_key(value)
                .map_err(|r| Error::FailedPrecondition(format!("{field}: {r}")))?;
            let (id, secret) = value.split_once(':').expect("checked");
            Ok((id.to_string(), secret.as_bytes().to_vec()))
        };
        let (current_id, secret) = parse("queue.token_key", current)?;
        let mut secrets = HashMap::from([(current_id.clone(), secret)]);
        for key in previous {
            let (id, secret) = parse("queue.previous_token_keys", key)?;
            if secrets.contains_key(&id) {
                return Err(Error::FailedPrecondition(format!(
                    "queue.previous_token_keys: key id {id:?} is used twice"
                )));
            }
            secrets.insert(id, secret);
        }
        Ok(Self {
            current_id,
            secrets,
        })
    }

    /// A random key, for development (tokens do not survive a restart).
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret).expect("openssl random bytes");
        Self {
            current_id: "dev".into(),
            secrets: HashMap::from([("dev".to_string(), secret.to_vec())]),
        }
    }

    pub fn current_id(&self) -> &str {
        &self.current_id
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = encode(&self.current_id, claims);
        let mac = hmac(&self.secrets[&self.current_id], &payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The claims of a genuine, unexpired token.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims> {
        let invalid = || Error::Unauthenticated("the token is not valid".into());
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid());
        }
        let (payload, mac) = token.split_once('.').ok_or_else(invalid)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| invalid())?;
        if mac.len() != MAC_LEN {
            return Err(invalid());
        }
        let (key_id, claims) = decode(&payload).ok_or_else(invalid)?;
        let secret = self.secrets.get(key_id).ok_or_else(invalid)?;
        let expected = hmac(secret, &payload);
        if !openssl::memcmp::eq(&expected, &mac) {
            return Err(invalid());
        }
        if claims.expires_ms <= now_ms {
            return Err(Error::Unauthenticated("the token has expired".into()));
        }
        Ok(claims)
    }
}

fn hmac(secret: &[u8], payload: &[u8]) -> [u8; MAC_LEN] {
    let key = PKey::hmac(secret).expect("hmac key");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("hmac signer");
    signer.update(payload).expect("hmac update");
    let mut out = [0u8; MAC_LEN];
    signer.sign(&mut out).expect("hmac sign");
    out
}

fn encode(key_id: &str, c: &Claims) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + key_id.len() + c.room.len() + c.user.len());
    out.push(VERSION);
    out.push(match c.kind {
        Kind::Waiting => 1,
        Kind::Admission => 2,
    });
    out.extend_from_slice(&c.issued_ms.to_be_bytes());
    out.extend_from_slice(&c.expires_ms.to_be_bytes());
    // Ids are validated short (key ≤ 16, room ≤ 64, user ≤ 256 bytes).
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.push(c.room.len() as u8);
    out.extend_from_slice(c.room.as_bytes());
    out.extend_from_slice(&(c.user.len() as u16).to_be_bytes());
    out.extend_from_slice(c.user.as_bytes());
    out
}

fn decode(payload: &[u8]) -> Option<(&str, Claims)> {
    let mut r = Reader(payload);
    if r.take(1)?[0] != VERSION {
        return None;
    }
    let kind = match r.take(1)?[0] {
        1 => Kind::Waiting,
        2 => Kind::Admission,
        _ => return None,
    };
    let issued_ms = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let expires_ms = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let n = r.take(1)?[0] as usize;
    let key_id = std::str::from_utf8(r.take(n)?).ok()?;
    let n = r.take(1)?[0] as usize;
    let room = std::str::from_utf8(r.take(n)?).ok()?.to_string();
    let n = u16::from_be_bytes(r.take(2)?.try_into().ok()?) as usize;
    let user = std::str::from_utf8(r.take(n)?).ok()?.to_string();
    if !r.0.is_empty() {
        return None;
    }
    Some((
        key_id,
        Claims {
            kind,
            room,
            user,
            issued_ms,
            expires_ms,
        },
    ))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "k1:0123456789abcdef0123456789abcdef";
    const S2: &str = "k2:fedcba9876543210fedcba9876543210";

    fn claims() -> Claims {
        Claims {
            kind: Kind::Admission,
            room: "launch".into(),
            user: "user-42".into(),
            issued_ms: 1_000,
            expires_ms: 61_000,
        }
    }

    fn unauthenticated(r: Result<Claims>) -> String {
        match r {
            Err(Error::Unauthenticated(m)) => m,
            other => panic!("expected unauthenticated, got {other:?}"),
        }
    }

    #[test]
    fn round_trips() {
        let ring = Keyring::new(S1, &[]).unwrap();
        let token = ring.sign(&claims());
        assert!(!token.contains(['+', '/', '=']), "url-safe: {token}");
        assert_eq!(ring.verify(&token, 2_000).unwrap(), claims());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let ring = Keyring::new(S1, &[]).unwrap();
        let token = ring.sign(&claims());
        assert!(ring.verify(&token, 60_999).is_ok());
        assert!(unauthenticated(ring.verify(&token, 61_000)).contains("expired"));
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let ring = Keyring::new(S1, &[]).unwrap();
        let token = ring.sign(&claims());
        let (payload, mac) = token.split_once('.').unwrap();
        let payload = URL_SAFE_NO_PAD.decode(payload).unwrap();
        let mac = URL_SAFE_NO_PAD.decode(mac).unwrap();
        for i in 0..payload.len() {
            let mut p = payload.clone();
            p[i] ^= 0x01;
            let forged = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&p),
                URL_SAFE_NO_PAD.encode(&mac)
            );
            unauthenticated(ring.verify(&forged, 2_000));
        }
        for i in 0..mac.len() {
            let mut m = mac.clone();
            m[i] ^= 0x80;
            let forged = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&payload),
                URL_SAFE_NO_PAD.encode(&m)
            );
            unauthenticated(ring.verify(&forged, 2_000));
        }
    }

    #[test]
    fn forgeries_are_refused() {
        let ring = Keyring::new(S1, &[]).unwrap();
        // Same key id, another secret: an attacker who guessed the format.
        let attacker = Keyring::new("k1:attacker-attacker-attacker-attacker", &[]).unwrap();
        unauthenticated(ring.verify(&attacker.sign(&claims()), 2_000));
        // A waiting token re-labelled as an admission token.
        let mut waiting = claims();
        waiting.kind = Kind::Waiting;
        let token = ring.sign(&waiting);
        let (payload, mac) = token.split_once('.').unwrap();
        let mut p = URL_SAFE_NO_PAD.decode(payload).unwrap();
        p[1] = 2;
        unauthenticated(ring.verify(&format!("{}.{mac}", URL_SAFE_NO_PAD.encode(&p)), 2_000));
        for junk in [
            "",
            ".",
            "abc",
            "abc.def",
            &token[..token.len() - 2],
            &format!("{token}x"),
            &format!("{}.", payload),
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            unauthenticated(ring.verify(junk, 2_000));
        }
    }

    #[test]
    fn rotation_accepts_previous_keys_and_signs_with_the_current_one() {
        let old = Keyring::new(S1, &[]).unwrap();
        let old_token = old.sign(&claims());
        let rotated = Keyring::new(S2, &[S1.to_string()]).unwrap();
        assert_eq!(rotated.verify(&old_token, 2_000).unwrap(), claims());
        let new_token = rotated.sign(&claims());
        assert_eq!(rotated.current_id(), "k2");
        // Not yet rotated instances do not know k2.
        unauthenticated(old.verify(&new_token, 2_000));
        // Once k1 is dropped, its tokens are refused.
        let after = Keyring::new(S2, &[]).unwrap();
        unauthenticated(after.verify(&old_token, 2_000));
        assert!(after.verify(&new_token, 2_000).is_ok());
    }

    #[test]
    fn bad_keys_are_refused_and_never_printed() {
        assert!(Keyring::new("k1:short", &[]).is_err());
        assert!(Keyring::new(S1, &[S1.to_string()]).is_err());
        let ring = Keyring::new(S1, &[]).unwrap();
        assert!(!format!("{ring:?}").contains("0123456789abcdef"));
        let random = Keyring::random();
        let t = random.sign(&claims());
        assert!(random.verify(&t, 2_000).is_ok());
        unauthenticated(ring.verify(&t, 2_000));
    }
}
