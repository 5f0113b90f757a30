//! Request routing as nginx does it: the Host picks a virtual host (an exact name first,
//! then the longest `*.leading` wildcard, then the longest `trailing.*` wildcard, then the
//! default), and within it the longest matching path prefix picks the pool. Pure: built
//! once per config, read by every request without a lock.

/// One route as configured: `host` (absent = the default host), a path prefix, and the
/// index of the pool it sends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Option<String>,
    pub path: String,
    pub pool: usize,
}

/// How a host pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Suffix(String),
    /// `www.*`: stored as `www.`.
    Prefix(String),
}

impl HostPattern {
    fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let wildcard_inside = |s: &str| s.contains('*');
        if let Some(rest) = lower.strip_prefix('*') {
            if !rest.starts_with('.') || rest.len() < 2 || wildcard_inside(rest) {
                return Err(format!(
                    "host '{text}': a leading wildcard looks like *.example.com"
                ));
            }
            Ok(HostPattern::Suffix(rest.to_string()))
        } else if let Some(rest) = lower.strip_suffix('*') {
            if !rest.ends_with('.') || rest.len() < 2 || wildcard_inside(rest) {
                return Err(format!(
                    "host '{text}': a trailing wildcard looks like www.example.*"
                ));
            }
            Ok(HostPattern::Prefix(rest.to_string()))
        } else if lower.is_empty() || wildcard_inside(&lower) || lower.contains('/') {
            Err(format!(
                "host '{text}' is not a host name, *.leading or trailing.* pattern"
            ))
        } else {
            Ok(HostPattern::Exact(lower))
        }
    }
}

/// One path prefix of a virtual host: the pool it sends to, and which configured route
/// it came from.
#[derive(Debug, Clone)]
struct PathRoute {
    prefix: String,
    matched: Matched,
}

/// A host's routes, longest path first.
#[derive(Debug, Clone)]
struct VirtualHost {
    pattern: Option<HostPattern>,
    paths: Vec<PathRoute>,
}

/// Where a request goes: its pool, and which configured route took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched {
    pub pool: usize,
    pub route: usize,
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    hosts: Vec<VirtualHost>,
}

impl RouteTable {
    /// Builds the table; an error names the route (by position) and what is wrong.
    pub fn new(routes: &[Route]) -> Result<RouteTable, String> {
        let mut table = RouteTable::default();
        for (id, r) in routes.iter().enumerate() {
            if !r.path.starts_with('/') {
                return Err(format!(
                    "route {}: path '{}' must start with /",
                    id + 1,
                    r.path
                ));
            }
            let pattern = r
                .host
                .as_deref()
                .map(HostPattern::parse)
                .transpose()
                .map_err(|e| format!("route {}: {e}", id + 1))?;
            let at = match table.hosts.iter().position(|h| h.pattern == pattern) {
                Some(at) => at,
                None => {
                    table.hosts.push(VirtualHost {
                        pattern,
                        paths: Vec::new(),
                    });
                    table.hosts.len() - 1
                }
            };
            let host = &mut table.hosts[at];
            if host.paths.iter().any(|p| p.prefix == r.path) {
                return Err(format!(
                    "route {}: host {} already has a route for path '{}'",
                    id + 1,
                    r.host.as_deref().unwrap_or("(default)"),
                    r.path
                ));
            }
            host.paths.push(PathRoute {
                prefix: r.path.clone(),
                matched: Matched {
                    pool: r.pool,
                    route: id,
                },
            });
        }
        for host in &mut table.hosts {
            host.paths
                .sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
        }
        Ok(table)
    }

    /// The route for a request to `host` (the Host header, port and case as sent) and
    /// `path`. `None`: no virtual host or no path prefix matches (a 404).
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<Matched> {
        let at = self.virtual_host(host)?;
        self.hosts[at]
            .paths
            .iter()
            .find(|p| path.starts_with(p.prefix.as_str()))
            .map(|p| p.matched)
    }

    fn virtual_host(&self, host: Option<&str>) -> Option<usize> {
        let name = host.map(|h| strip_port(h).trim_end_matches('.').to_ascii_lowercase());
        let find = |want: &dyn Fn(&HostPattern) -> Option<usize>| {
            self.hosts
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.pattern.as_ref().and_then(want).map(|len| (i, len)))
                .max_by_key(|&(_, len)| len)
                .map(|(i, _)| i)
        };
        if let Some(name) = &name {
            let exact = find(&|p| matches!(p, HostPattern::Exact(e) if e == name).then_some(0));
            let suffix = || {
                find(&|p| match p {
                    HostPattern::Suffix(s) if name.ends_with(s.as_str()) => Some(s.len()),
                    _ => None,
                })
            };
            let prefix = || {
                find(&|p| match p {
                    HostPattern::Prefix(s) if name.starts_with(s.as_str()) => Some(s.len()),
                    _ => None,
                })
            };
            if let Some(i) = exact.or_else(suffix).or_else(prefix) {
                return Some(i);
            }
        }
        self.hosts.iter().position(|h| h.pattern.is_none())
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, pool: usize) -> Route {
        Route {
            host: host.map(str::to_string),
            path: path.to_string(),
            pool,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route(Some("www.example.com"), "/", 0),
            route(Some("www.example.com"), "/api/", 1),
            route(Some("www.example.com"), "/api/v2/", 2),
            route(Some("*.example.com"), "/", 3),
            route(Some("*.shop.example.com"), "/", 4),
            route(Some("mail.*"), "/", 5),
            route(None, "/static/", 6),
            route(None, "/", 7),
        ])
        .expect("valid routes")
    }

    fn pool(t: &RouteTable, host: Option<&str>, path: &str) -> Option<usize> {
        t.route(host, path).map(|m| m.pool)
    }

    #[test]
    fn the_longest_path_prefix_wins_within_a_host() {
        let t = table();
        let www = Some("www.example.com");
        assert_eq!(pool(&t, www, "/index.html"), Some(0));
        assert_eq!(pool(&t, www, "/api/users"), Some(1));
        assert_eq!(pool(&t, www, "/api/v2/users"), Some(2));
        assert_eq!(
            pool(&t, www, "/api"),
            Some(0),
            "a prefix is matched as written"
        );
    }

    #[test]
    fn exact_then_longest_leading_then_trailing_wildcard_then_default() {
        let t = table();
        assert_eq!(pool(&t, Some("WWW.Example.com:8080"), "/"), Some(0));
        assert_eq!(pool(&t, Some("api.example.com"), "/"), Some(3));
        assert_eq!(
            pool(&t, Some("a.shop.example.com"), "/"),
            Some(4),
            "longest *. wins"
        );
        assert_eq!(
            pool(&t, Some("mail.example.com"), "/"),
            Some(3),
            "*.leading before trailing.*"
        );
        assert_eq!(pool(&t, Some("mail.example.org"), "/"), Some(5));
        assert_eq!(pool(&t, Some("other.org"), "/static/a.css"), Some(6));
        assert_eq!(pool(&t, Some("other.org"), "/x"), Some(7));
        assert_eq!(pool(&t, None, "/x"), Some(7), "no Host: the default host");
        assert_eq!(pool(&t, Some("example.com."), "/"), Some(7));
    }

    #[test]
    fn the_matched_route_is_the_configured_one() {
        let t = table();
        let m = t
            .route(Some("www.example.com"), "/api/v2/x")
            .expect("route");
        assert_eq!(m, Matched { pool: 2, route: 2 });
        assert_eq!(t.route(Some("x.org"), "/static/").map(|m| m.route), Some(6));
    }

    #[test]
    fn no_matching_host_or_path_is_no_route() {
        let t = RouteTable::new(&[route(Some("a.example"), "/app/", 0)]).expect("valid");
        assert_eq!(pool(&t, Some("b.example"), "/app/"), None);
        assert_eq!(pool(&t, Some("a.example"), "/other"), None);
    }

    #[test]
    fn bad_patterns_and_duplicates_are_refused_with_the_route_number() {
        for (host, path) in [
            (Some("*example.com"), "/"),
            (Some("www.*.com"), "/"),
            (Some("www*"), "/"),
            (Some(""), "/"),
            (None, "api"),
        ] {
            let e = RouteTable::new(&[route(host, path, 0)]).expect_err("refused");
            assert!(e.starts_with("route 1:"), "{e}");
        }
        let e = RouteTable::new(&[route(None, "/", 0), route(None, "/", 1)]).expect_err("dup");
        assert!(e.contains("route 2") && e.contains("already"), "{e}");
    }

    #[test]
    fn ports_are_stripped_from_names_and_v6_literals() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
    }
}
