//! SHAvite-3-512 (SHA-3 round 2, "tweaked" version that follows the specification's
//! little-endian AES), one-shot over a byte string. A 14-round generalized Feistel network over
//! four 128-bit lanes whose F functions are four keyless AES rounds; the 448 round-key words
//! expand the 1024-bit message block with AES rounds and linear steps, mixing in the bit
//! counter at four fixed places.

use super::aes;

const IV: [u32; 16] = [
    0x72fccdd8, 0x79ca4727, 0x128a077b, 0x40d55aec, 0xd1901a06, 0x430ae307, 0xb29f5cd1, 0xdf07fbfc,
    0x8e45d73d, 0x681ab538, 0xbde86578, 0xdd577e47, 0xe275eade, 0x502d9fcd, 0xb9357178, 0x022a4b9a,
];

fn expand_step(rk: &mut [u32; 448], u: usize) {
    let x = aes::round([rk[u - 31], rk[u - 30], rk[u - 29], rk[u - 32]], [0; 4]);
    for i in 0..4 {
        rk[u + i] = x[i] ^ rk[u - 4 + i];
    }
}

fn compress(h: &mut [u32; 16], block: &[u8], cnt: [u32; 4]) {
    let mut rk = [0u32; 448];
    for (i, w) in rk[..32].iter_mut().enumerate() {
        *w = u32::from_le_bytes(block[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    }
    let mut u = 32;
    loop {
        for _ in 0..4 {
            expand_step(&mut rk, u);
            // The counter enters the key schedule at four fixed places, each time in a
            // different word order and with one word complemented.
            let tweak = match u {
                32 => Some([cnt[0], cnt[1], cnt[2], !cnt[3]]),
                440 => Some([cnt[1], cnt[0], cnt[3], !cnt[2]]),
                _ => None,
            };
            if let Some(t) = tweak {
                for i in 0..4 {
                    rk[u + i] ^= t[i];
                }
            }
            u += 4;
            expand_step(&mut rk, u);
            let tweak = match u {
                164 => Some([cnt[3], cnt[2], cnt[1], !cnt[0]]),
                316 => Some([cnt[2], cnt[3], cnt[0], !cnt[1]]),
                _ => None,
            };
            if let Some(t) = tweak {
                for i in 0..4 {
                    rk[u + i] ^= t[i];
                }
            }
            u += 4;
        }
        if u == 448 {
            break;
        }
        for _ in 0..8 {
            for i in 0..4 {
                rk[u + i] = rk[u - 32 + i] ^ rk[u - 7 + i];
            }
            u += 4;
        }
    }

    let mut p: [[u32; 4]; 4] =
        std::array::from_fn(|i| [h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]]);
    let mut k = rk.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
    let mut f = |x: [u32; 4]| {
        let mut x = x;
        for _ in 0..4 {
            let key = k.next().expect("448 round-key words");
            x = aes::round(std::array::from_fn(|i| x[i] ^ key[i]), [0; 4]);
        }
        x
    };
    for _ in 0..14 {
        let a = f(p[1]);
        let b = f(p[3]);
        for i in 0..4 {
            p[0][i] ^= a[i];
            p[2][i] ^= b[i];
        }
        p = [p[3], p[0], p[1], p[2]];
    }
    for i in 0..16 {
        h[i] ^= p[i / 4][i % 4];
    }
}

fn counter_words(bits: u128) -> [u32; 4] {
    [
        bits as u32,
        (bits >> 32) as u32,
        (bits >> 64) as u32,
        (bits >> 96) as u32,
    ]
}

/// SHAvite-3-512 of a byte string.
pub fn shavite512(data: &[u8]) -> [u8; 64] {
    let mut h = IV;
    let mut done: u128 = 0;
    let mut chunks = data.chunks_exact(128);
    for block in &mut chunks {
        done += 1024;
        compress(&mut h, block, counter_words(done));
    }
    let rest = chunks.remainder();
    let total = (data.len() as u128) * 8;
    let mut buf = [0u8; 128];
    buf[..rest.len()].copy_from_slice(rest);
    buf[rest.len()] = 0x80;
    // A final block without message bits, or the extra block after a full one, is keyed by a
    // zero counter; the length field always carries the total.
    let mut key = if rest.is_empty() { 0 } else { total };
    if rest.len() >= 110 {
        compress(&mut h, &buf, counter_words(total));
        buf = [0; 128];
        key = 0;
    }
    buf[110..126].copy_from_slice(&total.to_le_bytes());
    buf[126..128].copy_from_slice(&512u16.to_le_bytes());
    compress(&mut h, &buf, counter_words(key));
    let mut out = [0u8; 64];
    for (o, w) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sphlib_vector() {
        // x11-hash-js (a port of sphlib) README: shavite('The great experiment continues.').
        assert_eq!(
            hex::encode(super::shavite512(b"The great experiment continues.")),
            "6fbca2d53a26e22e6df1a8064230bdb98c0a612b64dad958f16757cf8ee8526862a0e4f56be69b98b07f0ea47db7211cf42352443fc806013374e819f26cb923"
        );
    }
}
