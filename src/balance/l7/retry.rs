//! When a failed try may be tried again on another server, and what the client gets when it
//! may not. Pure: the decision table the proxy follows.

use hyper::{Method, StatusCode};

/// How one try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection to the server: nothing was sent.
    Connect,
    /// The server answered 502, 503 or 504.
    Status(StatusCode),
    /// No response head within the response timeout.
    Timeout,
    /// The request went out and the connection broke before a response head came back.
    Broken,
    /// The client's request body broke off (it closed or reset mid-upload): nothing to hold
    /// against the server, and nothing left to send anywhere else.
    ClientAborted,
    /// The client stopped sending its request body for the body timeout.
    ClientTimeout,
}

impl Failure {
    /// Whether the failure says something about the server (passive health counts it).
    pub fn is_server_fault(self) -> bool {
        !matches!(self, Failure::ClientAborted | Failure::ClientTimeout)
    }
}

/// What is known about the request when a try failed.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub method: &'a Method,
    /// The request had a body and (part of) it was sent: it cannot be sent again.
    pub body_sent: bool,
    /// Bytes of a response already went to the client.
    pub response_started: bool,
    pub retry_non_idempotent: bool,
}

/// RFC 9110 §9.2.2: sending these twice has the effect of sending them once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Statuses a retry may be worth it for: the server (or one behind it) could not serve.
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502..=504)
}

pub fn may_retry(failure: Failure, a: Attempt<'_>) -> bool {
    if a.response_started {
        return false; // the client has part of an answer: nothing can be redone
    }
    match failure {
        // The rest of the body is gone with the client, or not coming.
        Failure::ClientAborted | Failure::ClientTimeout => false,
        Failure::Connect => true, // nothing reached any server
        Failure::Status(s) if !is_retryable_status(s) => false,
        Failure::Status(_) | Failure::Timeout | Failure::Broken => {
            !a.body_sent && (is_idempotent(a.method) || a.retry_non_idempotent)
        }
    }
}

/// What the client gets when the last try failed this way (a server's own 5xx passes
/// through as it is, so it is not here).
pub fn client_status(failure: Failure) -> StatusCode {
    match failure {
        Failure::Connect => StatusCode::SERVICE_UNAVAILABLE,
        Failure::Status(s) => s,
        Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Failure::Broken => StatusCode::BAD_GATEWAY,
        Failure::ClientAborted => StatusCode::BAD_REQUEST,
        Failure::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_table_by_method_failure_and_bytes_sent() {
        let cases: [(&Method, bool, bool, bool, [bool; 4]); 8] = [
            // method, body sent, response started, retry_non_idempotent → connect 503 timeout broken
            (&Method::GET, false, false, false, [true, true, true, true]),
            (&Method::HEAD, false, false, false, [true, true, true, true]),
            (&Method::PUT, false, false, false, [true, true, true, true]),
            (
                &Method::POST,
                false,
                false,
                false,
                [true, false, false, false],
            ),
            (&Method::POST, false, false, true, [true, true, true, true]),
            (
                &Method::PUT,
                true,
                false,
                false,
                [true, false, false, false],
            ),
            (
                &Method::POST,
                true,
                false,
                true,
                [true, false, false, false],
            ),
            (
                &Method::GET,
                false,
                true,
                false,
                [false, false, false, false],
            ),
        ];
        for (method, body_sent, started, any, want) in cases {
            let got: Vec<bool> = [
                Failure::Connect,
                Failure::Status(StatusCode::SERVICE_UNAVAILABLE),
                Failure::Timeout,
                Failure::Broken,
            ]
            .iter()
            .map(|&f| {
                may_retry(
                    f,
                    Attempt {
                        method,
                        body_sent,
                        response_started: started,
                        retry_non_idempotent: any,
                    },
                )
            })
            .collect();
            assert_eq!(
                got, want,
                "{method} body_sent={body_sent} started={started} any={any}"
            );
        }
    }

    #[test]
    fn only_gateway_statuses_are_retried_and_failures_map_to_502_503_504() {
        let get = Attempt {
            method: &Method::GET,
            body_sent: false,
            response_started: false,
            retry_non_idempotent: false,
        };
        for (code, retry) in [
            (500, false),
            (501, false),
            (502, true),
            (504, true),
            (404, false),
        ] {
            let s = StatusCode::from_u16(code).expect("status");
            assert_eq!(may_retry(Failure::Status(s), get), retry, "{code}");
        }
        assert_eq!(
            client_status(Failure::Connect),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(client_status(Failure::Timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(client_status(Failure::Broken), StatusCode::BAD_GATEWAY);
        assert_eq!(
            client_status(Failure::ClientAborted),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            client_status(Failure::ClientTimeout),
            StatusCode::REQUEST_TIMEOUT
        );
        assert!(!may_retry(Failure::ClientTimeout, get));
        assert!(!Failure::ClientTimeout.is_server_fault());
        assert!(!may_retry(Failure::ClientAborted, get));
        assert!(!Failure::ClientAborted.is_server_fault() && Failure::Broken.is_server_fault());
    }
}
