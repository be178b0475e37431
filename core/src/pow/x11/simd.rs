//! SIMD-512 (SHA-3 round 2, the "v1.1" tweak of September 2009 with the revised rotations and
//! permutations), one-shot over a byte string.
//!
//! The state is four registers A, B, C, D of eight 32-bit words. Each 1024-bit block is expanded
//! by a number-theoretic transform over Z/257 (256 points, root 41) followed by the inner codes
//! ×185 and ×233, giving the 32 × 8 message words of four rounds of eight Feistel-like steps
//! (IF for the first four steps of a round, MAJ for the last four). Four more steps take the
//! chaining value itself as message words (the modified Davies–Meyer feed-forward).
//!
//! Padding is SIMD's own, not Merkle–Damgård's: the last partial block is zero-filled (no `0x80`
//! marker), and a final block holding only the 64-bit bit length is compressed with the
//! "final" tweak, which adds X^253 to the expanded polynomial.

/// Chaining value after compressing "SIMD-512 v1.1" (zero-padded) from the all-zero state with
/// the non-final tweak, as the specification defines the IV; `iv_is_the_specified_derivation`
/// recomputes it.
const IV: [[u32; 8]; 4] = [
    [
        0x0ba1_6b95,
        0x72f9_99ad,
        0x9fec_c2ae,
        0xba32_64fc,
        0x5e89_4929,
        0x8e9f_30e5,
        0x2f1d_aa37,
        0xf0f2_c558,
    ],
    [
        0xac50_6643,
        0xa906_35a5,
        0xe25b_878b,
        0xaab7_878f,
        0x8881_7f7a,
        0x0a02_892b,
        0x559a_7550,
        0x598f_657e,
    ],
    [
        0x7eef_60a1,
        0x6b70_e3e8,
        0x9c17_14d1,
        0xb958_e2a8,
        0xab02_675e,
        0xed1c_014f,
        0xcd8d_65bb,
        0xfdb7_a257,
    ],
    [
        0x0925_4899,
        0xd699_c7bc,
        0x9019_b6dc,
        0x2b90_22e4,
        0x8fa1_4956,
        0x21bf_9bd3,
        0xb94d_0943,
        0x6ffd_dc22,
    ],
];

const P: i32 = 257;

/// 41 is a primitive 256th root of unity modulo 257; `POW[i]` = 41^i mod 257.
const POW: [i32; 256] = {
    let mut t = [0i32; 256];
    let mut x = 1i32;
    let mut i = 0;
    while i < 256 {
        t[i] = x;
        x = x * 41 % P;
        i += 1;
    }
    t
};

/// Step k of the 32 message steps reads 16 consecutive-by-two NTT outputs: word j is
/// `(Z[lo + 2j + hi_offset] << 16) | Z[lo + 2j]` with `(lo, hi_offset) = WORD_SOURCE[k]`. The
/// block order is the specification's (tweaked) message permutation: steps 0–15 pair
/// neighbouring outputs, steps 16–31 pair outputs 128 apart (even then odd indices).
const WORD_SOURCE: [(usize, usize); 32] = [
    (64, 1),
    (96, 1),
    (0, 1),
    (32, 1),
    (112, 1),
    (80, 1),
    (48, 1),
    (16, 1),
    (240, 1),
    (176, 1),
    (192, 1),
    (128, 1),
    (144, 1),
    (208, 1),
    (160, 1),
    (224, 1),
    (16, 128),
    (32, 128),
    (112, 128),
    (64, 128),
    (96, 128),
    (80, 128),
    (0, 128),
    (48, 128),
    (97, 128),
    (1, 128),
    (17, 128),
    (113, 128),
    (49, 128),
    (81, 128),
    (65, 128),
    (33, 128),
];

/// Step i adds `rotl(A, r)[j ^ PERM_XOR[i % 7]]` into word j: the tweaked inter-ladder
/// permutations that mix the eight parallel Feistel ladders.
const PERM_XOR: [usize; 7] = [1, 6, 2, 3, 5, 7, 4];

/// Rotation amounts (r, s, t, u) of the four rounds; step m of a round uses the pair
/// (rot[m % 4], rot[(m + 1) % 4]).
const ROUND_ROT: [[u32; 4]; 4] = [
    [3, 23, 17, 27],
    [28, 19, 22, 7],
    [29, 9, 15, 5],
    [4, 13, 10, 25],
];

/// NTT of the 128 message bytes plus X^255 (always) and X^253 (final block): y_i =
/// Σ_j x_j·41^(ij) mod 257, centred into -128..=128.
fn expand(block: &[u8; 128], last: bool) -> [i32; 256] {
    let mut a = [0i32; 256];
    for (d, &b) in a.iter_mut().zip(block) {
        *d = i32::from(b);
    }
    a[255] = 1;
    if last {
        a[253] = 1;
    }
    // Iterative radix-2 Cooley–Tukey: bit-reversed input order, natural output order.
    for i in 0..256usize {
        let j = (i as u8).reverse_bits() as usize;
        if i < j {
            a.swap(i, j);
        }
    }
    // Only the twiddle products are reduced inside the loop, and only partially
    // (256 ≡ -1, so x ≡ (x & 255) - (x >> 8)): a bound B on |a| becomes at most 2B + 256 per
    // stage, about 2^17 after all eight, so products stay far inside i32 until the final
    // reduction.
    let mut len = 2;
    while len <= 256 {
        let stride = 256 / len;
        for chunk in a.chunks_exact_mut(len) {
            let (lo, hi) = chunk.split_at_mut(len / 2);
            for ((u, v), w) in lo.iter_mut().zip(hi).zip(POW.iter().step_by(stride)) {
                let p = *v * w;
                let t = (p & 255) - (p >> 8);
                (*u, *v) = (*u + t, *u - t);
            }
        }
        len *= 2;
    }
    for y in a.iter_mut() {
        *y = y.rem_euclid(P);
        if *y > 128 {
            *y -= P;
        }
    }
    a
}

/// One step on registers `s = [A, B, C, D]`, then the role rotation (A, B, C, D) ← (D, A, B, C),
/// so that after every four steps each register is back in its place. The Boolean function is
/// MAJ when `MAJ` is set, IF otherwise.
fn step<const MAJ: bool>(s: &mut [[u32; 8]; 4], w: &[u32; 8], i: usize, r: u32, rs: u32) {
    let ra: [u32; 8] = std::array::from_fn(|j| s[0][j].rotate_left(r));
    let p = PERM_XOR[i % 7];
    for j in 0..8 {
        let (x, y, z) = (s[0][j], s[1][j], s[2][j]);
        let f = if MAJ {
            (z & y) | ((z | y) & x)
        } else {
            ((y ^ z) & x) ^ z
        };
        let d = s[3][j].wrapping_add(w[j]).wrapping_add(f);
        s[3][j] = d.rotate_left(rs).wrapping_add(ra[j ^ p]);
    }
    s[0] = ra;
    *s = [s[3], s[0], s[1], s[2]];
}

fn compress(s: &mut [[u32; 8]; 4], block: &[u8; 128], last: bool) {
    let y = expand(block, last);
    let saved = *s;
    for (k, reg) in s.iter_mut().enumerate() {
        for (j, word) in reg.iter_mut().enumerate() {
            let o = 32 * k + 4 * j;
            *word ^= u32::from_le_bytes(block[o..o + 4].try_into().expect("4 bytes"));
        }
    }
    for round in 0..4 {
        let code = if round < 2 { 185 } else { 233 };
        // The inner code maps -128..=128 into a signed 16-bit value; its low 16 bits are
        // what the word carries.
        let z = |i: usize| u32::from((y[i] * code) as u16);
        let rot = ROUND_ROT[round];
        for m in 0..8 {
            let i = 8 * round + m;
            let (lo, hi) = WORD_SOURCE[i];
            let w: [u32; 8] = std::array::from_fn(|j| (z(lo + 2 * j + hi) << 16) | z(lo + 2 * j));
            if m < 4 {
                step::<false>(s, &w, i, rot[m % 4], rot[(m + 1) % 4]);
            } else {
                step::<true>(s, &w, i, rot[m % 4], rot[(m + 1) % 4]);
            }
        }
    }
    let ff = ROUND_ROT[3];
    for m in 0..4 {
        step::<false>(s, &saved[m], 32 + m, ff[m], ff[(m + 1) % 4]);
    }
}

/// SIMD-512 of a byte string.
pub fn simd512(data: &[u8]) -> [u8; 64] {
    let mut s = IV;
    let mut chunks = data.chunks_exact(128);
    for block in &mut chunks {
        compress(&mut s, block.try_into().expect("128 bytes"), false);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut buf = [0u8; 128];
        buf[..rest.len()].copy_from_slice(rest);
        compress(&mut s, &buf, false);
    }
    let mut buf = [0u8; 128];
    buf[..8].copy_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    compress(&mut s, &buf, true);
    let mut out = [0u8; 64];
    for (o, w) in out.chunks_exact_mut(4).zip(s[0].iter().chain(&s[1])) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sphlib_vector() {
        // x11-hash-js (a port of sphlib) README: simd('The great experiment continues.').
        assert_eq!(
            hex::encode(simd512(b"The great experiment continues.")),
            "13ae2c08260f7d5abcfa791446800c1eaed8c5332ec437222428a28823aa2ba19a5907a2c860c12c0b894bdf9c0d64f807cb9512f1ed42980d15747ff4a26c1c"
        );
    }

    /// SHA-3 competition ShortMsgKAT_512 for SIMD-512 (as quoted in the test suites of sphlib
    /// bindings and ports): Len = 0 and Len = 8 (one partial block), the 1024-bit message
    /// 00 01 … 7f (exactly one full block, so no zero-filled block precedes the length block),
    /// and Len = 1720 (one full block and a partial one).
    #[test]
    fn sha3_competition_kat() {
        let long = "7a6a4f4fdc59a1d223381ae5af498d74b7252ecf59e389e49130c7eaee626e7bd9897effd92017f4ccde66b0440462cdedfd352d8153e6a4c8d7a0812f701cc737b5178c2556f07111200eb627dbc299caa792dfa58f35935299fa3a3519e9b03166dffa159103ffa35e8577f7c0a86c6b46fe13db8e2cdd9dcfba85bdddcce0a7a8e155f81f712d8e9fe646153d3d22c811bd39f830433b2213dd46301941b59293fd0a33e2b63adbd95239bc01315c46fdb678875b3c81e053a40f581cfbec24a1404b1671a1b88a6d06120229518fb13a74ca0ac5ae";
        let counting: Vec<u8> = (0u8..128).collect();
        let cases: [(Vec<u8>, &str); 4] = [
            (
                Vec::new(),
                "51a5af7e243cd9a5989f7792c880c4c3168c3d60c4518725fe5757d1f7a69c6366977eaba7905ce2da5d7cfd07773725f0935b55f3efb954996689a49b6d29e0",
            ),
            (
                vec![0xcc],
                "6fd2d5e6104bd3966283321234cd40f4ed380cb53a03911b610746466c10a93e41c9b745c79dfde3275980fe82fc8372efc406a9b0bdc8c63a375954e63436e2",
            ),
            (
                counting,
                "8851ad0a57426b4af57af3294706c0448fa6accf24683fc239871be58ca913fbee53e35c1dedd88016ebd131f2eb0761e97a3048de6e696787fd5f54981d6f2c",
            ),
            (
                hex::decode(long).unwrap(),
                "cabe9ac40d1d515894082106599daeeb141bdd70affdd517ba3b2ae3ee796fba2ffbbeb2b93dc68d2c0c67f836a44e77e8c4ad2e54332d9ba43596471f74f762",
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(hex::encode(simd512(&msg)), want, "{} bytes", msg.len());
        }
    }

    #[test]
    fn iv_is_the_specified_derivation() {
        let mut s = [[0u32; 8]; 4];
        let mut block = [0u8; 128];
        let tag = b"SIMD-512 v1.1";
        block[..tag.len()].copy_from_slice(tag);
        compress(&mut s, &block, false);
        assert_eq!(s, IV);
    }

    /// The fast transform agrees with the defining sum y_i = Σ_j x_j·41^(ij) mod 257.
    #[test]
    fn ntt_matches_the_definition() {
        let pattern: [u8; 128] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        // All-0xff is the largest input the unreduced butterflies see.
        for (block, last) in [(pattern, false), (pattern, true), ([0xff; 128], true)] {
            let y = expand(&block, last);
            let mut x = [0i64; 256];
            for (d, &b) in x.iter_mut().zip(&block) {
                *d = i64::from(b);
            }
            x[255] = 1;
            if last {
                x[253] = 1;
            }
            for (i, &yi) in y.iter().enumerate() {
                let sum: i64 = (0..256)
                    .map(|j| x[j] * i64::from(POW[(i * j) % 256]))
                    .sum::<i64>()
                    % 257;
                assert_eq!(i64::from(yi).rem_euclid(257), sum, "y[{i}]");
                assert!((-128..=128).contains(&yi));
            }
        }
    }

    /// Inputs straddling the 128-byte block boundary and the zero-fill rule must all differ
    /// (a trailing zero byte changes the length block even though the data block is the same).
    #[test]
    fn lengths_near_the_block_size_give_distinct_digests() {
        let data = [0u8; 257];
        let mut seen = std::collections::HashSet::new();
        for len in [0, 1, 63, 64, 127, 128, 129, 255, 256, 257] {
            assert!(seen.insert(simd512(&data[..len])), "len {len}");
        }
    }
}
