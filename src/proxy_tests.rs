use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A v2 header as HAProxy's `send-proxy-v2` writes it: PROXY, TCP over IPv4 or IPv6.
fn v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let addrs: v2::Addresses = (client, server).into();
    v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, v2::Protocol::Stream, addrs)
        .build()
        .unwrap()
}

#[test]
fn v1_headers() {
    let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
    assert_eq!(
        parse(h),
        Parsed::Header {
            len: 41,
            client: Some("192.0.2.7:51234".parse().unwrap())
        }
    );
    let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 80\r\n";
    assert_eq!(
        parse(h),
        Parsed::Header {
            len: h.len(),
            client: Some("[2001:db8::7]:4000".parse().unwrap())
        }
    );
    assert_eq!(
        parse(b"PROXY UNKNOWN\r\nGET"),
        Parsed::Header {
            len: 15,
            client: None
        }
    );
    // Every proper prefix asks for more.
    let full = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\n";
    for n in 0..full.len() {
        assert_eq!(parse(&full[..n]), Parsed::Incomplete, "{n}");
    }
}

#[test]
fn v2_headers() {
    let client: SocketAddr = "127.0.0.7:40000".parse().unwrap();
    let mut h = v2(client, "127.0.0.1:80".parse().unwrap());
    let len = h.len();
    for n in 0..len {
        assert_eq!(parse(&h[..n]), Parsed::Incomplete, "{n}");
    }
    h.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(
        parse(&h),
        Parsed::Header {
            len,
            client: Some(client)
        }
    );
    let client: SocketAddr = "[2001:db8::7]:1".parse().unwrap();
    let h = v2(client, "[::1]:80".parse().unwrap());
    assert_eq!(
        parse(&h),
        Parsed::Header {
            len: h.len(),
            client: Some(client)
        }
    );
    // LOCAL (a health check): no address, whatever the header carries.
    let addrs: v2::Addresses = (client, client).into();
    let local =
        v2::Builder::with_addresses(v2::Version::Two | v2::Command::Local, v2::Protocol::Stream, addrs)
            .build()
            .unwrap();
    assert_eq!(
        parse(&local),
        Parsed::Header {
            len: local.len(),
            client: None
        }
    );
}

#[test]
fn not_headers() {
    for bad in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"\x16\x03\x01",
        b"PRI * HTTP/2.0",
        b"PROXY TCP4 nowhere 10.0.0.1 1 2\r\n",
        b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n",
        b"proxy TCP4",
        // The v2 signature with version 1.
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c",
    ] {
        assert!(
            matches!(parse(bad), Parsed::Invalid(_)),
            "{bad:?}: {:?}",
            parse(bad)
        );
    }
    // A v1 header longer than the protocol allows, without its CRLF.
    let long = format!("PROXY TCP4 {}", "1".repeat(200));
    assert!(matches!(parse(long.as_bytes()), Parsed::Invalid(_)));
}

#[test]
fn cidrs() {
    let c: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(c.contains(Ipv4Addr::new(10, 1, 2, 3).into()));
    assert!(!c.contains(Ipv4Addr::new(11, 0, 0, 1).into()));
    assert!(c.contains(Ipv4Addr::new(10, 9, 9, 9).to_ipv6_mapped().into()));
    assert!(!c.contains(Ipv6Addr::LOCALHOST.into()));
    let one: Cidr = "127.0.0.7".parse().unwrap();
    assert_eq!(one.to_string(), "127.0.0.7/32");
    assert!(one.contains("127.0.0.7".parse().unwrap()));
    assert!(!one.contains("127.0.0.8".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("203.0.113.1".parse().unwrap()));
    let v6: Cidr = "fd00::/8".parse().unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert!(!v6.contains("fe80::1".parse().unwrap()));
    let v6all: Cidr = "::/0".parse().unwrap();
    assert!(v6all.contains("::1".parse().unwrap()));
    for bad in [
        "",
        "10.0.0.0/33",
        "10.0.0.0/",
        "10.0.0.0/-1",
        "10.0.0/8",
        "::/129",
        "x/8",
        "10.0.0.0/8/8",
        "10.0.0.0/ 8",
    ] {
        let e = bad.parse::<Cidr>().unwrap_err().to_string();
        assert!(e.contains("address range"), "{bad}: {e}");
    }
}

#[test]
fn who_is_trusted() {
    let mut p = ProxyProtocol::default();
    assert!(p.trusts("203.0.113.1".parse().unwrap()));
    assert!(p.applies_to("anything"));
    p.from = vec!["127.0.0.0/8".parse().unwrap()];
    p.listeners = Some(vec!["public".into()]);
    assert!(p.trusts("127.0.0.1".parse().unwrap()));
    assert!(!p.trusts("::1".parse().unwrap()));
    assert!(p.applies_to("public"));
    assert!(!p.applies_to("admin"));
}
