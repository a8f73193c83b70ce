//! Tokens: JWT, HS256 only, signed with the shared secret, `exp` required.
//!
//! Claims, all optional but `exp`:
//! - `role`: `viewer` (list and status) or `operator` (also on, off,
//!   restart). A token without a role has full access, as every token of
//!   the reference (`{"admin": null, "exp": ...}`) had.
//! - `nodes`: a hostlist; the token sees and acts on those nodes only.
//! - `sub`: who the token is for, written to the audit log.
//!
//! What a verified token allows is a [`Grant`]. Pure: no I/O.

use crate::secret::Secret;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use power_proto::hostlist;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// List nodes and groups and read power status.
    Viewer,
    /// Everything a viewer may, and power on, off and restart.
    Operator,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            _ => Err(format!("unknown role {s:?}: expected viewer or operator")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        })
    }
}

/// A token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the epoch. Required.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Who the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// What it may do; none means everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The nodes it is limited to, as a hostlist; none means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<String>,
}

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's subject, if it has one.
    pub subject: Option<String>,
    /// Whether it may power on, off and restart.
    pub may_act: bool,
    /// The only nodes it may see and act on; `None` for all.
    pub nodes: Option<HashSet<String>>,
}

impl Grant {
    /// Whether the token covers `node`.
    pub fn covers(&self, node: &str) -> bool {
        self.nodes.as_ref().is_none_or(|set| set.contains(node))
    }
}

/// Why a token was refused. The text is safe to send back: it never holds
/// the token or the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    Missing,
    /// The header is not `Bearer TOKEN`.
    NotBearer,
    /// The token is expired.
    Expired,
    /// Bad signature, algorithm, encoding or claims.
    Invalid(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no token: expected an Authorization: Bearer header"),
            Self::NotBearer => f.write_str("the Authorization header is not \"Bearer TOKEN\""),
            Self::Expired => f.write_str("the token has expired"),
            Self::Invalid(why) => write!(f, "the token is not valid: {why}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// A claims error as a person reads it: a missing claim is named as such
/// (serde's "missing field `exp` at line 1 column 12" says it in JSON's terms).
fn claims_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
    {
        Some((claim, _)) => format!("the {claim} claim is required"),
        None => format!("bad claims: {text}"),
    }
}

/// Signing and verifying keys for one secret.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    hostlist_limit: usize,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Keys for `secret`; a token's `nodes` may expand to at most
    /// `hostlist_limit` names.
    pub fn new(secret: &Secret, hostlist_limit: usize) -> Keys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        // A token not valid before a time is refused until then.
        validation.validate_nbf = true;
        // Tokens are minted by this server's own clock.
        validation.leeway = 0;
        Keys {
            encoding: EncodingKey::from_secret(secret.bytes()),
            decoding: DecodingKey::from_secret(secret.bytes()),
            validation,
            hostlist_limit,
        }
    }

    /// Sign `claims` as an HS256 token.
    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Check an `Authorization` header's value and say what it allows.
    pub fn authorize(&self, header: Option<&str>) -> Result<Grant, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::NotBearer)?;
        self.verify(token)
    }

    /// Verify a token and say what it allows.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("not valid yet (its nbf claim is in the future)".into())
                }
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Invalid("algorithm not allowed: expected HS256".into())
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("the {c} claim is required"))
                }
                ErrorKind::Json(e) => AuthError::Invalid(claims_error(e)),
                _ => AuthError::Invalid("malformed token".into()),
            })?;
        self.grant(data.claims)
    }

    fn grant(&self, claims: Claims) -> Result<Grant, AuthError> {
        let nodes = match &claims.nodes {
            None => None,
            Some(expr) => Some(
                hostlist::expand(expr, self.hostlist_limit)
                    .map_err(|e| AuthError::Invalid(format!("its nodes claim: {e}")))?
                    .into_iter()
                    .collect(),
            ),
        };
        Ok(Grant {
            subject: claims.sub,
            may_act: claims.role != Some(Role::Viewer),
            nodes,
        })
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret;

    fn keys(s: &str) -> Keys {
        Keys::new(&secret::from_value(s), 1000)
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            exp,
            iat: None,
            sub: Some("alice".into()),
            role: None,
            nodes: None,
        }
    }

    #[test]
    fn a_token_without_a_role_has_full_access() {
        let k = keys("s");
        let g = k.verify(&k.mint(&claims(now() + 60))).unwrap();
        assert!(g.may_act && g.nodes.is_none() && g.covers("anything"));
        assert_eq!(g.subject.as_deref(), Some("alice"));
    }

    #[test]
    fn the_references_tokens_are_accepted() {
        #[derive(Serialize)]
        struct Reference {
            admin: Option<bool>,
            exp: u64,
        }
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Reference {
                admin: None,
                exp: now() + 60,
            },
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        let g = keys("s").verify(&t).unwrap();
        assert!(g.may_act && g.nodes.is_none() && g.subject.is_none());
    }

    #[test]
    fn viewers_may_not_act_and_node_limits_apply() {
        let k = keys("s");
        let mut c = claims(now() + 60);
        c.role = Some(Role::Viewer);
        c.nodes = Some("n[1-2]".into());
        let g = k.verify(&k.mint(&c)).unwrap();
        assert!(!g.may_act);
        assert!(g.covers("n1") && g.covers("n2") && !g.covers("n3"));
    }

    #[test]
    fn refusals_say_why() {
        let k = keys("s");
        assert_eq!(k.authorize(None), Err(AuthError::Missing));
        assert_eq!(k.authorize(Some("Basic abc")), Err(AuthError::NotBearer));
        assert_eq!(
            k.verify(&k.mint(&claims(now() - 5))),
            Err(AuthError::Expired)
        );
        let other = keys("t").mint(&claims(now() + 60));
        assert_eq!(
            k.verify(&other),
            Err(AuthError::Invalid("bad signature".into()))
        );
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(now() + 60),
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(k.verify(&hs512).is_err());
        assert!(k.verify("garbage").is_err());
        let mut wide = claims(now() + 60);
        wide.nodes = Some("n[1-100000]".into());
        let e = k.verify(&k.mint(&wide)).unwrap_err().to_string();
        assert!(e.contains("nodes claim"), "{e}");
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        #[derive(Serialize)]
        struct Early {
            exp: u64,
            nbf: u64,
        }
        let k = keys("s");
        let sign = |nbf| {
            let c = Early {
                exp: now() + 600,
                nbf,
            };
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(b"s"),
            )
            .unwrap()
        };
        assert_eq!(
            k.verify(&sign(now() + 300)),
            Err(AuthError::Invalid(
                "not valid yet (its nbf claim is in the future)".into()
            ))
        );
        assert!(k.verify(&sign(now() - 1)).is_ok());
    }
}
