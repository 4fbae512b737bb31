//! The server under load: its URL, parsed and checked once, and the
//! socket addresses it resolves to.
//!
//! A load generator aimed at the wrong host is a denial-of-service tool, so
//! a [`Target`] is loopback-only (`127.0.0.0/8`, `::1`, `localhost`) unless
//! the caller explicitly allows remote hosts; a `localhost` name must also
//! resolve to loopback addresses only.

use std::net::{IpAddr, SocketAddr};

use hyper::Uri;

/// The URL is unusable, or points where the caller did not allow.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not an `http://host[:port][/]` URL.
    #[error("invalid --url {url:?}: {reason}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host is not a loopback address and remote hosts are not allowed.
    #[error(
        "refusing to load {host:?}: not a loopback address (127.0.0.0/8, ::1, localhost); \
         pass --allow-remote to load a remote server"
    )]
    NotLoopback {
        /// The host as given.
        host: String,
    },
    /// The host name could not be resolved.
    #[error("cannot resolve {host:?}")]
    Resolve {
        /// The host as given.
        host: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host name resolved to no usable address.
    #[error("{host:?} resolves to no {wanted}address")]
    NoAddress {
        /// The host as given.
        host: String,
        /// `"loopback "` when only loopback addresses were acceptable.
        wanted: &'static str,
    },
}

/// A parsed `http://host[:port]` URL that passed the loopback check.
///
/// Fields are private: a `Target` only exists if [`Target::parse`] accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host[:port]` as given: the `Host` header of every request.
    authority: String,
    /// The host without IPv6 brackets: what gets resolved.
    host: String,
    port: u16,
    allow_remote: bool,
}

impl Target {
    /// Parses `url` (`http://host[:port][/]`; `http://` may be left out).
    /// Without `allow_remote`, the host must be a loopback IP address or
    /// `localhost`. HTTPS, user info, paths and queries are refused.
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self, TargetError> {
        let invalid = |reason| TargetError::Invalid {
            url: url.to_owned(),
            reason,
        };
        let with_scheme;
        let full = if url.contains("://") {
            url
        } else {
            with_scheme = format!("http://{url}");
            &with_scheme
        };
        let uri: Uri = full
            .parse()
            .map_err(|_| invalid("expected http://HOST[:PORT]"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(invalid("https is not supported; use http://")),
            _ => return Err(invalid("expected http://HOST[:PORT]")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("expected http://HOST[:PORT]"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user info is not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid(
                "give the server's root URL, without a path or query",
            ));
        }
        // `host()` keeps IPv6 brackets, so what follows it is `:port` or nothing.
        let port = match authority.as_str()[authority.host().len()..].strip_prefix(':') {
            None => 80,
            Some(digits) => digits
                .parse::<u16>()
                .map_err(|_| invalid("the port must be a number from 0 to 65535"))?,
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        if !allow_remote && !is_loopback_host(&host) {
            return Err(TargetError::NotLoopback { host });
        }
        Ok(Self {
            authority: authority.as_str().to_owned(),
            port,
            host,
            allow_remote,
        })
    }

    /// `http://host:port`, for reports.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// `host[:port]` as given: the value of the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The addresses to try, in resolver order. Without `allow_remote`, only
    /// loopback addresses are kept, and none is an error.
    pub(crate) async fn resolve(&self) -> Result<Vec<SocketAddr>, TargetError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| TargetError::Resolve {
                host: self.host.clone(),
                source,
            })?
            .filter(|a| self.allow_remote || a.ip().is_loopback())
            .collect();
        if addrs.is_empty() {
            return Err(TargetError::NoAddress {
                host: self.host.clone(),
                wanted: if self.allow_remote { "" } else { "loopback " },
            });
        }
        Ok(addrs)
    }
}

/// `127.0.0.0/8`, `::1` or the name `localhost` (whose addresses
/// [`Target::resolve`] checks again).
fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_accepted() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.9.8.7",
            "http://[::1]:9000",
            "http://localhost:8080",
            "http://LOCALHOST",
            "127.0.0.1:8080",
        ] {
            assert!(
                Target::parse(url, false).is_ok(),
                "{url} should be accepted"
            );
        }
    }

    #[test]
    fn non_loopback_urls_are_refused_without_allow_remote() {
        for url in [
            "http://10.0.0.1:8080",
            "http://128.0.0.1",
            "http://0.0.0.0:8080",
            "http://[::2]:80",
            "http://[::ffff:10.0.0.1]:80",
            "http://example.com",
            "http://localhost.example.com",
        ] {
            assert!(
                matches!(
                    Target::parse(url, false),
                    Err(TargetError::NotLoopback { .. })
                ),
                "{url} should be refused"
            );
            assert!(
                Target::parse(url, true).is_ok(),
                "{url} is fine with --allow-remote"
            );
        }
    }

    #[test]
    fn malformed_urls_are_refused_even_with_allow_remote() {
        for url in [
            "https://127.0.0.1:8443",
            "ftp://127.0.0.1",
            "http://127.0.0.1:8080/v1",
            "http://127.0.0.1:8080/?a=b",
            "http://user@127.0.0.1",
            "http://",
            "",
            "http://127.0.0.1:notaport",
            "http://127.0.0.1:",
            "http://127.0.0.1:65536",
        ] {
            assert!(
                matches!(Target::parse(url, true), Err(TargetError::Invalid { .. })),
                "{url} should be invalid"
            );
        }
    }

    #[test]
    fn port_defaults_to_80_and_host_header_keeps_the_authority() {
        let t = Target::parse("http://[::1]", false).expect("loopback");
        assert_eq!(t.port, 80);
        assert_eq!(t.host, "::1");
        assert_eq!(t.authority(), "[::1]");
        assert_eq!(t.url(), "http://[::1]");
        let t = Target::parse("127.0.0.1:8081", false).expect("loopback");
        assert_eq!(t.authority(), "127.0.0.1:8081");
        assert_eq!(t.port, 8081);
    }

    #[tokio::test]
    async fn an_ip_target_resolves_to_itself() {
        let t = Target::parse("http://127.0.0.2:81", false).expect("loopback");
        assert_eq!(
            t.resolve().await.expect("an IP needs no lookup"),
            vec![SocketAddr::from(([127, 0, 0, 2], 81))]
        );
    }
}
