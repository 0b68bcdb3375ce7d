//! Who the client is: its address (for sign-in budgets) and whether it reached us over TLS (for
//! Secure cookies). `X-Forwarded-For`, `X-Forwarded-Proto` and `Forwarded` are believed only when
//! the direct peer is a trusted proxy (`HERALD_TRUSTED_PROXIES`); anyone else could write them.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap};
use ipnet::IpNet;

/// The proxies whose forwarding headers are believed, and whether our own listener is TLS.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>, bool);

impl TrustedProxies {
    pub(crate) fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets, false)
    }

    /// Says every request came over TLS when `tls` (the listener itself is TLS).
    pub(crate) fn with_tls_listener(self, tls: bool) -> TrustedProxies {
        TrustedProxies(self.0, tls)
    }

    /// Whether the direct peer is a trusted proxy.
    pub(crate) fn trusts_peer(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|peer| self.trusts(peer))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the direct peer, or behind trusted proxies the rightmost
    /// `X-Forwarded-For` hop that is not itself a trusted proxy.
    pub(crate) fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let mut client = peer?.to_canonical();
        if !self.trusts(client) {
            return Some(client);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.into_iter().rev() {
            if !self.trusts(client) {
                break;
            }
            match parse_hop(hop) {
                Some(ip) => client = ip.to_canonical(),
                // A hop we cannot read: the last proxy we trust is all we know.
                None => break,
            }
        }
        Some(client)
    }

    /// Whether the browser reached us over TLS: our listener is TLS, or a trusted proxy in front
    /// says so (`X-Forwarded-Proto: https` or `Forwarded: proto=https`, the last value of either).
    pub(crate) fn over_tls(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> bool {
        if self.1 {
            return true;
        }
        if !self.trusts_peer(peer) {
            return false;
        }
        let last = |name: header::HeaderName| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .map(|v| v.trim().to_ascii_lowercase())
        };
        let forwarded_proto = last(header::HeaderName::from_static("x-forwarded-proto"))
            .is_some_and(|v| v == "https");
        let forwarded = last(header::FORWARDED).is_some_and(|v| {
            v.split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .any(|(k, v)| k.eq_ignore_ascii_case("proto") && v.trim_matches('"') == "https")
        });
        forwarded_proto || forwarded
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`[v6]:port`, `v4:port`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim_matches('"');
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ]);
        let none = proxies(&[]);
        assert_eq!(
            none.client(Some(ip("198.51.100.1")), &h),
            Some(ip("198.51.100.1"))
        );
        assert!(!none.over_tls(Some(ip("198.51.100.1")), &h));
        let other = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            other.client(Some(ip("198.51.100.1")), &h),
            Some(ip("198.51.100.1"))
        );
        assert!(!other.over_tls(Some(ip("198.51.100.1")), &h));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "fd00::/8"]);
        // The client wrote a fake first hop; the proxies appended the real ones.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4, 203.0.113.9"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(
            trusted.client(Some(ip("10.0.0.1")), &h),
            Some(ip("203.0.113.9"))
        );
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:443, fd00::1")]);
        assert_eq!(
            trusted.client(Some(ip("fd00::2")), &h),
            Some(ip("2001:db8::5"))
        );
        let h = headers(&[("x-forwarded-for", "203.0.113.9:5555")]);
        assert_eq!(
            trusted.client(Some(ip("::ffff:10.0.0.1")), &h),
            Some(ip("203.0.113.9"))
        );
        // Without the header, or with garbage, the proxy itself is the client.
        assert_eq!(
            trusted.client(Some(ip("10.0.0.1")), &HeaderMap::new()),
            Some(ip("10.0.0.1"))
        );
        let h = headers(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(
            trusted.client(Some(ip("10.0.0.1")), &h),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn tls_is_believed_from_a_trusted_proxy_only() {
        let trusted = proxies(&["127.0.0.1/32"]);
        let h = headers(&[("x-forwarded-proto", "https")]);
        assert!(trusted.over_tls(Some(ip("127.0.0.1")), &h));
        assert!(!trusted.over_tls(Some(ip("127.0.0.2")), &h));
        assert!(!trusted.over_tls(None, &h));
        let h = headers(&[("forwarded", "for=1.2.3.4;proto=https")]);
        assert!(trusted.over_tls(Some(ip("127.0.0.1")), &h));
        let h = headers(&[("x-forwarded-proto", "http")]);
        assert!(!trusted.over_tls(Some(ip("127.0.0.1")), &h));
    }
}
