//! ECHO-512 (SHA-3 round 2): a 2048-bit state of sixteen 128-bit words, ten rounds of
//! BIG.SubWords (two AES rounds keyed by the bit counter, then the zero salt), BIG.ShiftRows
//! and BIG.MixColumns, over 1024-bit message blocks.

use super::aes;

type Word = [u32; 4];

fn xtime4(x: u32) -> u32 {
    // Multiply each of the four packed bytes by 2 in GF(2^8).
    ((x & 0x8080_8080) >> 7).wrapping_mul(0x1b) ^ ((x & 0x7f7f_7f7f) << 1)
}

fn compress(v: &mut [Word; 8], block: &[u8; 128], counter: u128) {
    let mut w = [[0u32; 4]; 16];
    w[..8].copy_from_slice(v);
    for i in 0..8 {
        for j in 0..4 {
            let o = 16 * i + 4 * j;
            w[8 + i][j] = u32::from_le_bytes(block[o..o + 4].try_into().expect("4 bytes"));
        }
    }
    let mut k = counter;
    for _ in 0..10 {
        for x in w.iter_mut() {
            let key = [
                k as u32,
                (k >> 32) as u32,
                (k >> 64) as u32,
                (k >> 96) as u32,
            ];
            *x = aes::round(aes::round(*x, key), [0; 4]);
            k = k.wrapping_add(1);
        }
        // BIG.ShiftRows: word 4c + r is row r of column c; row r rotates left by r columns.
        let old = w;
        for c in 0..4 {
            for r in 1..4 {
                w[4 * c + r] = old[4 * ((c + r) % 4) + r];
            }
        }
        // BIG.MixColumns: AES MixColumns on each byte position across a column of words.
        for c in 0..4 {
            for n in 0..4 {
                let (a, b, cc, d) = (
                    w[4 * c][n],
                    w[4 * c + 1][n],
                    w[4 * c + 2][n],
                    w[4 * c + 3][n],
                );
                let (ab, bc, cd) = (a ^ b, b ^ cc, cc ^ d);
                let (abx, bcx, cdx) = (xtime4(ab), xtime4(bc), xtime4(cd));
                w[4 * c][n] = abx ^ bc ^ d;
                w[4 * c + 1][n] = bcx ^ a ^ cd;
                w[4 * c + 2][n] = cdx ^ ab ^ d;
                w[4 * c + 3][n] = abx ^ bcx ^ cdx ^ ab ^ cc;
            }
        }
    }
    for i in 0..8 {
        for j in 0..4 {
            let o = 16 * i + 4 * j;
            let m = u32::from_le_bytes(block[o..o + 4].try_into().expect("4 bytes"));
            v[i][j] ^= m ^ w[i][j] ^ w[i + 8][j];
        }
    }
}

/// ECHO-512 of a byte string.
pub fn echo512(data: &[u8]) -> [u8; 64] {
    let mut v = [[512u32, 0, 0, 0]; 8];
    let mut counter: u128 = 0;
    let mut chunks = data.chunks_exact(128);
    for block in &mut chunks {
        counter += 1024;
        compress(&mut v, block.try_into().expect("128-byte chunk"), counter);
    }
    let rest = chunks.remainder();
    let total_bits = (data.len() as u128) * 8;
    // The final block is keyed by the total bit count, or by 0 when it holds no message bit.
    let key = if rest.is_empty() { 0 } else { total_bits };
    let mut buf = [0u8; 128];
    buf[..rest.len()].copy_from_slice(rest);
    buf[rest.len()] = 0x80;
    if rest.len() + 1 > 128 - 18 {
        compress(&mut v, &buf, key);
        buf = [0; 128];
        buf[110..112].copy_from_slice(&512u16.to_le_bytes());
        buf[112..].copy_from_slice(&total_bits.to_le_bytes());
        compress(&mut v, &buf, 0);
    } else {
        buf[110..112].copy_from_slice(&512u16.to_le_bytes());
        buf[112..].copy_from_slice(&total_bits.to_le_bytes());
        compress(&mut v, &buf, key);
    }
    let mut out = [0u8; 64];
    for (i, word) in v[..4].iter().enumerate() {
        for (j, x) in word.iter().enumerate() {
            out[16 * i + 4 * j..16 * i + 4 * j + 4].copy_from_slice(&x.to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sphlib_vector() {
        // x11-hash-js (a port of sphlib) README: echo('The great experiment continues.').
        assert_eq!(
            hex::encode(super::echo512(b"The great experiment continues.")),
            "b1db282b1672f3423c1e1bdf4496a8ddda0b6f483e92e9a8be2efbaab0ea230814f1f1485d919285deac13794dc215000eb39a47ac32bfc07299a0475049be2e"
        );
    }
}
