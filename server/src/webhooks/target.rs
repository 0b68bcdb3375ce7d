//! Where webhook requests may go. A tenant chooses the URL, so without a check a webhook is a
//! request forgery tool against the host's own services (Herald's REST and dashboard on loopback,
//! the database, Redis, cloud metadata at 169.254.169.254). Destinations are checked after DNS
//! resolution, by the HTTP client's own resolver, so the address checked is the address connected
//! to (a name that resolves differently a second time cannot switch it: there is no second time).
//! IP-literal URLs (the URL parser normalises decimal, octal and hex IPv4 forms) are checked
//! before the request. The operator may allow some private ranges (`HERALD_WEBHOOK_ALLOW_PRIVATE`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use ipnet::IpNet;
use reqwest::Url;

/// Ranges no webhook may reach unless allowed: private, loopback, link-local, multicast,
/// unspecified, CGNAT, documentation, benchmarking, reserved; IPv6 ULA, site-local, NAT64,
/// 6to4 and Teredo (they embed IPv4 addresses) and the IPv4-mapped/compatible forms (checked
/// as the IPv4 address they carry).
const FORBIDDEN: [&str; 27] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

fn forbidden() -> &'static [IpNet] {
    static NETS: OnceLock<Vec<IpNet>> = OnceLock::new();
    NETS.get_or_init(|| FORBIDDEN.iter().filter_map(|n| n.parse().ok()).collect())
}

/// The IPv4 address an IPv6 address carries when it is IPv4-mapped (`::ffff:a.b.c.d`) or
/// IPv4-compatible (`::a.b.c.d`, deprecated); other addresses as they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0, 0, 0, 0, 0, 0]
                && v6 != Ipv6Addr::UNSPECIFIED
                && v6 != Ipv6Addr::LOCALHOST
            {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
        IpAddr::V4(_) => ip,
    }
}

/// How long registration waits for DNS before accepting a name (it is checked at every request).
const REGISTRATION_LOOKUP: std::time::Duration = std::time::Duration::from_secs(3);

/// Which destinations webhook requests may reach.
#[derive(Debug, Clone, Default)]
pub struct Destinations {
    allow: Arc<Vec<IpNet>>,
}

impl Destinations {
    /// Public addresses only, plus the private ranges in `allow`.
    pub fn new(allow: Vec<IpNet>) -> Destinations {
        Destinations {
            allow: Arc::new(allow),
        }
    }

    /// Whether a request may go to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let in_list = |nets: &[IpNet]| nets.iter().any(|n| n.contains(&ip));
        in_list(&self.allow) || !in_list(forbidden())
    }

    /// The addresses of `host` a request may go to (an error when there are none).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Refused::Unresolved)?
            .collect();
        let permitted: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.permits(a.ip()))
            .collect();
        if permitted.is_empty() {
            if found.is_empty() {
                return Err(Refused::Unresolved);
            }
            return Err(Refused::Private(found[0].ip()));
        }
        Ok(permitted)
    }

    /// Checks a URL about to be registered: an IP literal must be permitted; a name that
    /// resolves must resolve to at least one permitted address (a name that does not resolve yet
    /// is accepted: it is checked again at every request).
    pub async fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = Url::parse(url).map_err(|e| format!("invalid webhook URL: {e}"))?;
        let port = parsed.port_or_known_default().unwrap_or(80);
        match host_of(&parsed) {
            None => Err("invalid webhook URL: no host".into()),
            Some(UrlHost::Ip(ip)) => self.check_ip(ip),
            // A slow resolver does not hold the form up: the request is checked anyway.
            Some(UrlHost::Name(name)) => {
                match tokio::time::timeout(REGISTRATION_LOOKUP, self.resolve(&name, port)).await {
                    Ok(Err(Refused::Private(ip))) => Err(refusal(ip)),
                    _ => Ok(()),
                }
            }
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(refusal(ip))
        }
    }

    /// Whether a request to `url` may start: an IP-literal host must be permitted (names are
    /// checked by [`GuardedResolver`] when connecting).
    pub fn literal_permitted(&self, url: &Url) -> bool {
        match host_of(url) {
            Some(UrlHost::Ip(ip)) => self.permits(ip),
            Some(UrlHost::Name(_)) => true,
            None => false,
        }
    }

    /// The HTTP client's resolver, which only hands out permitted addresses.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver {
            destinations: self.clone(),
        })
    }
}

/// A URL's host: an address (the parser has normalised numeric IPv4 forms) or a name.
enum UrlHost {
    Ip(IpAddr),
    Name(String),
}

fn host_of(url: &Url) -> Option<UrlHost> {
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => UrlHost::Ip(ip),
        Err(_) => UrlHost::Name(host.to_owned()),
    })
}

fn refusal(ip: IpAddr) -> String {
    format!(
        "webhook destination {ip} is a private, loopback, link-local or reserved address; \
         webhooks may only reach public addresses (the operator may allow ranges with \
         HERALD_WEBHOOK_ALLOW_PRIVATE)"
    )
}

/// Why a destination was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The name has no address.
    #[error("the name does not resolve")]
    Unresolved,
    /// Every address of the name is private (the first one is named).
    #[error("refused destination {0}: private, loopback, link-local or reserved")]
    Private(IpAddr),
}

/// A `reqwest` resolver that drops addresses webhooks may not reach and fails when none is left.
#[derive(Debug)]
pub struct GuardedResolver {
    destinations: Destinations,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let destinations = self.destinations.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match destinations.resolve(&host, 0).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(refused) => {
                    if let Refused::Private(ip) = refused {
                        tracing::warn!(%host, %ip, "webhook request refused: the name resolves to a private or reserved address (HERALD_WEBHOOK_ALLOW_PRIVATE)");
                    }
                    Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        })
    }
}

/// The header rule lives with the endpoints it guards (`tenants`, below this module).
pub use crate::tenants::header_allowed;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cidr_list;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn private_and_reserved_addresses_are_refused_and_public_ones_permitted() {
        let strict = Destinations::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
        ] {
            assert!(!strict.permits(ip(refused)), "{refused} must be refused");
        }
        for permitted in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(
                strict.permits(ip(permitted)),
                "{permitted} must be permitted"
            );
        }
        let allowing = Destinations::new(parse_cidr_list("127.0.0.0/8, ::1").unwrap());
        assert!(allowing.permits(ip("127.0.0.1")));
        assert!(allowing.permits(ip("::ffff:127.0.0.1")));
        assert!(allowing.permits(ip("::1")));
        assert!(!allowing.permits(ip("10.0.0.1")));
        assert!(parse_cidr_list("10.0.0.0/33").is_err());
        assert!(parse_cidr_list("nonsense").is_err());
    }

    #[test]
    fn identity_routing_and_hop_by_hop_headers_are_not_allowed() {
        for name in [
            "Host",
            "cookie",
            "AUTHORIZATION",
            "Transfer-Encoding",
            "Proxy-Foo",
            "X-Forwarded-Host",
            "x-pusher-key",
            "Content-Length",
            "Upgrade",
        ] {
            assert!(!header_allowed(name), "{name}");
        }
        for name in ["X-Webhook-Token", "X-Api-Key", "X-Extra"] {
            assert!(header_allowed(name), "{name}");
        }
    }

    #[test]
    fn the_url_parser_normalises_numeric_ipv4_forms_before_the_check() {
        let strict = Destinations::default();
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
        ] {
            let parsed = Url::parse(url).unwrap();
            assert_eq!(parsed.host_str(), Some("127.0.0.1"), "{url}");
            assert!(!strict.literal_permitted(&parsed), "{url}");
        }
    }
}
