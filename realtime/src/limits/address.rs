//! The client's address: the peer of the TCP connection, or, when that peer is a trusted
//! reverse proxy (`TRUSTED_PROXIES`), the address the proxies name in `X-Forwarded-For`.
//!
//! Without trusted proxies the header is ignored: anyone can write it, so believing it would
//! let one client pose as any number of addresses and escape the per-address limits.

use std::net::IpAddr;

use axum::Extension;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;

use crate::config::cidr::{Cidr, canonical};

/// The peer of a request, as the server records it for every connection (absent only when a
/// router is served some other way).
pub(crate) type Peer = Option<Extension<ConnectInfo<std::net::SocketAddr>>>;

/// The peer's address (unspecified when unknown).
pub(crate) fn peer_ip(peer: Peer) -> IpAddr {
    peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(addr))| {
        addr.ip()
    })
}

/// The client's address. When `peer` is a trusted proxy, `X-Forwarded-For` is read from the
/// right (the hop nearest to us) and the first address that is not itself a trusted proxy is
/// the client; entries that do not parse end the walk (what lies left of them is unverifiable).
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_networks_and_matches_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.1.2.3")) && !c.contains(ip("11.0.0.1")));
        assert!(
            c.contains(ip("::ffff:10.9.9.9")),
            "IPv4-mapped addresses count as IPv4"
        );
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0/8", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = ["10.0.0.0/8".parse().unwrap()];
        let h = headers(&["203.0.113.7, 10.0.0.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &proxies), ip("203.0.113.7"));
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &proxies),
            ip("198.51.100.1"),
            "untrusted peer"
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &[]),
            ip("10.0.0.1"),
            "no trusted proxies"
        );
        // A client cannot choose its address by prepending entries: the rightmost untrusted
        // hop wins.
        let spoofed = headers(&["1.1.1.1", "203.0.113.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &spoofed, &proxies), ip("203.0.113.7"));
        let garbled = headers(&["1.1.1.1, garbage, 10.0.0.3"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &garbled, &proxies), ip("10.0.0.3"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &proxies),
            ip("10.0.0.1")
        );
    }
}
