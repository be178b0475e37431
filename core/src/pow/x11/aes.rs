//! One AES encryption round (SubBytes, ShiftRows, MixColumns, AddRoundKey) on a 16-byte block
//! in the standard AES byte order (byte `4c + r` is row r of column c): the building block of
//! ECHO and SHAvite-3. Table-driven and portable; the tables are computed at compile time from
//! the field arithmetic, not typed in.

const fn gmul2(x: u8) -> u8 {
    (x << 1) ^ (if x & 0x80 != 0 { 0x1b } else { 0 })
}

const fn gmul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        a = gmul2(a);
        b >>= 1;
    }
    p
}

const fn make_sbox() -> [u8; 256] {
    let mut sbox = [0u8; 256];
    let mut x = 0usize;
    while x < 256 {
        // Multiplicative inverse in GF(2^8) (0 maps to 0), then the affine map.
        let mut inv = 0u8;
        if x != 0 {
            let mut y = 1usize;
            while y < 256 {
                if gmul(x as u8, y as u8) == 1 {
                    inv = y as u8;
                    break;
                }
                y += 1;
            }
        }
        let b = inv;
        sbox[x] =
            b ^ b.rotate_left(1) ^ b.rotate_left(2) ^ b.rotate_left(3) ^ b.rotate_left(4) ^ 0x63;
        x += 1;
    }
    sbox
}

pub(super) const SBOX: [u8; 256] = make_sbox();

/// T-table: the column SubBytes+MixColumns contributes for an input byte in row 0, as a
/// little-endian u32 (row r of the output column is byte r).
const fn make_t0() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut x = 0;
    while x < 256 {
        let s = SBOX[x];
        t[x] = u32::from_le_bytes([gmul(s, 2), s, s, gmul(s, 3)]);
        x += 1;
    }
    t
}

const T0: [u32; 256] = make_t0();

/// One AES round on four little-endian column words: `SubBytes, ShiftRows, MixColumns`, then
/// XOR `key`.
#[inline]
pub(super) fn round(x: [u32; 4], key: [u32; 4]) -> [u32; 4] {
    let b = |c: usize, r: usize| ((x[c % 4] >> (8 * r)) & 0xff) as usize;
    std::array::from_fn(|c| {
        T0[b(c, 0)]
            ^ T0[b(c + 1, 1)].rotate_left(8)
            ^ T0[b(c + 2, 2)].rotate_left(16)
            ^ T0[b(c + 3, 3)].rotate_left(24)
            ^ key[c]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbox_matches_fips_197() {
        assert_eq!(SBOX[0x00], 0x63);
        assert_eq!(SBOX[0x01], 0x7c);
        assert_eq!(SBOX[0x53], 0xed);
        assert_eq!(SBOX[0xff], 0x16);
    }

    #[test]
    fn round_matches_fips_197_appendix_b() {
        // FIPS-197 Appendix B, round 1: start-of-round state 19 3d e3 be …, round key
        // a0 fa fe 17 …, start of round 2 state a4 9c 7f f2 ….
        let w = |h: &str| -> [u32; 4] {
            let b = hex::decode(h).unwrap();
            std::array::from_fn(|i| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()))
        };
        let out = round(
            w("193de3bea0f4e22b9ac68d2ae9f84808"),
            w("a0fafe1788542cb123a339392a6c7605"),
        );
        assert_eq!(out, w("a49c7ff2689f352b6b5bea43026a5049"));
    }
}
