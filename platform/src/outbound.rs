//! Where Cascade may send requests on a creator's behalf (webhook
//! endpoints registered through the API): never to this machine, its
//! private network or link-local metadata services, unless the operator
//! allows it (server-side request forgery). Checked when an endpoint is
//! registered (literal addresses, names like `localhost`) and again for
//! every address a name resolves to at delivery time, so a name that later
//! resolves to a private address (DNS rebinding) is still refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a URL may not be a target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    /// Not an absolute http(s) URL with a host.
    #[error("the URL must be an absolute http:// or https:// URL with a host")]
    NotHttp,
    /// User names and passwords in URLs are refused (they leak into logs).
    #[error("the URL may not carry a user name or password")]
    Credentials,
    /// The host is this machine, a private or link-local network, or another
    /// address that is not reachable on the public internet.
    #[error("the URL's host {0} is not a public address")]
    NotPublic(String),
    /// Longer than any reasonable URL.
    #[error("the URL is longer than {0} characters")]
    TooLong(usize),
}

/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Whether `ip` is a public unicast address (not loopback, private,
/// link-local, shared address space, documentation, multicast, ...).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)) // NAT64 (maps to IPv4)
}

/// Checks a URL a creator registers: absolute http(s), no credentials, and
/// (unless `allow_private`) a host that is not an address or name of this
/// machine or a private network. Names are resolved only at delivery.
pub fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, TargetRefused> {
    if raw.len() > MAX_URL_LEN {
        return Err(TargetRefused::TooLong(MAX_URL_LEN));
    }
    let url = url::Url::parse(raw).map_err(|_| TargetRefused::NotHttp)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetRefused::NotHttp);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetRefused::Credentials);
    }
    let host = url.host().ok_or(TargetRefused::NotHttp)?;
    if allow_private {
        return Ok(url);
    }
    let refused = |h: &str| TargetRefused::NotPublic(h.to_owned());
    match host {
        url::Host::Ipv4(ip) if !is_public(IpAddr::V4(ip)) => Err(refused(&ip.to_string())),
        url::Host::Ipv6(ip) if !is_public(IpAddr::V6(ip)) => Err(refused(&ip.to_string())),
        url::Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost"
                || name.ends_with(".localhost")
                || name.ends_with(".local")
                || !name.contains('.')
            {
                Err(refused(&name))
            } else {
                Ok(url)
            }
        }
        _ => Ok(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        assert!(check_url("https://hooks.example.com/cascade", false).is_ok());
        assert!(check_url("http://93.184.216.34:8080/x", false).is_ok());
        for (url, refused) in [
            ("ftp://example.com/", TargetRefused::NotHttp),
            ("not a url", TargetRefused::NotHttp),
            ("file:///etc/passwd", TargetRefused::NotHttp),
            ("https://user:pw@example.com/", TargetRefused::Credentials),
            (
                "http://127.0.0.1/",
                TargetRefused::NotPublic("127.0.0.1".into()),
            ),
            ("http://[::1]:80/", TargetRefused::NotPublic("::1".into())),
            (
                "http://169.254.169.254/latest/meta-data",
                TargetRefused::NotPublic("169.254.169.254".into()),
            ),
            (
                "http://localhost:8080/",
                TargetRefused::NotPublic("localhost".into()),
            ),
            (
                "http://printer.local/",
                TargetRefused::NotPublic("printer.local".into()),
            ),
            (
                "http://intranet/",
                TargetRefused::NotPublic("intranet".into()),
            ),
            (
                "http://2130706433/",
                TargetRefused::NotPublic("127.0.0.1".into()),
            ),
        ] {
            assert_eq!(check_url(url, false).err(), Some(refused), "{url}");
        }
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert_eq!(
            check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN)), false).err(),
            Some(TargetRefused::TooLong(MAX_URL_LEN))
        );
    }
}
