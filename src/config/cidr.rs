//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address),
//! for `listeners.*.trusted_sources`.

use std::net::IpAddr;

/// A network: every address whose first `prefix` bits equal `network`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x:y::/n` or a bare address (the one-address network);
    /// host bits set below the prefix are an error (`10.0.0.1/8` is likely a typo).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("an IP address or network like \"10.0.0.0/8\", got \"{text}\""))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= width && (p == "0" || !p.starts_with('0')) => n,
                _ => return Err(format!("a prefix length from 0 to {width} in \"{text}\"")),
            },
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != bits(network) {
            return Err(format!("no address bits past the /{prefix} prefix in \"{text}\""));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == bits(self.network)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(width - self.prefix);
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        bits(ip) & mask
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let ten = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(ten.contains(ip("10.255.1.2")));
        assert!(!ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped counts as IPv4");
        assert!(!ten.contains(ip("::1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        let six = Cidr::parse("2001:db8::/32").unwrap();
        assert!(six.contains(ip("2001:db8:ffff::1")) && !six.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
    }

    #[test]
    fn typos_are_errors() {
        for (text, says) in [
            ("10.0.0.1/8", "no address bits past the /8 prefix"),
            ("10.0.0.0/33", "a prefix length from 0 to 32"),
            ("10.0.0.0/08", "a prefix length from 0 to 32"),
            ("10.0.0.0/", "a prefix length"),
            ("::/129", "a prefix length from 0 to 128"),
            ("localhost", "an IP address or network"),
            ("10.0.0/8", "an IP address or network"),
        ] {
            let error = Cidr::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
