//! The consistent-hash ring: every endpoint owns points on a 64-bit circle (virtual nodes), as many as
//! its weight asks for, and a key belongs to the owner of the first point at or after the key's hash.
//! Point `k` of an endpoint is a hash of its address and `k` alone, so it is the same in every proxy
//! and does not depend on the other endpoints: adding or removing an endpoint moves only the keys that
//! land on its points, about its share of the weight.

use std::net::SocketAddr;

use super::{hash_bytes, mix64};

/// Ring points each endpoint gets per unit of weight (weights are first divided by their greatest
/// common divisor, so equal weights of any size mean one unit each).
pub const VNODES_PER_WEIGHT: u64 = 128;

/// Most points on one ring (12 bytes each). Past it every endpoint's share is scaled down, each keeping
/// at least one point; keys then move a little more than their share when the set changes.
pub const MAX_RING_POINTS: u64 = 65_536;

/// A built ring: sorted points and, at the same index, the endpoint that owns each.
#[derive(Debug, Default)]
pub(super) struct Ring {
    points: Box<[u64]>,
    owners: Box<[u32]>,
}

impl Ring {
    /// Builds the ring of endpoints at `addrs` with (divisor-reduced) `weights` of the same length.
    pub(super) fn build(addrs: &[SocketAddr], weights: &[u64]) -> Ring {
        let units: u64 = weights.iter().sum();
        if units == 0 {
            return Ring::default();
        }
        let count = |weight: u64| -> u64 {
            if weight == 0 {
                0
            } else if units.saturating_mul(VNODES_PER_WEIGHT) <= MAX_RING_POINTS {
                weight * VNODES_PER_WEIGHT
            } else {
                let scaled = u128::from(weight) * u128::from(MAX_RING_POINTS) / u128::from(units);
                u64::try_from(scaled).unwrap_or(MAX_RING_POINTS).max(1)
            }
        };
        let total: u64 = weights.iter().map(|&w| count(w)).sum();
        let mut entries: Vec<(u64, u32)> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for (index, (addr, &weight)) in addrs.iter().zip(weights).enumerate() {
            let Ok(owner) = u32::try_from(index) else { break };
            for k in 0..count(weight) {
                entries.push((point(addr, k), owner));
            }
        }
        // Ties (vanishingly rare) go to the lower address, so every proxy builds the same ring.
        let addr_of = |owner: u32| addrs.get(owner as usize);
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| addr_of(a.1).cmp(&addr_of(b.1))));
        Ring { points: entries.iter().map(|e| e.0).collect(), owners: entries.iter().map(|e| e.1).collect() }
    }

    /// The endpoint owning `hash`, walking on past points whose owner is not `eligible`.
    pub(super) fn find(&self, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        // Callers may hand in weak hashes (a raw IP, a counter); mixing spreads them over the circle.
        let key = mix64(hash);
        let start = self.points.partition_point(|&p| p < key);
        (0..len).map(|step| (start + step) % len).find_map(|at| {
            let owner = *self.owners.get(at)? as usize;
            eligible(owner).then_some(owner)
        })
    }

    /// How many points the ring has.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.points.len()
    }
}

/// Point `k` of the endpoint at `addr`: the hash of its IP octets, port and `k`, big-endian.
fn point(addr: &SocketAddr, k: u64) -> u64 {
    let mut buf = [0u8; 16 + 2 + 8];
    let ip_len = match addr {
        SocketAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.ip().octets());
            4
        }
        SocketAddr::V6(v6) => {
            buf[..16].copy_from_slice(&v6.ip().octets());
            16
        }
    };
    buf[ip_len..ip_len + 2].copy_from_slice(&addr.port().to_be_bytes());
    buf[ip_len + 2..ip_len + 10].copy_from_slice(&k.to_be_bytes());
    hash_bytes(&buf[..ip_len + 10])
}
