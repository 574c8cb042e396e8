//! Client CIDRs as a policy writes them: `10.0.0.0/8`, `2001:db8::/32`, or a
//! bare address (`192.0.2.7` is a /32, `2001:db8::1` a /128).
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network. Its address is the network address: host bits a
/// policy sets (`10.1.2.3/8`) are cleared, as Go's `net.ParseCIDR` (which
/// Kubernetes uses) clears them. An IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) is the IPv4 network it maps (`10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR was refused; its message names the input and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrError {
    input: String,
    problem: String,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CIDR {:?}: {}", self.input, self.problem)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The network of `addr` with `prefix_len` leading bits (host bits cleared).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix_len > max {
            return Err(CidrError {
                input: format!("{addr}/{prefix_len}"),
                problem: format!(
                    "prefix length {prefix_len} is longer than the {max} bits of an {} address",
                    family(addr)
                ),
            });
        }
        Ok(normalize(addr, prefix_len))
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` is in this network (an IPv4 network never holds an IPv6
    /// address, nor the reverse; IPv4-mapped addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = Cidr::new(ip, max_prefix(ip))
            .expect("a full-length prefix is valid")
            .addr;
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_v4(ip, self.prefix_len) == net,
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_v6(ip, self.prefix_len) == net,
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Cidr, CidrError> {
        let refuse = |problem: String| CidrError {
            input: input.to_string(),
            problem,
        };
        if input.is_empty() {
            return Err(refuse("it is empty; expected an address with an optional prefix length, like 10.0.0.0/8 or 2001:db8::/32".into()));
        }
        let (address, prefix) = match input.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (input, None),
        };
        let addr: IpAddr = address.parse().map_err(|_| {
            refuse(format!("{address:?} is not an IPv4 or IPv6 address (no spaces, zones or leading zeros; like 10.0.0.0/8 or 2001:db8::/32)"))
        })?;
        let prefix_len = match prefix {
            None => u16::from(max_prefix(addr)),
            Some(p) if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(refuse(format!(
                    "the prefix length {p:?} is not a number from 0 to {}",
                    max_prefix(addr)
                )));
            }
            Some(p) => p.parse::<u16>().expect("1 to 3 digits"),
        };
        let max = max_prefix(addr);
        if prefix_len > u16::from(max) {
            return Err(refuse(format!(
                "prefix length {prefix_len} is longer than the {max} bits of an {} address",
                family(addr)
            )));
        }
        Ok(normalize(addr, prefix_len as u8))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Clears host bits; an IPv4-mapped network of at least /96 becomes IPv4.
fn normalize(addr: IpAddr, prefix_len: u8) -> Cidr {
    match addr {
        IpAddr::V4(v4) => Cidr {
            addr: IpAddr::V4(mask_v4(v4, prefix_len)),
            prefix_len,
        },
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) if prefix_len >= 96 => Cidr {
                addr: IpAddr::V4(mask_v4(v4, prefix_len - 96)),
                prefix_len: prefix_len - 96,
            },
            _ => Cidr {
                addr: IpAddr::V6(mask_v6(v6, prefix_len)),
                prefix_len,
            },
        },
    }
}

fn mask_v4(addr: Ipv4Addr, prefix_len: u8) -> Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) & mask)
}

fn mask_v6(addr: Ipv6Addr, prefix_len: u8) -> Ipv6Addr {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0);
    Ipv6Addr::from(u128::from(addr) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn refusal(s: &str) -> String {
        s.parse::<Cidr>().expect_err(s).to_string()
    }

    #[test]
    fn networks_of_both_families_parse_with_their_prefix() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(cidr("::/0").to_string(), "::/0");
        assert_eq!(cidr("198.18.1.1/32").prefix_len(), 32);
    }

    #[test]
    fn bare_addresses_are_single_hosts() {
        assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(cidr("2001:db8::1").to_string(), "2001:db8::1/128");
    }

    #[test]
    fn host_bits_are_cleared_like_go_parse_cidr() {
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("2001:db8:1:2::5/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("255.255.255.255/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn ipv4_mapped_networks_are_the_ipv4_networks_they_map() {
        assert_eq!(cidr("::ffff:10.0.0.0/104"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("::ffff:198.18.1.1"), cidr("198.18.1.1/32"));
        assert_eq!(cidr("::ffff:0.0.0.0/96"), cidr("0.0.0.0/0"));
        // Shorter than /96 it also holds non-mapped IPv6 space: it stays IPv6.
        assert_eq!(cidr("::ffff:0:0/95").to_string(), "::fffe:0:0/95");
    }

    #[test]
    fn containment_respects_the_prefix_and_the_family() {
        assert!(cidr("10.0.0.0/8").contains("10.255.1.2".parse().unwrap()));
        assert!(!cidr("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        assert!(cidr("2001:db8::/32").contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(
            cidr("10.0.0.0/8").contains("::ffff:10.0.0.1".parse().unwrap()),
            "a mapped client is IPv4"
        );
        assert!(
            !cidr("::/0").contains("10.0.0.1".parse().unwrap()),
            "an IPv6 network holds no IPv4 client"
        );
        assert!(!cidr("0.0.0.0/0").contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn bad_input_is_refused_saying_what_is_wrong() {
        assert_eq!(refusal(""), "invalid CIDR \"\": it is empty; expected an address with an optional prefix length, like 10.0.0.0/8 or 2001:db8::/32");
        assert!(
            refusal("10.0.0.0/33")
                .contains("prefix length 33 is longer than the 32 bits of an IPv4 address"),
            "{}",
            refusal("10.0.0.0/33")
        );
        assert!(refusal("2001:db8::/129")
            .contains("prefix length 129 is longer than the 128 bits of an IPv6 address"));
        assert!(
            refusal("10.0.0.0/").contains("the prefix length \"\" is not a number from 0 to 32")
        );
        assert!(refusal("10.0.0.0/-1").contains("the prefix length \"-1\" is not a number"));
        assert!(refusal("10.0.0.0/+8").contains("is not a number"));
        assert!(refusal("10.0.0.0/8/8").contains("is not a number"));
        assert!(refusal("10.0.0.0/1000").contains("is not a number"));
        assert!(refusal("10.0.0/8").contains("\"10.0.0\" is not an IPv4 or IPv6 address"));
        assert!(refusal("010.0.0.1").contains("is not an IPv4 or IPv6 address"));
        assert!(refusal(" 10.0.0.0/8").contains("is not an IPv4 or IPv6 address"));
        assert!(refusal("fe80::1%eth0").contains("is not an IPv4 or IPv6 address"));
        assert!(refusal("example.com/24").contains("is not an IPv4 or IPv6 address"));
        assert!(refusal("/8").contains("\"\" is not an IPv4 or IPv6 address"));
    }

    #[test]
    fn new_refuses_a_prefix_longer_than_the_address() {
        let e = Cidr::new("10.0.0.0".parse().unwrap(), 40).unwrap_err();
        assert_eq!(e.to_string(), "invalid CIDR \"10.0.0.0/40\": prefix length 40 is longer than the 32 bits of an IPv4 address");
        assert_eq!(
            Cidr::new("10.9.9.9".parse().unwrap(), 16)
                .unwrap()
                .to_string(),
            "10.9.0.0/16"
        );
    }
}
