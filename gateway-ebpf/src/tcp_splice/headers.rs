//! Where a segment's fields are: Ethernet, then IPv4 (any IHL, not a
//! fragment) or IPv6 (TCP as the first next header), then TCP and its options.
use aya_ebpf::programs::TcContext;
use gateway_common::FlowKey;

pub const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Offsets of the TCP header's fields, from its start.
pub const TCP_SEQ: usize = 4;
pub const TCP_ACK_SEQ: usize = 8;
pub const TCP_WINDOW: usize = 14;
pub const TCP_CHECKSUM: usize = 16;

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_SACK: u8 = 5;
const TCPOPT_TIMESTAMP: u8 = 8;
/// Options are at most 40 bytes; a walk takes at most one step per byte.
pub const MAX_OPTIONS: usize = 40;

pub struct Segment {
    pub key: FlowKey,
    pub ipv6: bool,
    /// Offset of the IP header and of the TCP header in the packet.
    pub l3: usize,
    pub l4: usize,
    /// TCP header length (with options).
    pub tcp_len: usize,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    /// TCP payload length (of the whole GSO/GRO super-packet, if it is one).
    pub payload: u32,
    /// Offsets (from the TCP header) of the timestamp option and of the SACK
    /// option with its length; 0 when absent.
    pub timestamp_at: usize,
    pub sack_at: usize,
    pub sack_len: usize,
    /// False when the options are in a layout this reading does not follow
    /// (see `find_options`): such a segment cannot be translated.
    pub options_readable: bool,
}

impl Segment {
    pub fn has_ack(&self) -> bool {
        self.flags & TCP_ACK != 0
    }

    /// The sender's TSval, when the segment has the timestamp option.
    pub fn tsval(&self, ctx: &TcContext) -> Option<u32> {
        if self.timestamp_at == 0 {
            return None;
        }
        ctx.load::<u32>(self.l4 + self.timestamp_at + 2).ok().map(u32::from_be)
    }
}

/// The segment's headers, or Err for anything that is not a TCP segment this
/// program may rewrite.
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Result<Segment, ()> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).map_err(|_| ())?);
    let l3 = ETH_HLEN;
    let mut key = FlowKey::default();
    let (l4, ip_payload, ipv6) = match ethertype {
        ETH_P_IPV4 => {
            let version_ihl: u8 = ctx.load(l3).map_err(|_| ())?;
            let ihl = usize::from(version_ihl & 0x0f) * 4;
            if ihl < 20 || ctx.load::<u8>(l3 + 9).map_err(|_| ())? != IPPROTO_TCP {
                return Err(());
            }
            // A fragment (more-fragments set, or an offset) carries no whole
            // TCP header to rewrite: the stack reassembles it as usual.
            if u16::from_be(ctx.load::<u16>(l3 + 6).map_err(|_| ())?) & 0x3fff != 0 {
                return Err(());
            }
            key.src_addr[10] = 0xff;
            key.src_addr[11] = 0xff;
            key.dst_addr[10] = 0xff;
            key.dst_addr[11] = 0xff;
            let src: [u8; 4] = ctx.load(l3 + 12).map_err(|_| ())?;
            let dst: [u8; 4] = ctx.load(l3 + 16).map_err(|_| ())?;
            key.src_addr[12..16].copy_from_slice(&src);
            key.dst_addr[12..16].copy_from_slice(&dst);
            let total = u32::from(u16::from_be(ctx.load::<u16>(l3 + 2).map_err(|_| ())?));
            // BIG TCP sends IPv4 super-packets with a total length of 0.
            let total = if total == 0 { ctx.len().saturating_sub(l3 as u32) } else { total };
            (l3 + ihl, total.saturating_sub(ihl as u32), false)
        }
        ETH_P_IPV6 => {
            if ctx.load::<u8>(l3 + 6).map_err(|_| ())? != IPPROTO_TCP {
                return Err(());
            }
            key.src_addr = ctx.load(l3 + 8).map_err(|_| ())?;
            key.dst_addr = ctx.load(l3 + 24).map_err(|_| ())?;
            let payload = u32::from(u16::from_be(ctx.load::<u16>(l3 + 4).map_err(|_| ())?));
            // A jumbogram (BIG TCP) says 0 here.
            let payload = if payload == 0 { ctx.len().saturating_sub(l3 as u32 + 40) } else { payload };
            (l3 + 40, payload, true)
        }
        _ => return Err(()),
    };
    key.src_port = u16::from_be(ctx.load::<u16>(l4).map_err(|_| ())?);
    key.dst_port = u16::from_be(ctx.load::<u16>(l4 + 2).map_err(|_| ())?);
    let seq = u32::from_be(ctx.load::<u32>(l4 + TCP_SEQ).map_err(|_| ())?);
    let ack = u32::from_be(ctx.load::<u32>(l4 + TCP_ACK_SEQ).map_err(|_| ())?);
    let data_offset: u8 = ctx.load(l4 + 12).map_err(|_| ())?;
    let tcp_len = usize::from(data_offset >> 4) * 4;
    if tcp_len < 20 {
        return Err(());
    }
    let flags: u8 = ctx.load(l4 + 13).map_err(|_| ())?;
    let payload = ip_payload.saturating_sub(tcp_len as u32);
    let mut segment = Segment { key, ipv6, l3, l4, tcp_len, flags, seq, ack, payload, timestamp_at: 0, sack_at: 0, sack_len: 0, options_readable: true };
    if tcp_len > 20 && find_options(ctx, &mut segment).is_err() {
        segment.options_readable = false;
        segment.timestamp_at = 0;
        segment.sack_at = 0;
    }
    Ok(segment)
}

/// Finds the timestamp and SACK options in the layout TCP stacks send on
/// established connections (Linux, the BSDs, Windows): `NOP NOP TS`, then
/// `NOP NOP SACK`, or `NOP NOP SACK` alone, each 4-byte aligned. Any other
/// layout is refused (`Err`: the segment is dropped for a spliced leg, see
/// the caller), so nothing it carries goes out untranslated. A general walk
/// over the options, byte by byte or word by word, made the verifier
/// explore every layout separately and blew its 1M-instruction limit.
#[inline(always)]
fn find_options(ctx: &TcContext, segment: &mut Segment) -> Result<(), ()> {
    let end = segment.tcp_len;
    let base = segment.l4;
    let mut at = 20usize;
    if at + 12 <= end {
        let word = u32::from_be(ctx.load::<u32>(base + at).map_err(|_| ())?);
        if word == NOP_NOP_TIMESTAMP {
            segment.timestamp_at = at + 2;
            at += 12;
        }
    }
    if at + 4 <= end {
        let word = u32::from_be(ctx.load::<u32>(base + at).map_err(|_| ())?);
        if word >> 8 == NOP_NOP_SACK {
            let size = (word & 0xff) as usize;
            if size < 10 || (size - 2) % 8 != 0 || at + 2 + size > end {
                return Err(());
            }
            segment.sack_at = at + 2;
            segment.sack_len = size;
            at += 2 + size;
        }
    }
    // What is left may only be padding.
    while at < end && at < 20 + MAX_OPTIONS {
        let byte: u8 = ctx.load(base + at).map_err(|_| ())?;
        if byte != TCPOPT_NOP && byte != TCPOPT_EOL {
            return Err(());
        }
        at += 1;
    }
    Ok(())
}

const NOP_NOP_TIMESTAMP: u32 = u32::from_be_bytes([TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10]);
const NOP_NOP_SACK: u32 = u32::from_be_bytes([0, TCPOPT_NOP, TCPOPT_NOP, TCPOPT_SACK]);
