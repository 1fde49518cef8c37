//! IPv4 prefixes: parsing, containment, overlap, and Azure's address allocation in a subnet
//! (the first four addresses and the last one are reserved, so the first usable is `.4`).

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 prefix such as `10.0.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: u32,
    pub len: u8,
}

impl Prefix {
    /// Parses `a.b.c.d/n`; host bits must be zero, as Azure requires.
    pub fn parse(s: &str) -> Option<Prefix> {
        let (a, l) = s.trim().split_once('/')?;
        let ip: Ipv4Addr = a.parse().ok()?;
        let len: u8 = l.parse().ok()?;
        if len > 32 {
            return None;
        }
        let p = Prefix {
            addr: u32::from(ip),
            len,
        };
        (p.addr & !p.mask() == 0).then_some(p)
    }

    pub fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    pub fn first(self) -> u32 {
        self.addr
    }

    pub fn last(self) -> u32 {
        self.addr | !self.mask()
    }

    pub fn contains_ip(self, ip: u32) -> bool {
        ip & self.mask() == self.addr
    }

    pub fn contains(self, other: Prefix) -> bool {
        other.len >= self.len && self.contains_ip(other.addr)
    }

    pub fn overlaps(self, other: Prefix) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// Whether Azure lets a NIC use this address of the subnet (not one of the first four, not
    /// the last).
    pub fn usable(self, ip: u32) -> bool {
        self.contains_ip(ip) && ip >= self.first() + 4 && ip < self.last()
    }

    /// The first usable address not in `used`, from `.4` up.
    pub fn allocate(self, used: &[u32]) -> Option<u32> {
        let start = self.first().checked_add(4)?;
        (start..self.last()).find(|ip| !used.contains(ip))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

pub fn parse_ip(s: &str) -> Option<u32> {
    s.trim().parse::<Ipv4Addr>().ok().map(u32::from)
}

pub fn ip_string(ip: u32) -> String {
    Ipv4Addr::from(ip).to_string()
}
