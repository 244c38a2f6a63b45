//! `--public-url`: this host's own address, for negotiate's redirect.

use axum::http::{HeaderMap, Uri, header};

/// A host's public URL (`http://10.0.0.5:5000`, `https://a.example.com/rt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// Without a trailing slash.
    base: String,
    /// `host:port`, lowercased, the port explicit.
    authority: String,
}

impl PublicUrl {
    /// Reads an absolute http(s) URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("--public-url {text}: not a URL ({e})"))?;
        let scheme = uri.scheme_str().unwrap_or_default();
        let default_port = match scheme {
            "http" => 80,
            "https" => 443,
            _ => {
                return Err(format!(
                    "--public-url {text}: must start with http:// or https://"
                ));
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--public-url {text}: has no host"))?;
        if uri.query().is_some() {
            return Err(format!("--public-url {text}: must not have a query"));
        }
        Ok(Self {
            base: text.trim_end_matches('/').to_owned(),
            authority: format!(
                "{}:{}",
                authority.host().to_ascii_lowercase(),
                authority.port_u16().unwrap_or(default_port)
            ),
        })
    }

    /// The URL of a hub at this address.
    pub fn hub_url(&self, hub: &str) -> String {
        format!("{}/{hub}", self.base)
    }

    /// Whether a request came to this address (its `Host` header names it), rather than
    /// through another one such as a load balancer's.
    pub fn is_addressed_by(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        let (own_host, own_port) = self
            .authority
            .rsplit_once(':')
            .unwrap_or((&self.authority, ""));
        authority.host().eq_ignore_ascii_case(own_host)
            && authority
                .port_u16()
                .map_or(own_port == "80" || own_port == "443", |p| {
                    p.to_string() == own_port
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().expect("header"));
        headers
    }

    #[test]
    fn tells_its_own_address_from_a_balancers() {
        let url = PublicUrl::parse("http://127.0.0.1:5001/").expect("valid");
        assert_eq!(url.hub_url("chat"), "http://127.0.0.1:5001/chat");
        assert!(url.is_addressed_by(&host("127.0.0.1:5001")));
        assert!(!url.is_addressed_by(&host("127.0.0.1:8080")));
        assert!(
            !url.is_addressed_by(&host("127.0.0.1")),
            "port 80 is not 5001"
        );
        assert!(!url.is_addressed_by(&HeaderMap::new()));
        let url = PublicUrl::parse("https://RT.example.com/base").expect("valid");
        assert!(url.is_addressed_by(&host("rt.example.com")));
        assert_eq!(url.hub_url("chat"), "https://RT.example.com/base/chat");
    }

    #[test]
    fn refuses_what_is_not_an_http_url() {
        assert!(PublicUrl::parse("ftp://x").is_err());
        assert!(PublicUrl::parse("localhost:5000").is_err());
        assert!(PublicUrl::parse("http://x/?a=1").is_err());
    }
}
