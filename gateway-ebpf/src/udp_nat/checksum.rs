//! One's-complement checksum updates for fields the kernel's checksum
//! helpers cannot reach: those of the datagram quoted inside an ICMP error
//! (its IPv4 header checksum and UDP checksum are plain 16-bit fields of the
//! ICMP payload, not the packet's own checksums).

/// `sum` after the 16-bit word `old` became `new` (RFC 1624, eqn. 3), all in
/// the same byte order.
#[inline(always)]
pub fn replace16(sum: u16, old: u16, new: u16) -> u16 {
    let mut s = u32::from(!sum) + u32::from(!old) + u32::from(new);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// `sum` after the 4 bytes `old` became `new`.
#[inline(always)]
pub fn replace32(sum: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let sum = replace16(sum, u16::from_ne_bytes([old[0], old[1]]), u16::from_ne_bytes([new[0], new[1]]));
    replace16(sum, u16::from_ne_bytes([old[2], old[3]]), u16::from_ne_bytes([new[2], new[3]]))
}
