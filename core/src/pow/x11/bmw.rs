//! Blue Midnight Wish BMW-512 (SHA-3 round 2 tweak), one-shot over a byte string.

fn s0(x: u64) -> u64 {
    (x >> 1) ^ (x << 3) ^ x.rotate_left(4) ^ x.rotate_left(37)
}
fn s1(x: u64) -> u64 {
    (x >> 1) ^ (x << 2) ^ x.rotate_left(13) ^ x.rotate_left(43)
}
fn s2(x: u64) -> u64 {
    (x >> 2) ^ (x << 1) ^ x.rotate_left(19) ^ x.rotate_left(53)
}
fn s3(x: u64) -> u64 {
    (x >> 2) ^ (x << 2) ^ x.rotate_left(28) ^ x.rotate_left(59)
}
fn s4(x: u64) -> u64 {
    (x >> 1) ^ x
}
fn s5(x: u64) -> u64 {
    (x >> 2) ^ x
}

/// f0's signed sums: for W[i], the indices j of (M[j] ^ H[j]) and whether each is subtracted.
const F0: [[(usize, bool); 5]; 16] = [
    [(5, false), (7, true), (10, false), (13, false), (14, false)],
    [(6, false), (8, true), (11, false), (14, false), (15, true)],
    [(0, false), (7, false), (9, false), (12, true), (15, false)],
    [(0, false), (1, true), (8, false), (10, true), (13, false)],
    [(1, false), (2, false), (9, false), (11, true), (14, true)],
    [(3, false), (2, true), (10, false), (12, true), (15, false)],
    [(4, false), (0, true), (3, true), (11, true), (13, false)],
    [(1, false), (4, true), (5, true), (12, true), (14, true)],
    [(2, false), (5, true), (6, true), (13, false), (15, true)],
    [(0, false), (3, true), (6, false), (7, true), (14, false)],
    [(8, false), (1, true), (4, true), (7, true), (15, false)],
    [(8, false), (0, true), (2, true), (5, true), (9, false)],
    [(1, false), (3, false), (6, true), (9, true), (10, false)],
    [(2, false), (4, false), (7, false), (10, false), (11, false)],
    [(3, false), (5, true), (8, false), (11, true), (12, true)],
    [(12, false), (4, true), (6, true), (9, true), (13, false)],
];

fn add_element(m: &[u64; 16], h: &[u64; 16], j: usize) -> u64 {
    let rot = |i: usize| m[i].rotate_left((i + 1) as u32);
    let k = (j as u64).wrapping_mul(0x0555_5555_5555_5555);
    rot((j - 16) % 16)
        .wrapping_add(rot((j - 13) % 16))
        .wrapping_sub(rot((j - 6) % 16))
        .wrapping_add(k)
        ^ h[(j - 16 + 7) % 16]
}

fn compress(h: &[u64; 16], m: &[u64; 16]) -> [u64; 16] {
    let mut q = [0u64; 32];
    let s = [s0, s1, s2, s3, s4];
    for i in 0..16 {
        let w = F0[i].iter().fold(0u64, |acc, &(j, neg)| {
            let x = m[j] ^ h[j];
            if neg {
                acc.wrapping_sub(x)
            } else {
                acc.wrapping_add(x)
            }
        });
        q[i] = s[i % 5](w).wrapping_add(h[(i + 1) % 16]);
    }
    for j in 16..18 {
        let sf = [s1, s2, s3, s0];
        let mut acc = add_element(m, h, j);
        for k in 0..16 {
            acc = acc.wrapping_add(sf[k % 4](q[j - 16 + k]));
        }
        q[j] = acc;
    }
    for j in 18..32 {
        let rots = [5u32, 11, 27, 32, 37, 43, 53];
        let mut acc = add_element(m, h, j);
        for k in 0..14 {
            let x = q[j - 16 + k];
            acc = acc.wrapping_add(if k % 2 == 0 {
                x
            } else {
                x.rotate_left(rots[k / 2])
            });
        }
        acc = acc.wrapping_add(s4(q[j - 2])).wrapping_add(s5(q[j - 1]));
        q[j] = acc;
    }
    let xl = q[16..24].iter().fold(0, |a, x| a ^ x);
    let xh = xl ^ q[24..32].iter().fold(0, |a, x| a ^ x);
    let mut o = [0u64; 16];
    o[0] = ((xh << 5) ^ (q[16] >> 5) ^ m[0]).wrapping_add(xl ^ q[24] ^ q[0]);
    o[1] = ((xh >> 7) ^ (q[17] << 8) ^ m[1]).wrapping_add(xl ^ q[25] ^ q[1]);
    o[2] = ((xh >> 5) ^ (q[18] << 5) ^ m[2]).wrapping_add(xl ^ q[26] ^ q[2]);
    o[3] = ((xh >> 1) ^ (q[19] << 5) ^ m[3]).wrapping_add(xl ^ q[27] ^ q[3]);
    o[4] = ((xh >> 3) ^ q[20] ^ m[4]).wrapping_add(xl ^ q[28] ^ q[4]);
    o[5] = ((xh << 6) ^ (q[21] >> 6) ^ m[5]).wrapping_add(xl ^ q[29] ^ q[5]);
    o[6] = ((xh >> 4) ^ (q[22] << 6) ^ m[6]).wrapping_add(xl ^ q[30] ^ q[6]);
    o[7] = ((xh >> 11) ^ (q[23] << 2) ^ m[7]).wrapping_add(xl ^ q[31] ^ q[7]);
    let tail = [
        ((xl << 8), 23usize),
        ((xl >> 6), 16),
        ((xl << 6), 17),
        ((xl << 4), 18),
        ((xl >> 3), 19),
        ((xl >> 4), 20),
        ((xl >> 7), 21),
        ((xl >> 2), 22),
    ];
    for i in 0..8 {
        let (xl_shift, qi) = tail[i];
        o[8 + i] = o[(i + 4) % 8]
            .rotate_left(9 + i as u32)
            .wrapping_add(xh ^ q[24 + i] ^ m[8 + i])
            .wrapping_add(xl_shift ^ q[qi] ^ q[8 + i]);
    }
    o
}

fn words(block: &[u8]) -> [u64; 16] {
    std::array::from_fn(|i| {
        u64::from_le_bytes(block[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    })
}

/// BMW-512 of a byte string.
pub fn bmw512(data: &[u8]) -> [u8; 64] {
    let mut h: [u64; 16] =
        std::array::from_fn(|i| 0x8081_8283_8485_8687u64 + 0x0808_0808_0808_0808 * i as u64);
    let mut chunks = data.chunks_exact(128);
    for block in &mut chunks {
        h = compress(&h, &words(block));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 256];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 120 { 128 } else { 256 };
    tail[tail_len - 8..tail_len].copy_from_slice(&((data.len() as u64) * 8).to_le_bytes());
    for block in tail[..tail_len].chunks_exact(128) {
        h = compress(&h, &words(block));
    }
    // Final transformation: compress the chaining value under a constant key.
    let fin: [u64; 16] = std::array::from_fn(|i| 0xaaaa_aaaa_aaaa_aaa0 + i as u64);
    let h = compress(&fin, &h);
    let mut out = [0u8; 64];
    for (o, w) in out.chunks_exact_mut(8).zip(&h[8..]) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sphlib_vector() {
        // x11-hash-js (a port of sphlib) README: bmw('The great experiment continues.').
        assert_eq!(
            hex::encode(super::bmw512(b"The great experiment continues.")),
            "7b30b4f1ccd83692bc6a01b1f7e374b59b81da6b21421679ae59d84c4f73afec5a0857565b6ebc1b9ddf9da5e75bf1ecd0ba6f5a75b7926ba9278385fb83533c"
        );
    }
}
