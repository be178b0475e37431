//! CubeHash16/32-512 (SHA-3 round 2 parameters: 16 rounds per 32-byte block, 160 rounds of
//! initialization and finalization), one-shot over a byte string.
//!
//! The 160 initialization rounds depend only on the parameters (h = 512, b = 32, r = 16), so
//! their result is the constant `IV`; `iv_is_the_specified_setup` re-derives it.

/// State after the 160 setup rounds from `x[0] = h/8, x[1] = b, x[2] = r`, zero elsewhere.
const IV: [u32; 32] = [
    0x2aea_2a61,
    0x50f4_94d4,
    0x2d53_8b8b,
    0x4167_d83e,
    0x3fee_2313,
    0xc701_cf8c,
    0xcc39_968e,
    0x50ac_5695,
    0x4d42_c787,
    0xa647_a8b3,
    0x97cf_0bef,
    0x825b_4537,
    0xeef8_64d2,
    0xf220_90c4,
    0xd0e5_cd33,
    0xa239_11ae,
    0xfcd3_98d9,
    0x148f_e485,
    0x1b01_7bef,
    0xb644_4532,
    0x6a53_6159,
    0x2ff5_781c,
    0x91fa_7934,
    0x0dba_dea9,
    0xd65c_8a2b,
    0xa5a7_0e75,
    0xb1c6_2456,
    0xbc79_6576,
    0x1921_c8f7,
    0xe798_9af1,
    0x7795_d246,
    0xd43e_3b44,
];

/// `n` rounds as the specification states them on x[0..32]: its swaps of word pairs (x_00klm
/// with x_01klm, x_1jk0m with x_1jk1m, …) are index XORs within the lower or upper sixteen
/// words, written as whole-array permutations so they compile to shuffles.
fn rounds(x: &mut [u32; 32], n: usize) {
    let mut lo: [u32; 16] = std::array::from_fn(|j| x[j]);
    let mut hi: [u32; 16] = std::array::from_fn(|j| x[16 + j]);
    for _ in 0..n {
        hi = std::array::from_fn(|j| hi[j].wrapping_add(lo[j]));
        lo = std::array::from_fn(|j| lo[j ^ 8].rotate_left(7) ^ hi[j]);
        hi = std::array::from_fn(|j| hi[j ^ 2].wrapping_add(lo[j]));
        lo = std::array::from_fn(|j| lo[j ^ 4].rotate_left(11) ^ hi[j]);
        hi = std::array::from_fn(|j| hi[j ^ 1]);
    }
    x[..16].copy_from_slice(&lo);
    x[16..].copy_from_slice(&hi);
}

fn absorb(x: &mut [u32; 32], block: &[u8]) {
    for i in 0..8 {
        x[i] ^= u32::from_le_bytes(block[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    }
    rounds(x, 16);
}

/// CubeHash-512 of a byte string.
pub fn cubehash512(data: &[u8]) -> [u8; 64] {
    let mut x = IV;
    let mut chunks = data.chunks_exact(32);
    for block in &mut chunks {
        absorb(&mut x, block);
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 32];
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] = 0x80;
    absorb(&mut x, &last);
    x[31] ^= 1;
    rounds(&mut x, 160);
    let mut out = [0u8; 64];
    for (o, w) in out.chunks_exact_mut(4).zip(&x[..16]) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn iv_is_the_specified_setup() {
        let mut x = [0u32; 32];
        x[0] = 64; // h/8
        x[1] = 32; // b
        x[2] = 16; // r
        super::rounds(&mut x, 160);
        assert_eq!(x, super::IV);
    }

    #[test]
    fn sphlib_vector() {
        // x11-hash-js (a port of sphlib) README: cubehash('The great experiment continues.').
        assert_eq!(
            hex::encode(super::cubehash512(b"The great experiment continues.")),
            "64394bcb9d7844070c8516480ea5f03f68386f33c3829e08bf38bea11f09eba5806aa7831cfbe8e515678b0cad7d4ac888ea2b9ea8f63f0cc918d5a6a76b7ae9"
        );
    }
}
