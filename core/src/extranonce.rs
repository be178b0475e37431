//! extranonce1 allocation, unique across every port of an instance and across instances.
//!
//! The original seeded a per-port counter with `port × 10000 + seed`, so two ports collided
//! after 10000 connections and two instances with equal settings handed out identical values
//! while building identical coinbases. Here one allocator serves every
//! port of an instance, and the configured server number is part of the value itself:
//!
//! | size | layout (big-endian)                          | per instance       |
//! |------|----------------------------------------------|--------------------|
//! | 4    | server number (1 byte) ‖ counter (3 bytes)   | 16 777 216 live    |
//! | 8    | server number (2 bytes) ‖ counter (6 bytes)  | 2^48 live          |
//!
//! Values in use are tracked, so a wrapped counter skips live ones instead of reusing them.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtranonceError {
    #[error("extranonce1 size must be 4 or 8 bytes, got {0}")]
    Size(usize),
    #[error(
        "server_number {server} does not fit a {size}-byte extranonce1 (maximum {max}); use a smaller server_number or extranonce1_size: 8"
    )]
    ServerNumber { server: u16, size: usize, max: u16 },
}

#[derive(Debug)]
pub struct ExtranonceAllocator {
    server: u16,
    size: usize,
    counter_bits: u32,
    next: u64,
    in_use: HashSet<u64>,
}

impl ExtranonceAllocator {
    /// `start` spreads the first values (callers pass a value derived from the instance seed,
    /// so a restarted instance does not hand a reconnecting miner its old extranonce1).
    pub fn new(server: u16, size: usize, start: u64) -> Result<Self, ExtranonceError> {
        let (server_bits, counter_bits) = match size {
            4 => (8, 24),
            8 => (16, 48),
            other => return Err(ExtranonceError::Size(other)),
        };
        let max = ((1u32 << server_bits) - 1) as u16;
        if u32::from(server) > u32::from(max) {
            return Err(ExtranonceError::ServerNumber { server, size, max });
        }
        Ok(ExtranonceAllocator {
            server,
            size,
            counter_bits,
            next: start & ((1u64 << counter_bits) - 1),
            in_use: HashSet::new(),
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn live(&self) -> usize {
        self.in_use.len()
    }

    /// A fresh extranonce1, or `None` when every counter value is live (the driver refuses the
    /// connection).
    pub fn allocate(&mut self) -> Option<Vec<u8>> {
        let space = 1u64 << self.counter_bits;
        if self.in_use.len() as u64 >= space {
            return None;
        }
        let mask = space - 1;
        loop {
            let candidate = self.next;
            self.next = (self.next + 1) & mask;
            if self.in_use.insert(candidate) {
                return Some(self.encode(candidate));
            }
        }
    }

    /// Returns a value to the pool when its connection ends. Unknown values are ignored.
    pub fn release(&mut self, extranonce1: &[u8]) {
        if extranonce1.len() != self.size {
            return;
        }
        let mut buf = [0u8; 8];
        buf[8 - self.size..].copy_from_slice(extranonce1);
        let v = u64::from_be_bytes(buf) & ((1u64 << self.counter_bits) - 1);
        self.in_use.remove(&v);
    }

    fn encode(&self, counter: u64) -> Vec<u8> {
        let v = (u64::from(self.server) << self.counter_bits) | counter;
        v.to_be_bytes()[8 - self.size..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_number_separates_instances() {
        let mut a = ExtranonceAllocator::new(1, 4, 0).unwrap();
        let mut b = ExtranonceAllocator::new(2, 4, 0).unwrap();
        let va: HashSet<_> = (0..1000).map(|_| a.allocate().unwrap()).collect();
        let vb: HashSet<_> = (0..1000).map(|_| b.allocate().unwrap()).collect();
        assert!(va.is_disjoint(&vb));
        assert_eq!(a.allocate().unwrap(), vec![1, 0, 0x03, 0xe8]);
    }

    #[test]
    fn wrap_skips_live_values() {
        let mut a = ExtranonceAllocator::new(0, 4, (1 << 24) - 2).unwrap();
        let first = a.allocate().unwrap();
        let second = a.allocate().unwrap();
        assert_eq!(first, vec![0, 0xff, 0xff, 0xfe]);
        assert_eq!(second, vec![0, 0xff, 0xff, 0xff]);
        assert_eq!(a.allocate().unwrap(), vec![0, 0, 0, 0]);
        a.release(&second);
        // Counter continues forward; released values come back only after a wrap.
        assert_eq!(a.allocate().unwrap(), vec![0, 0, 0, 1]);
        assert_eq!(a.live(), 3);
    }

    #[test]
    fn config_errors_name_the_fix() {
        let e = ExtranonceAllocator::new(300, 4, 0).unwrap_err();
        assert!(e.to_string().contains("extranonce1_size: 8"));
        assert!(ExtranonceAllocator::new(0, 5, 0).is_err());
        assert_eq!(
            ExtranonceAllocator::new(300, 8, 0)
                .unwrap()
                .allocate()
                .unwrap(),
            vec![1, 0x2c, 0, 0, 0, 0, 0, 0]
        );
    }
}
