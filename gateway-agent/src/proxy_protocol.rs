//! The HAProxy PROXY protocol, versions 1 (one text line) and 2 (binary), as
//! specified in haproxy's `doc/proxy-protocol.txt`: an outer load balancer
//! prepends it to a connection to tell the receiver who the real client is,
//! and sockgate sends it to backends for the same reason.
//!
//! Pure and allocation-free on the parsing side: [`parse`] looks at the bytes
//! received so far and says "need more (at most N bytes in all)", "here is the
//! header, it took N bytes", or why the bytes can never become a header. It
//! answers the same for every prefix of a stream (an error or a header seen on
//! a prefix stays that answer when more bytes arrive), so a caller can parse
//! after every read. TCP over IPv4/IPv6 is decoded; other families fall back
//! to "no address", as the spec allows; v2 TLVs are bounds-checked and skipped.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a v1 header starts with (then a space: checked with the rest of the line).
pub const V1_SIGNATURE: &[u8; 5] = b"PROXY";
/// What a v2 header starts with; the NUL and CR/LF mix makes it invalid in
/// every common text protocol.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line, CRLF included: the spec's worst case, `UNKNOWN` followed
/// by two full-length IPv6 addresses and ports.
pub const V1_MAX_LEN: usize = 107;
/// Signature, version/command, family/protocol and the 16-bit length of the rest.
pub const V2_FIXED_LEN: usize = 16;
/// The longest v2 header accepted. The length field allows 64 KiB, but
/// addresses take at most 216 bytes and real senders add a few small TLVs;
/// capping it bounds what a receiver buffers per connection before the first
/// byte of payload.
pub const V2_MAX_LEN: usize = 4096;
/// The longest header of either version: what a caller may have to buffer
/// before it knows which version it is reading.
pub const MAX_LEN: usize = if V1_MAX_LEN > V2_MAX_LEN {
    V1_MAX_LEN
} else {
    V2_MAX_LEN
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Relayed on behalf of a client: the header carries its addresses (or
    /// none, for families this module does not decode).
    Proxy,
    /// Opened by the proxy itself (a health check), or v1 `UNKNOWN`: the
    /// connection's own endpoints are the ones to use.
    Local,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    pub version: Version,
    pub command: Command,
    /// (source, destination) of the original TCP connection, when the header
    /// carries TCP over IPv4 or IPv6. None: use the connection's own endpoints.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes so far are a valid beginning; the whole header will be at
    /// most `at_most` bytes long (counted from the first byte), so a caller
    /// never needs to buffer more than that.
    Incomplete { at_most: usize },
    /// A complete header; the payload starts at `consumed`.
    Header {
        header: ProxyHeader,
        consumed: usize,
    },
}

/// Why the bytes are not, and can never become, a valid header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// Neither the v1 nor the v2 signature.
    NotProxyProtocol,
    /// Longer than `limit` bytes (no CRLF within a v1 line's maximum, or a v2
    /// length field beyond [`V2_MAX_LEN`]).
    Oversized { limit: usize },
    /// A v1 line with a CR not followed by LF, or an LF without its CR.
    V1BadLineEnd,
    /// A v1 line that is not `PROXY TCP4|TCP6 src dst sport dport` or
    /// `PROXY UNKNOWN ...`; the text says which part is wrong.
    V1BadLine(&'static str),
    /// A v1 address that is not a canonical IPv4/IPv6 address.
    V1BadAddress,
    /// A v1 port that is not a decimal 0..=65535 without leading zeros.
    V1BadPort,
    /// A v1 `TCP4` line with an IPv6 address, or `TCP6` with an IPv4 one.
    V1FamilyMismatch,
    /// The high nibble of the 13th byte (the version) is not 2.
    V2BadVersion(u8),
    /// The low nibble of the 13th byte is neither LOCAL (0) nor PROXY (1).
    V2BadCommand(u8),
    /// The 14th byte is not a known address family and transport protocol.
    V2BadFamily(u8),
    /// The length field is shorter than the family's addresses need.
    V2AddressesTruncated { needed: usize, len: usize },
    /// A TLV at this offset (from the header's start) runs past the header's end.
    V2BadTlv { offset: usize },
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxyProtocol => write!(
                f,
                "not a PROXY protocol header (neither the v1 nor the v2 signature)"
            ),
            ProxyError::Oversized { limit } => {
                write!(f, "PROXY protocol header longer than {limit} bytes")
            }
            ProxyError::V1BadLineEnd => write!(
                f,
                "PROXY v1 line with a lone CR or LF (it must end with CRLF)"
            ),
            ProxyError::V1BadLine(what) => write!(f, "malformed PROXY v1 line: {what}"),
            ProxyError::V1BadAddress => write!(
                f,
                "PROXY v1 address is not a canonical IPv4 or IPv6 address"
            ),
            ProxyError::V1BadPort => write!(
                f,
                "PROXY v1 port is not a decimal number 0..65535 without leading zeros"
            ),
            ProxyError::V1FamilyMismatch => write!(
                f,
                "PROXY v1 address does not match the announced family (TCP4/TCP6)"
            ),
            ProxyError::V2BadVersion(v) => {
                write!(f, "PROXY v2 header with version {v} (must be 2)")
            }
            ProxyError::V2BadCommand(c) => write!(
                f,
                "PROXY v2 header with command {c} (must be 0 LOCAL or 1 PROXY)"
            ),
            ProxyError::V2BadFamily(b) => write!(
                f,
                "PROXY v2 header with unknown address family/protocol byte {b:#04x}"
            ),
            ProxyError::V2AddressesTruncated { needed, len } => {
                write!(
                    f,
                    "PROXY v2 address block of {len} bytes, the family needs {needed}"
                )
            }
            ProxyError::V2BadTlv { offset } => write!(
                f,
                "PROXY v2 TLV at byte {offset} runs past the end of the header"
            ),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parses the header at the start of `buf` (the bytes received so far).
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete { at_most: MAX_LEN });
    }
    if starts_like(buf, V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts_like(buf, V1_SIGNATURE) {
        parse_v1(buf)
    } else {
        Err(ProxyError::NotProxyProtocol)
    }
}

/// `buf` and `signature` agree on the bytes both have.
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::Oversized { limit: V1_MAX_LEN })
        } else {
            Ok(Parsed::Incomplete {
                at_most: V1_MAX_LEN,
            })
        };
    };
    if buf[end] == b'\n' {
        return Err(ProxyError::V1BadLineEnd);
    }
    let consumed = end + 2;
    if consumed > V1_MAX_LEN {
        return Err(ProxyError::Oversized { limit: V1_MAX_LEN });
    }
    match buf.get(end + 1) {
        None => Ok(Parsed::Incomplete {
            at_most: V1_MAX_LEN,
        }),
        Some(b'\n') => Ok(Parsed::Header {
            header: parse_v1_line(&buf[..end])?,
            consumed,
        }),
        Some(_) => Err(ProxyError::V1BadLineEnd),
    }
}

/// One complete v1 line, without its CRLF.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let rest = line.strip_prefix(b"PROXY ").ok_or(ProxyError::V1BadLine(
        "\"PROXY\" must be followed by one space",
    ))?;
    // The spec: after UNKNOWN, the receiver ignores the rest of the line.
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return Ok(ProxyHeader {
            version: Version::V1,
            command: Command::Local,
            addresses: None,
        });
    }
    let text = std::str::from_utf8(rest).map_err(|_| ProxyError::V1BadLine("not US-ASCII text"))?;
    let mut fields = text.split(' ');
    let ipv6 = match fields.next() {
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => {
            return Err(ProxyError::V1BadLine(
                "the protocol must be TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let mut next = || {
        fields.next().ok_or(ProxyError::V1BadLine(
            "expected source, destination, source port, destination port",
        ))
    };
    let (src, dst, src_port, dst_port) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(ProxyError::V1BadLine(
            "more than four fields after the protocol (or a double space)",
        ));
    }
    let (src, dst) = (v1_address(src, ipv6)?, v1_address(dst, ipv6)?);
    let (src_port, dst_port) = (v1_port(src_port)?, v1_port(dst_port)?);
    Ok(ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        addresses: Some((
            SocketAddr::new(src, src_port),
            SocketAddr::new(dst, dst_port),
        )),
    })
}

/// std's parsers are strict enough: IPv4 as exactly four decimal octets
/// without leading zeros, IPv6 as hex groups with at most one `::` (and the
/// `::ffff:a.b.c.d` form std itself prints for IPv4-mapped addresses).
fn v1_address(text: &str, ipv6: bool) -> Result<IpAddr, ProxyError> {
    let (v4, v6) = (text.parse::<Ipv4Addr>(), text.parse::<Ipv6Addr>());
    match (ipv6, v4, v6) {
        (false, Ok(a), _) => Ok(IpAddr::V4(a)),
        (true, _, Ok(a)) => Ok(IpAddr::V6(a)),
        (false, Err(_), Ok(_)) | (true, Ok(_), Err(_)) => Err(ProxyError::V1FamilyMismatch),
        _ => Err(ProxyError::V1BadAddress),
    }
}

fn v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits_only =
        !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    if !digits_only || leading_zero {
        return Err(ProxyError::V1BadPort);
    }
    text.parse().map_err(|_| ProxyError::V1BadPort)
}

/// Address block sizes of the family/protocol bytes the spec defines.
const V2_TCP4: u8 = 0x11;
const V2_UDP4: u8 = 0x12;
const V2_TCP6: u8 = 0x21;
const V2_UDP6: u8 = 0x22;
const V2_UNIX_STREAM: u8 = 0x31;
const V2_UNIX_DGRAM: u8 = 0x32;

fn v2_address_len(family: u8) -> Option<usize> {
    match family {
        V2_TCP4 | V2_UDP4 => Some(12),
        V2_TCP6 | V2_UDP6 => Some(36),
        V2_UNIX_STREAM | V2_UNIX_DGRAM => Some(216),
        _ => None,
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    // Each fixed byte is checked as soon as it arrives.
    if let Some(&version_command) = buf.get(12) {
        if version_command >> 4 != 2 {
            return Err(ProxyError::V2BadVersion(version_command >> 4));
        }
        if version_command & 0x0f > 1 {
            return Err(ProxyError::V2BadCommand(version_command & 0x0f));
        }
    }
    let local = buf.get(12).is_some_and(|b| b & 0x0f == 0);
    if let Some(&family) = buf.get(13) {
        // LOCAL ignores the family; PROXY must name one the spec defines.
        if !local && (family >> 4 > 3 || family & 0x0f > 2) {
            return Err(ProxyError::V2BadFamily(family));
        }
    }
    let Some(len) = buf.get(14..V2_FIXED_LEN) else {
        return Ok(Parsed::Incomplete {
            at_most: V2_MAX_LEN,
        });
    };
    let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes([len[0], len[1]]));
    if total > V2_MAX_LEN {
        return Err(ProxyError::Oversized { limit: V2_MAX_LEN });
    }
    let Some(block) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(Parsed::Incomplete { at_most: total });
    };
    let header = |command, addresses| {
        Ok(Parsed::Header {
            header: ProxyHeader {
                version: Version::V2,
                command,
                addresses,
            },
            consumed: total,
        })
    };
    if local {
        // The spec: discard the whole block, family included.
        return header(Command::Local, None);
    }
    let family = buf[13];
    // Family or protocol UNSPEC: no address to read, nothing to check.
    let Some(address_len) = v2_address_len(family) else {
        return header(Command::Proxy, None);
    };
    if block.len() < address_len {
        return Err(ProxyError::V2AddressesTruncated {
            needed: address_len,
            len: block.len(),
        });
    }
    check_tlvs(&block[address_len..], V2_FIXED_LEN + address_len)?;
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let addresses = match family {
        V2_TCP4 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    block[at],
                    block[at + 1],
                    block[at + 2],
                    block[at + 3],
                ))
            };
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        V2_TCP6 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        // UDP and UNIX: valid, but not a TCP client address; the spec lets a
        // receiver treat them as UNSPEC.
        _ => None,
    };
    header(Command::Proxy, addresses)
}

/// Walks the type-length-value records after the addresses: each is a type
/// byte, a 16-bit big-endian length and that many bytes, and they must tile
/// the rest of the header exactly. `base` is their offset in the header.
fn check_tlvs(mut tlvs: &[u8], base: usize) -> Result<(), ProxyError> {
    let mut offset = base;
    while !tlvs.is_empty() {
        let len = match tlvs.get(1..3) {
            Some(l) => 3 + usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => return Err(ProxyError::V2BadTlv { offset }),
        };
        tlvs = tlvs.get(len..).ok_or(ProxyError::V2BadTlv { offset })?;
        offset += len;
    }
    Ok(())
}

/// The pair as both versions carry it: one family for both ends. A mixed pair
/// becomes IPv6, the IPv4 side mapped (`::ffff:a.b.c.d`), which keeps both
/// addresses exact; flow labels and scope ids are not carried.
pub fn one_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let mapped = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(ip) => SocketAddr::new(IpAddr::V6(ip), a.port()),
    };
    match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => (src, dst),
        _ => (mapped(src), mapped(dst)),
    }
}

/// A v1 line announcing a TCP connection from `src` to `dst`.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = one_family(src, dst);
    let protocol = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {protocol} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A v2 PROXY header announcing a TCP connection from `src` to `dst`, without TLVs.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = one_family(src, dst);
    let mut out = Vec::with_capacity(V2_FIXED_LEN + 36);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[V2_TCP4, 0, 12]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.extend_from_slice(&[V2_TCP6, 0, 36]);
            out.extend_from_slice(&v6_octets(s));
            out.extend_from_slice(&v6_octets(d));
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
        IpAddr::V6(ip) => ip.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn header(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf) {
            Ok(Parsed::Header { header, consumed }) => (header, consumed),
            other => panic!(
                "expected a header from {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    fn error(buf: &[u8]) -> ProxyError {
        match parse(buf) {
            Err(e) => e,
            other => panic!(
                "expected an error from {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    /// A v2 header: signature, version/command, family, length, then `block`.
    fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[version_command, family]);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    const TCP4_BLOCK: [u8; 12] = [172, 19, 0, 1, 172, 19, 0, 3, 0xa6, 0x52, 0x00, 0x50];

    fn tcp6_block() -> Vec<u8> {
        let mut block = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
            .octets()
            .to_vec();
        block.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).octets());
        block.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb]); // 50000, 443
        block
    }

    #[test]
    fn the_specs_v1_example_yields_the_client_and_leaves_the_request_intact() {
        let stream = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";
        let (h, consumed) = header(stream);
        assert_eq!(
            h,
            ProxyHeader {
                version: Version::V1,
                command: Command::Proxy,
                addresses: Some((addr("192.168.0.1:56324"), addr("192.168.0.11:443")))
            }
        );
        assert_eq!(consumed, 47);
        assert_eq!(
            &stream[consumed..],
            b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n"
        );
    }

    #[test]
    fn v1_tcp6_lines_up_to_the_specs_longest_are_read() {
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        assert_eq!(line.len(), 104, "the spec's longest TCP6 line");
        let (h, consumed) = header(line.as_bytes());
        assert_eq!(consumed, 104);
        assert_eq!(
            h.addresses,
            Some((
                addr(&format!("[{full}]:65535")),
                addr(&format!("[{full}]:65535"))
            ))
        );
        let (h, _) = header(b"PROXY TCP6 2001:DB8::1 ::ffff:198.18.0.1 0 1\r\n");
        assert_eq!(
            h.addresses,
            Some((addr("[2001:db8::1]:0"), addr("[::ffff:198.18.0.1]:1"))),
            "upper-case hex, ::, mapped IPv4, port 0"
        );
    }

    #[test]
    fn v1_unknown_in_short_and_worst_case_forms_is_local_without_addresses() {
        let local = ProxyHeader {
            version: Version::V1,
            command: Command::Local,
            addresses: None,
        };
        assert_eq!(header(b"PROXY UNKNOWN\r\npayload"), (local, 15));
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let worst = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(
            worst.len(),
            V1_MAX_LEN,
            "the spec's worst case is the limit"
        );
        assert_eq!(header(worst.as_bytes()), (local, V1_MAX_LEN));
        assert_eq!(
            header(b"PROXY UNKNOWN anything \xff at all\r\n").0,
            local,
            "the rest of an UNKNOWN line is ignored"
        );
    }

    #[test]
    fn a_v2_tcp4_header_yields_its_addresses_skips_its_tlvs_and_leaves_the_payload() {
        let mut block = TCP4_BLOCK.to_vec();
        block.extend_from_slice(&[0x04, 0x00, 0x02, 0, 0]); // NOOP, 2 bytes
        block.extend_from_slice(&[0x02, 0x00, 0x0b]); // AUTHORITY, 11 bytes
        block.extend_from_slice(b"example.com");
        let mut stream = v2(0x21, 0x11, &block);
        let header_len = stream.len();
        stream.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (h, consumed) = header(&stream);
        assert_eq!(
            h,
            ProxyHeader {
                version: Version::V2,
                command: Command::Proxy,
                addresses: Some((addr("172.19.0.1:42578"), addr("172.19.0.3:80")))
            }
        );
        assert_eq!(consumed, header_len);
        assert_eq!(consumed, 16 + 12 + 5 + 14);
        assert_eq!(&stream[consumed..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn a_v2_tcp6_header_yields_its_addresses() {
        let (h, consumed) = header(&v2(0x21, 0x21, &tcp6_block()));
        assert_eq!(
            h.addresses,
            Some((addr("[2001:db8::1]:50000"), addr("[2001:db8::2]:443")))
        );
        assert_eq!(consumed, 16 + 36);
    }

    #[test]
    fn v2_local_discards_its_block_whatever_the_family() {
        let local = ProxyHeader {
            version: Version::V2,
            command: Command::Local,
            addresses: None,
        };
        assert_eq!(header(&v2(0x20, 0x00, &[])), (local, 16));
        assert_eq!(
            header(&v2(0x20, 0x11, &TCP4_BLOCK)),
            (local, 28),
            "addresses of a LOCAL header are not used"
        );
        assert_eq!(
            header(&v2(0x20, 0xff, &[1, 2, 3])),
            (local, 19),
            "the family of a LOCAL header is ignored"
        );
    }

    #[test]
    fn v2_unspec_udp_and_unix_fall_back_to_no_address_but_keep_their_length() {
        let none = ProxyHeader {
            version: Version::V2,
            command: Command::Proxy,
            addresses: None,
        };
        assert_eq!(
            header(&v2(0x21, 0x00, &[9; 7])),
            (none, 23),
            "UNSPEC: the block is skipped unread"
        );
        assert_eq!(
            header(&v2(0x21, 0x12, &TCP4_BLOCK)),
            (none, 28),
            "UDP over IPv4"
        );
        assert_eq!(
            header(&v2(0x21, 0x22, &tcp6_block())),
            (none, 52),
            "UDP over IPv6"
        );
        assert_eq!(
            header(&v2(0x21, 0x31, &[0; 216])),
            (none, 232),
            "UNIX stream"
        );
    }

    #[test]
    fn each_malformed_header_is_rejected_with_the_error_that_names_its_fault() {
        use ProxyError::*;
        let cases: Vec<(Vec<u8>, ProxyError)> = vec![
            (b"GET / HTTP/1.1\r\n".to_vec(), NotProxyProtocol),
            (b"\r\n\r\n\0\r\nQUIX\n".to_vec(), NotProxyProtocol),
            (b"SSH-2.0-OpenSSH\r\n".to_vec(), NotProxyProtocol),
            (
                [b"PROXY TCP4 1.2.3.4 ".as_slice(), &[b'1'; 88]].concat(),
                Oversized { limit: V1_MAX_LEN },
            ),
            (
                v2(0x21, 0x11, &vec![0; V2_MAX_LEN - 16 + 1]),
                Oversized { limit: V2_MAX_LEN },
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(), V1BadLineEnd),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX".to_vec(), V1BadLineEnd),
            (b"PROXY UNKNOWN\n\r\n".to_vec(), V1BadLineEnd),
            (
                b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                V1BadLine("\"PROXY\" must be followed by one space"),
            ),
            (
                b"PROXY\r\n".to_vec(),
                V1BadLine("\"PROXY\" must be followed by one space"),
            ),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                V1BadLine("the protocol must be TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY UNKNOWNX\r\n".to_vec(),
                V1BadLine("the protocol must be TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                V1BadLine("the protocol must be TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(),
                V1BadLine("expected source, destination, source port, destination port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n".to_vec(),
                V1BadLine("more than four fields after the protocol (or a double space)"),
            ),
            (
                b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n".to_vec(),
                V1BadLine("more than four fields after the protocol (or a double space)"),
            ),
            (
                b"PROXY TCP4 1.2.3.4\xff 5.6.7.8 1 2\r\n".to_vec(),
                V1BadLine("not US-ASCII text"),
            ),
            (
                b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                V1BadAddress,
            ),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n".to_vec(), V1BadAddress),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8.9 1 2\r\n".to_vec(),
                V1BadAddress,
            ),
            (
                b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n".to_vec(),
                V1BadAddress,
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n".to_vec(), V1BadPort),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n".to_vec(),
                V1BadPort,
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(), V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n".to_vec(), V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 2\r\n".to_vec(), V1BadPort),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 000002\r\n".to_vec(),
                V1BadPort,
            ),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n".to_vec(), V1FamilyMismatch),
            (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n".to_vec(), V1FamilyMismatch),
            (v2(0x11, 0x11, &TCP4_BLOCK), V2BadVersion(1)),
            (v2(0x31, 0x11, &TCP4_BLOCK), V2BadVersion(3)),
            (v2(0x22, 0x11, &TCP4_BLOCK), V2BadCommand(2)),
            (v2(0x2f, 0x11, &TCP4_BLOCK), V2BadCommand(15)),
            (v2(0x21, 0x41, &TCP4_BLOCK), V2BadFamily(0x41)),
            (v2(0x21, 0x13, &TCP4_BLOCK), V2BadFamily(0x13)),
            (
                v2(0x21, 0x11, &TCP4_BLOCK[..8]),
                V2AddressesTruncated { needed: 12, len: 8 },
            ),
            (
                v2(0x21, 0x21, &TCP4_BLOCK),
                V2AddressesTruncated {
                    needed: 36,
                    len: 12,
                },
            ),
            (
                v2(0x21, 0x31, &[0; 215]),
                V2AddressesTruncated {
                    needed: 216,
                    len: 215,
                },
            ),
            (
                v2(
                    0x21,
                    0x11,
                    &[TCP4_BLOCK.as_slice(), &[0x04, 0x00, 0x05, 1, 2]].concat(),
                ),
                V2BadTlv { offset: 28 },
            ),
            (
                v2(0x21, 0x11, &[TCP4_BLOCK.as_slice(), &[0x04, 0x00]].concat()),
                V2BadTlv { offset: 28 },
            ),
            (
                v2(
                    0x21,
                    0x11,
                    &[TCP4_BLOCK.as_slice(), &[0x04, 0x00, 0x00, 0x01]].concat(),
                ),
                V2BadTlv { offset: 31 },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                error(&input),
                expected,
                "{:?}",
                String::from_utf8_lossy(&input)
            );
            assert!(!expected.to_string().is_empty());
        }
    }

    #[test]
    fn faults_are_reported_as_soon_as_the_bytes_showing_them_arrive() {
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4\n"),
            Err(ProxyError::V1BadLineEnd),
            "no need to wait for more"
        );
        assert_eq!(parse(b"G"), Err(ProxyError::NotProxyProtocol));
        assert_eq!(
            parse(&v2(0x11, 0x11, &TCP4_BLOCK)[..13]),
            Err(ProxyError::V2BadVersion(1))
        );
        assert_eq!(
            parse(&v2(0x21, 0x51, &TCP4_BLOCK)[..14]),
            Err(ProxyError::V2BadFamily(0x51))
        );
        let oversized = [V2_SIGNATURE.as_slice(), &[0x21, 0x11, 0xff, 0xff]].concat();
        assert_eq!(
            parse(&oversized),
            Err(ProxyError::Oversized { limit: V2_MAX_LEN }),
            "known from the length field alone"
        );
    }

    #[test]
    fn every_proper_prefix_of_a_header_is_incomplete_with_a_bound_that_holds() {
        let mut tlvs = TCP4_BLOCK.to_vec();
        tlvs.extend_from_slice(&[0x05, 0x00, 0x03, 1, 2, 3]);
        let headers = [
            encode_v1(addr("192.168.0.1:56324"), addr("192.168.0.11:443")),
            encode_v1(addr("[2001:db8::1]:1"), addr("[2001:db8::2]:65535")),
            b"PROXY UNKNOWN\r\n".to_vec(),
            encode_v2(addr("198.18.0.1:40000"), addr("198.18.1.1:80")),
            encode_v2(addr("[2001:db8::1]:1"), addr("198.18.1.1:80")),
            v2(0x21, 0x11, &tlvs),
            v2(0x20, 0x00, &[]),
        ];
        for full in &headers {
            let mut stream = full.clone();
            stream.extend_from_slice(b"payload");
            for split in 0..full.len() {
                match parse(&stream[..split]) {
                    Ok(Parsed::Incomplete { at_most }) => assert!(
                        (full.len()..=MAX_LEN).contains(&at_most),
                        "prefix of {split} bytes of {:?}: bound {at_most} below the header's {} bytes",
                        String::from_utf8_lossy(full),
                        full.len()
                    ),
                    other => panic!("prefix of {split} bytes of {:?}: {other:?}", String::from_utf8_lossy(full)),
                }
            }
            assert_eq!(
                header(&stream).1,
                full.len(),
                "the whole header, then payload"
            );
        }
    }

    #[test]
    fn encode_then_parse_round_trips_ipv4_ipv6_and_mixed_pairs_in_both_versions() {
        let pairs = [
            (
                "198.18.0.1:40000",
                "198.18.1.1:80",
                "198.18.0.1:40000",
                "198.18.1.1:80",
            ),
            (
                "[2001:db8::1]:1",
                "[2001:db8::2]:2",
                "[2001:db8::1]:1",
                "[2001:db8::2]:2",
            ),
            (
                "198.18.0.1:0",
                "[2001:db8::2]:65535",
                "[::ffff:198.18.0.1]:0",
                "[2001:db8::2]:65535",
            ),
            (
                "[fe80::1%7]:5",
                "198.18.1.1:6",
                "[fe80::1]:5",
                "[::ffff:198.18.1.1]:6",
            ),
        ];
        for (src, dst, want_src, want_dst) in pairs {
            let want = Some((addr(want_src), addr(want_dst)));
            for (encoded, version) in [
                (encode_v1(addr(src), addr(dst)), Version::V1),
                (encode_v2(addr(src), addr(dst)), Version::V2),
            ] {
                let (h, consumed) = header(&encoded);
                assert_eq!(
                    h,
                    ProxyHeader {
                        version,
                        command: Command::Proxy,
                        addresses: want
                    },
                    "{src} -> {dst}"
                );
                assert_eq!(consumed, encoded.len());
            }
        }
        assert_eq!(
            encode_v1(addr("1.2.3.4:5"), addr("6.7.8.9:10")),
            b"PROXY TCP4 1.2.3.4 6.7.8.9 5 10\r\n"
        );
    }

    fn stream_start() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            Just(b"PROXY ".to_vec()),
            Just(b"PROXY TCP4 ".to_vec()),
            Just(b"PROXY TCP6 ".to_vec()),
            Just([V2_SIGNATURE.as_slice(), &[0x21, 0x11]].concat()),
            Just([V2_SIGNATURE.as_slice(), &[0x21, 0x21]].concat()),
            Just([V2_SIGNATURE.as_slice(), &[0x21]].concat()),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_every_prefix_agrees_with_the_whole(
            start in stream_start(),
            tail in proptest::collection::vec(any::<u8>(), 0..160),
        ) {
            let stream = [start, tail].concat();
            let whole = parse(&stream);
            for split in 0..=stream.len() {
                match parse(&stream[..split]) {
                    Ok(Parsed::Incomplete { at_most }) => {
                        prop_assert!(at_most <= MAX_LEN && at_most >= split);
                        if let Ok(Parsed::Header { consumed, .. }) = whole {
                            prop_assert!(split < consumed && consumed <= at_most);
                        }
                    }
                    early => prop_assert_eq!(early, whole, "a prefix of {} bytes decided differently", split),
                }
            }
        }

        #[test]
        fn encode_then_parse_gives_back_the_pair_in_one_family(src in any::<SocketAddr>(), dst in any::<SocketAddr>()) {
            let want = Some(one_family(src, dst));
            for encoded in [encode_v1(src, dst), encode_v2(src, dst)] {
                prop_assert!(encoded.len() <= MAX_LEN);
                let parsed = parse(&encoded);
                prop_assert!(matches!(parsed, Ok(Parsed::Header { header, consumed }) if header.addresses == want && consumed == encoded.len()), "{:?}", parsed);
            }
        }
    }
}
