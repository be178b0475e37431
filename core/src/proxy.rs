//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2), parsed from
//! the bytes a connection has sent so far, and the trusted-address ranges that may send it.
//!
//! A load balancer in front of the pool hides every miner behind its own address, so limits
//! and bans would hit everyone behind it at once. With the PROXY protocol the balancer states
//! the miner's address in a header before the stream; [`parse`] reads it, and the driver
//! admits, limits and bans by that address.
//!
//! Bounds: a header is never longer than [`MAX_HEADER`], so a caller that buffers at most
//! that much before [`parse`] decides always gets a decision. Peer bytes never panic: every
//! malformed or oversized header is a [`ProxyError`] saying what was wrong.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Longest version 1 header, `\r\n` included (the specification's own bound).
pub const V1_MAX: usize = 107;

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest version 2 payload (addresses and TLVs) accepted. The format allows 65535, but the
/// addresses take at most 216 bytes (AF_UNIX) and the TLVs a balancer adds (ALPN, authority,
/// unique id, TLS details) stay well below 1 KiB; accepting 64 KiB would let every connection
/// that has not finished its header hold that much. A longer header is refused, not skipped.
pub const V2_MAX_PAYLOAD: usize = 1024;

/// Longest header of either version [`parse`] accepts.
pub const MAX_HEADER: usize = 16 + V2_MAX_PAYLOAD;

const V1_PREFIX: &[u8] = b"PROXY ";

/// Whose address the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client's address as the proxy saw it.
    Address(SocketAddr),
    /// The header names no client (v1 `UNKNOWN`, v2 `LOCAL` or `AF_UNSPEC`, as a balancer's
    /// own health check sends): the connection's transport address is the one to use.
    Transport,
}

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub source: Source,
    /// Bytes the header took; what follows belongs to the proxied stream.
    pub consumed: usize,
}

/// Why the bytes are not a header the pool accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a PROXY protocol header (neither \"PROXY \" nor the v2 signature)")]
    NotProxy,
    #[error("v1 header without \\r\\n in its first {V1_MAX} bytes")]
    V1TooLong,
    #[error("v1 header: {0}")]
    V1(&'static str),
    #[error("v2 header: version {0} (only 2 exists)")]
    V2Version(u8),
    #[error("v2 header: command {0} (LOCAL is 0, PROXY is 1)")]
    V2Command(u8),
    #[error("v2 header: {len}-byte payload, over the {V2_MAX_PAYLOAD} accepted")]
    V2TooLong { len: usize },
    #[error("v2 header: {0}")]
    V2(&'static str),
}

/// Parses the header at the start of `buf`, the bytes read so far. `Ok(None)`: a prefix of a
/// header, read more. Decides as soon as the bytes allow: garbage is refused at its first byte
/// that cannot start a header, never after waiting for more.
pub fn parse(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

fn is_prefix(buf: &[u8], of: &[u8]) -> bool {
    let n = buf.len().min(of.len());
    buf[..n] == of[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    if !is_prefix(buf, V1_PREFIX) {
        return Err(ProxyError::NotProxy);
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    if buf[lf - 1] != b'\r' {
        return Err(ProxyError::V1("line ends in \\n without \\r"));
    }
    let (end, consumed) = (lf - 1, lf + 1);
    let line =
        std::str::from_utf8(&buf[V1_PREFIX.len()..end]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    let source = match fields.next() {
        // Whatever follows UNKNOWN is to be ignored, by the specification.
        Some("UNKNOWN") => Source::Transport,
        Some(proto @ ("TCP4" | "TCP6")) => {
            let mut next = |what| fields.next().ok_or(ProxyError::V1(what));
            let src = next("source address missing")?;
            let _dst = next("destination address missing")?;
            let sport = next("source port missing")?;
            let dport = next("destination port missing")?;
            if fields.next().is_some() {
                return Err(ProxyError::V1("fields after the destination port"));
            }
            let ip = if proto == "TCP4" {
                IpAddr::V4(Ipv4Addr::from_str(src).map_err(|_| ProxyError::V1("bad TCP4 source"))?)
            } else {
                IpAddr::V6(Ipv6Addr::from_str(src).map_err(|_| ProxyError::V1("bad TCP6 source"))?)
            };
            let port = v1_port(sport)?;
            v1_port(dport)?;
            Source::Address(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Some(Header { source, consumed }))
}

fn v1_port(s: &str) -> Result<u16, ProxyError> {
    // `u16::from_str` takes a leading '+', which the format does not.
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::V1("bad port"));
    }
    s.parse().map_err(|_| ProxyError::V1("port above 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<Header>, ProxyError> {
    if !is_prefix(buf, &V2_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    // The fixed part decides version, command and length before the payload arrives.
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2Version(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        c => return Err(ProxyError::V2Command(c)),
    };
    let (Some(&fam), Some(&hi), Some(&lo)) = (buf.get(13), buf.get(14), buf.get(15)) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::V2TooLong { len });
    }
    let Some(payload) = buf.get(16..16 + len) else {
        return Ok(None);
    };
    let consumed = 16 + len;
    // LOCAL: the proxy speaks for itself (a health check); the address block is to be ignored.
    if local {
        return Ok(Some(Header {
            source: Source::Transport,
            consumed,
        }));
    }
    let (family, transport) = (fam >> 4, fam & 0x0f);
    if family != 0 && transport != 1 {
        return Err(ProxyError::V2(
            "transport is not STREAM (stratum runs over TCP)",
        ));
    }
    let source = match family {
        0 => Source::Transport,
        1 => {
            let a = payload
                .get(..12)
                .ok_or(ProxyError::V2("AF_INET payload shorter than 12 bytes"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Source::Address(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        2 => {
            let a = payload
                .get(..36)
                .ok_or(ProxyError::V2("AF_INET6 payload shorter than 36 bytes"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            Source::Address(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        3 => return Err(ProxyError::V2("AF_UNIX source has no IP address")),
        _ => return Err(ProxyError::V2("unknown address family")),
    };
    Ok(Some(Header { source, consumed }))
}

/// An address range, `192.0.2.0/24`, `2001:db8::/32`, or one address (`10.0.0.5`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range. An IPv4 address seen through an IPv6 socket
    /// (`::ffff:a.b.c.d`) is the IPv4 address, so `127.0.0.1` matches a proxy that reaches a
    /// `[::]` listener over IPv4.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(a)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(ver_cmd: u8, fam: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(ver_cmd);
        b.push(fam);
        b.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    fn addr(s: &str) -> Source {
        Source::Address(s.parse().unwrap())
    }

    /// Every strict prefix of a valid header asks for more; the whole header parses.
    fn check_prefixes(h: &[u8]) {
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]), Ok(None), "prefix of {n} bytes of {h:?}");
        }
    }

    #[test]
    fn v1_examples_from_the_specification() {
        // proxy-protocol.txt, section 2.1.
        let h = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(
            parse(h),
            Ok(Some(Header {
                source: addr("255.255.255.255:65535"),
                consumed: h.len()
            }))
        );
        let h = b"PROXY TCP6 ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert!(
            parse(h).is_err(),
            "the spec's elided form is not an address"
        );
        let h = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(
            parse(h).unwrap().unwrap().source,
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
        );
        check_prefixes(h);
        let h = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(h),
            Ok(Some(Header {
                source: Source::Transport,
                consumed: 15
            }))
        );
        let h = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(h.len(), V1_MAX, "the longest header the spec names");
        assert_eq!(parse(h).unwrap().unwrap().source, Source::Transport);
        check_prefixes(h);
        let h = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        assert_eq!(parse(h).unwrap().unwrap().source, addr("192.168.0.1:56324"));
        check_prefixes(h);
    }

    #[test]
    fn v1_bytes_after_the_header_are_not_consumed() {
        let mut b = b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 3333\r\n".to_vec();
        let n = b.len();
        b.extend_from_slice(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n");
        let h = parse(&b).unwrap().unwrap();
        assert_eq!(h.consumed, n);
        assert_eq!(h.source, addr("203.0.113.7:4000"));
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY \xff\r\n",
            b"PROXY\r\n",
            b"PROXYX",
            b"{\"id\":1}\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // No CRLF within the bound: refused at the bound, not before, never after.
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 200]].concat();
        assert_eq!(parse(&long[..V1_MAX - 1]), Ok(None));
        assert_eq!(parse(&long[..V1_MAX]), Err(ProxyError::V1TooLong));
        assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn v2_examples() {
        // 0x21 = version 2, PROXY; 0x11 = AF_INET, STREAM. 192.168.0.1:56324 -> 192.168.0.11:443.
        let h = v2(
            0x21,
            0x11,
            &[192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb],
        );
        assert_eq!(h.len(), 28);
        assert_eq!(
            parse(&h),
            Ok(Some(Header {
                source: addr("192.168.0.1:56324"),
                consumed: 28
            }))
        );
        check_prefixes(&h);

        // AF_INET6 (0x21), with a TLV after the addresses (PP2_TYPE_ALPN "h2"), skipped.
        let mut p = Vec::new();
        p.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&[0x0f, 0xa0, 0x0d, 0x05]);
        p.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        let mut h = v2(0x21, 0x21, &p);
        let n = h.len();
        h.extend_from_slice(b"{\"id\":1}\n");
        assert_eq!(
            parse(&h),
            Ok(Some(Header {
                source: addr("[2001:db8::7]:4000"),
                consumed: n
            }))
        );
        check_prefixes(&h[..n]);

        // LOCAL (0x20), as a health check sends: the transport address, addresses ignored.
        let h = v2(0x20, 0x00, &[]);
        assert_eq!(
            parse(&h),
            Ok(Some(Header {
                source: Source::Transport,
                consumed: 16
            }))
        );
        let h = v2(0x20, 0x11, &[1; 12]);
        assert_eq!(parse(&h).unwrap().unwrap().source, Source::Transport);
        // PROXY with AF_UNSPEC: the transport address too.
        let h = v2(0x21, 0x00, &[]);
        assert_eq!(parse(&h).unwrap().unwrap().source, Source::Transport);
    }

    #[test]
    fn v2_malformed() {
        assert_eq!(
            parse(&v2(0x11, 0x11, &[0; 12])),
            Err(ProxyError::V2Version(1))
        );
        assert_eq!(
            parse(&v2(0x22, 0x11, &[0; 12])),
            Err(ProxyError::V2Command(2))
        );
        assert!(parse(&v2(0x21, 0x11, &[0; 11])).is_err(), "short AF_INET");
        assert!(parse(&v2(0x21, 0x21, &[0; 35])).is_err(), "short AF_INET6");
        assert!(parse(&v2(0x21, 0x12, &[0; 12])).is_err(), "DGRAM");
        assert!(parse(&v2(0x21, 0x31, &[0; 216])).is_err(), "AF_UNIX");
        assert!(parse(&v2(0x21, 0x41, &[0; 12])).is_err(), "unknown family");
        // The largest payload accepted, and one byte more refused from the fixed part alone.
        assert!(
            parse(&v2(0x21, 0x11, &[0; V2_MAX_PAYLOAD]))
                .unwrap()
                .is_some()
        );
        let big = v2(0x21, 0x11, &[0; V2_MAX_PAYLOAD + 1]);
        assert_eq!(
            parse(&big[..16]),
            Err(ProxyError::V2TooLong {
                len: V2_MAX_PAYLOAD + 1
            })
        );
        // A wrong byte anywhere in the signature is refused as soon as it is seen.
        for i in 0..12 {
            let mut s = V2_SIGNATURE;
            s[i] ^= 0x40;
            assert_eq!(parse(&s[..=i]), Err(ProxyError::NotProxy), "byte {i}");
        }
    }

    #[test]
    fn cidr() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains("192.0.2.200".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::2".parse().unwrap()));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains("::2".parse().unwrap()));
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "host",
            "1.2.3.4/a",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            match parse(&bytes) {
                Ok(Some(h)) => prop_assert!(h.consumed <= bytes.len() && h.consumed <= MAX_HEADER),
                // Undecided only while shorter than the longest header.
                Ok(None) => prop_assert!(bytes.len() < MAX_HEADER),
                Err(_) => {}
            }
        }

        #[test]
        fn never_panics_after_a_valid_start(
            v in 0usize..2,
            tail in proptest::collection::vec(any::<u8>(), 0..1100),
        ) {
            let start: &[u8] = if v == 0 { b"PROXY " } else { &V2_SIGNATURE };
            let bytes = [start, &tail].concat();
            match parse(&bytes) {
                Ok(Some(h)) => prop_assert!(h.consumed <= bytes.len()),
                Ok(None) => prop_assert!(bytes.len() < MAX_HEADER),
                Err(_) => {}
            }
        }

        #[test]
        fn v1_tcp4_round_trip(a in any::<[u8; 4]>(), sport in any::<u16>(), dport in any::<u16>()) {
            let ip = Ipv4Addr::from(a);
            let line = format!("PROXY TCP4 {ip} 10.0.0.1 {sport} {dport}\r\n");
            let h = parse(line.as_bytes()).unwrap().unwrap();
            prop_assert_eq!(h.source, Source::Address(SocketAddr::new(ip.into(), sport)));
            prop_assert_eq!(h.consumed, line.len());
        }
    }
}
