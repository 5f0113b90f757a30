//! The `[admin]` section: where the admin API listens and the token it asks for.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::balance::{Problem, problem};

/// Shortest token accepted: anything shorter is guessable.
const MIN_TOKEN: usize = 16;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `ip:port`; loopback unless asked otherwise.
    pub listen: String,
    /// The bearer token every request but `/healthz` must carry. Prefer `token_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so a new one is a compile error here rather than missing.
        let AdminConfig {
            listen,
            token,
            token_file,
        } = self;
        f.debug_struct("AdminConfig")
            .field("listen", listen)
            .field("token", &super::Redacted(token))
            .field("token_file", token_file)
            .finish()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9901".into(),
            token: None,
            token_file: None,
        }
    }
}

impl AdminConfig {
    /// The token from `token` or `token_file`, if either is set.
    pub fn load_token(&self) -> Result<Option<String>, String> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("token_file {} in [admin]: {e}", path.display()))?
                .trim_end()
                .to_string(),
            (None, None) => return Ok(None),
        };
        if !usable_token(&token) {
            return Err(format!(
                "the [admin] token must be at least {MIN_TOKEN} printable characters without spaces"
            ));
        }
        Ok(Some(token))
    }
}

/// Long enough not to be guessed, and sendable as is in an `Authorization` header.
fn usable_token(t: &str) -> bool {
    t.len() >= MIN_TOKEN && t.bytes().all(|b| b.is_ascii_graphic())
}

pub fn validate_admin(a: &AdminConfig) -> Result<(), Problem> {
    let Ok(addr) = a.listen.parse::<SocketAddr>() else {
        let message = format!("listen '{}' in [admin] is not an ip:port address", a.listen);
        return Err(problem("admin", "listen", Some(&a.listen), message));
    };
    if a.token.is_some() && a.token_file.is_some() {
        let message = "[admin] sets both token and token_file; keep one".to_string();
        return Err(problem("admin", "token", None, message));
    }
    if let Some(t) = &a.token
        && !usable_token(t)
    {
        let message = format!(
            "token in [admin] must be at least {MIN_TOKEN} printable characters without spaces"
        );
        return Err(problem("admin", "token", None, message));
    }
    if !addr.ip().is_loopback() && a.token.is_none() && a.token_file.is_none() {
        let message = format!(
            "listen '{}' in [admin] is not a loopback address: anyone who can reach it could steer this node; set token or token_file",
            a.listen
        );
        return Err(problem("admin", "listen", Some(&a.listen), message));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_admin_address_needs_a_token() {
        let open = AdminConfig {
            listen: "0.0.0.0:9901".into(),
            ..AdminConfig::default()
        };
        let e = validate_admin(&open).expect_err("refused");
        assert!(
            e.message.contains("not a loopback address"),
            "{}",
            e.message
        );
        let guarded = AdminConfig {
            token: Some("0123456789abcdef".into()),
            ..open
        };
        assert!(validate_admin(&guarded).is_ok());
        assert!(
            validate_admin(&AdminConfig::default()).is_ok(),
            "loopback may go without"
        );
    }

    #[test]
    fn short_tokens_and_two_tokens_are_refused() {
        let short = AdminConfig {
            token: Some("secret".into()),
            ..AdminConfig::default()
        };
        assert!(validate_admin(&short).is_err());
        let both = AdminConfig {
            token: Some("0123456789abcdef".into()),
            token_file: Some("/tmp/t".into()),
            ..AdminConfig::default()
        };
        assert!(validate_admin(&both).is_err());
    }
}
