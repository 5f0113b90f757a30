//! The admin API from the other side: what `opsconsole ctl` and a remote console speak. One
//! short HTTP/1.1 exchange per call on a fresh connection, so a node that restarted between
//! two calls is simply reached again, and nothing half-read lingers after a timeout.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

use crate::control::{Command, CommandReply, Snapshot};

/// A reply larger than this is refused (a snapshot of a few hundred servers is well under
/// a megabyte).
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// Where a node's admin API is, and how to prove we may use it.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, as given.
    authority: String,
    /// A path prefix the API is mounted under (a reverse proxy in front), without the
    /// trailing slash; usually empty.
    base: String,
    token: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so a new one is a compile error here rather than missing.
        let Endpoint {
            authority,
            base,
            token,
            timeout,
        } = self;
        f.debug_struct("Endpoint")
            .field("authority", authority)
            .field("base", base)
            .field("token", &crate::config::Redacted(token))
            .field("timeout", timeout)
            .finish()
    }
}

/// Why a call did not get the node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// No connection, or no complete reply in time: the node may be down or elsewhere.
    Unreachable(String),
    /// The token was missing or wrong (401).
    Unauthorized,
    /// The node understood the command and refused it (422), with its reason.
    Refused(String),
    /// Anything else: a 4xx/5xx we did not expect, or a reply that does not parse.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable(why) => write!(f, "cannot reach the admin API: {why}"),
            ClientError::Unauthorized => {
                write!(f, "the admin API refused the token (401): pass --token")
            }
            ClientError::Refused(why) => write!(f, "refused: {why}"),
            ClientError::Protocol(why) => write!(f, "unexpected answer from the admin API: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// The body of a 4xx/5xx from the API.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl Endpoint {
    /// `http://host:port[/prefix]` or plain `host:port`. TLS is not spoken: put the API
    /// behind a TLS-terminating proxy, or reach it through an SSH tunnel.
    pub fn parse(url: &str, token: Option<String>) -> Result<Endpoint, String> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "{url}: https is not spoken here; reach the admin API over plain HTTP \
                 (an SSH tunnel, or a TLS-terminating proxy in front of it)"
            ));
        } else if url.contains("://") {
            return Err(format!("{url}: only http:// URLs are understood"));
        } else {
            url
        };
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let has_port = match authority.rfind(':') {
            // `[::1]:9901` has a port; `[::1]` does not.
            Some(i) => !authority[i..].contains(']') && authority[i + 1..].parse::<u16>().is_ok(),
            None => false,
        };
        if authority.is_empty() || !has_port {
            return Err(format!(
                "{url}: expected http://HOST:PORT (the [admin] listen address of the node)"
            ));
        }
        if let Some(t) = &token {
            // A header value cannot carry control characters; say so here rather than
            // failing every call later.
            if HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err("the token has characters that cannot go in a header".into());
            }
        }
        Ok(Endpoint {
            authority: authority.to_string(),
            base: base.to_string(),
            token,
            timeout: Duration::from_secs(5),
        })
    }

    /// The same endpoint with another limit on each whole call.
    pub fn with_timeout(mut self, timeout: Duration) -> Endpoint {
        self.timeout = timeout;
        self
    }

    /// `host:port`, for messages.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `GET /api/v1/snapshot`.
    pub async fn snapshot(&self) -> Result<Snapshot, ClientError> {
        let (status, body) = self.call(Method::GET, "/api/v1/snapshot", None).await?;
        expect_ok(status, &body)?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("the snapshot does not parse: {e}")))
    }

    /// `POST /api/v1/commands`.
    pub async fn command(&self, command: &Command) -> Result<CommandReply, ClientError> {
        let json = serde_json::to_vec(command)
            .map_err(|e| ClientError::Protocol(format!("the command does not encode: {e}")))?;
        let (status, body) = self
            .call(Method::POST, "/api/v1/commands", Some(json))
            .await?;
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            return Err(ClientError::Refused(error_message(&body)));
        }
        expect_ok(status, &body)?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("the reply does not parse: {e}")))
    }

    /// A GET of any path, with its status and body as text (`/metrics`, `/readyz`).
    pub async fn get_text(&self, path: &str) -> Result<(StatusCode, String), ClientError> {
        let (status, body) = self.call(Method::GET, path, None).await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized);
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Unreachable(format!(
                "{} did not answer within {:?}",
                self.authority, self.timeout
            ))),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let unreachable =
            |e: &dyn fmt::Display| ClientError::Unreachable(format!("{}: {e}", self.authority));
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(&e))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        // The connection task ends with the exchange: the request says `close`.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::HOST, &self.authority)
            .header(header::CONNECTION, "close")
            .header(
                header::USER_AGENT,
                concat!("opsconsole/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(format!("cannot build the request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| unreachable(&e))?
            .to_bytes();
        Ok((status, body))
    }
}

fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

fn expect_ok(status: StatusCode, body: &[u8]) -> Result<(), ClientError> {
    match status {
        StatusCode::OK => Ok(()),
        StatusCode::UNAUTHORIZED => Err(ClientError::Unauthorized),
        other => Err(ClientError::Protocol(format!(
            "{other}: {}",
            error_message(body)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_scheme_and_prefix() {
        let e = Endpoint::parse("http://127.0.0.1:9901", None).expect("plain");
        assert_eq!(
            (e.authority.as_str(), e.base.as_str()),
            ("127.0.0.1:9901", "")
        );
        let e = Endpoint::parse("127.0.0.1:9901/", None).expect("no scheme");
        assert_eq!(
            (e.authority.as_str(), e.base.as_str()),
            ("127.0.0.1:9901", "")
        );
        let e = Endpoint::parse("http://admin.example:80/node1/", None).expect("prefix");
        assert_eq!(
            (e.authority.as_str(), e.base.as_str()),
            ("admin.example:80", "/node1")
        );
        let e = Endpoint::parse("http://[::1]:9901", None).expect("v6");
        assert_eq!(e.authority, "[::1]:9901");
    }

    #[test]
    fn urls_the_client_cannot_use_are_refused_with_the_reason() {
        for (url, why) in [
            ("https://127.0.0.1:9901", "https"),
            ("ftp://127.0.0.1:9901", "only http"),
            ("http://127.0.0.1", "HOST:PORT"),
            ("http://[::1]", "HOST:PORT"),
            ("", "HOST:PORT"),
            ("http://127.0.0.1:notaport", "HOST:PORT"),
        ] {
            let e = Endpoint::parse(url, None).expect_err(url);
            assert!(e.contains(why), "{url}: {e}");
        }
        let e = Endpoint::parse("127.0.0.1:1", Some("bad\ntoken".into())).expect_err("newline");
        assert!(e.contains("header"), "{e}");
    }
}
