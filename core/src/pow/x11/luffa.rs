//! Luffa-512 (Luffa v2, SHA-3 round 2): five 256-bit sub-states, a 256-bit message block
//! injected by multiplication in GF((2^32)^8), then five 8-step permutations.

const IV: [[u32; 8]; 5] = [
    [
        0x6d251e69, 0x44b051e0, 0x4eaa6fb4, 0xdbf78465, 0x6e292011, 0x90152df4, 0xee058139,
        0xdef610bb,
    ],
    [
        0xc3b44b95, 0xd9d2f256, 0x70eee9a0, 0xde099fa3, 0x5d9b0557, 0x8fc944b3, 0xcf1ccf0e,
        0x746cd581,
    ],
    [
        0xf7efc89d, 0x5dba5781, 0x04016ce5, 0xad659c05, 0x0306194f, 0x666d1836, 0x24aa230a,
        0x8b264ae7,
    ],
    [
        0x858075d5, 0x36d79cce, 0xe571f7d7, 0x204b1f67, 0x35870c6a, 0x57e9e923, 0x14bcb808,
        0x7cde72ce,
    ],
    [
        0x6c68e9be, 0x5ec41e22, 0xc825b7c7, 0xaffb4363, 0xf5df3999, 0x0fc688f1, 0xb07224cc,
        0x03e86cea,
    ],
];

/// Step constants added to words 0 and 4 of sub-state j at each of the 8 steps.
const RC0: [[u32; 8]; 5] = [
    [
        0x303994a6, 0xc0e65299, 0x6cc33a12, 0xdc56983e, 0x1e00108f, 0x7800423d, 0x8f5b7882,
        0x96e1db12,
    ],
    [
        0xb6de10ed, 0x70f47aae, 0x0707a3d4, 0x1c1e8f51, 0x707a3d45, 0xaeb28562, 0xbaca1589,
        0x40a46f3e,
    ],
    [
        0xfc20d9d2, 0x34552e25, 0x7ad8818f, 0x8438764a, 0xbb6de032, 0xedb780c8, 0xd9847356,
        0xa2c78434,
    ],
    [
        0xb213afa5, 0xc84ebe95, 0x4e608a22, 0x56d858fe, 0x343b138f, 0xd0ec4e3d, 0x2ceb4882,
        0xb3ad2208,
    ],
    [
        0xf0d2e9e3, 0xac11d7fa, 0x1bcb66f2, 0x6f2d9bc9, 0x78602649, 0x8edae952, 0x3b6ba548,
        0xedae9520,
    ],
];
const RC4: [[u32; 8]; 5] = [
    [
        0xe0337818, 0x441ba90d, 0x7f34d442, 0x9389217f, 0xe5a8bce6, 0x5274baf4, 0x26889ba7,
        0x9a226e9d,
    ],
    [
        0x01685f3d, 0x05a17cf4, 0xbd09caca, 0xf4272b28, 0x144ae5cc, 0xfaa7ae2b, 0x2e48f1c1,
        0xb923c704,
    ],
    [
        0xe25e72c1, 0xe623bb72, 0x5c58a4a4, 0x1e38e2e7, 0x78e38b9d, 0x27586719, 0x36eda57f,
        0x703aace7,
    ],
    [
        0xe028c9bf, 0x44756f91, 0x7e8fce32, 0x956548be, 0xfe191be2, 0x3cb226e5, 0x5944a28e,
        0xa1c4c355,
    ],
    [
        0x5090d577, 0x2d1925ab, 0xb46496ac, 0xd1925ab0, 0x29131ab6, 0x0fc053c3, 0x3f014f0c,
        0xfc053c31,
    ],
];

type Word8 = [u32; 8];

/// Multiplication by x (the element 0x02) in GF((2^32)^8) with the Luffa polynomial.
fn mul2(s: &Word8) -> Word8 {
    let t = s[7];
    [s[7], s[0] ^ t, s[1], s[2] ^ t, s[3] ^ t, s[4], s[5], s[6]]
}

fn xor(a: &Word8, b: &Word8) -> Word8 {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn message_injection(v: &mut [Word8; 5], m: &Word8) {
    let sum = xor(&xor(&xor(&v[0], &v[1]), &xor(&v[2], &v[3])), &v[4]);
    let a = mul2(&sum);
    for x in v.iter_mut() {
        *x = xor(x, &a);
    }
    let b = xor(&mul2(&v[0]), &v[1]);
    v[1] = xor(&mul2(&v[1]), &v[2]);
    v[2] = xor(&mul2(&v[2]), &v[3]);
    v[3] = xor(&mul2(&v[3]), &v[4]);
    v[4] = xor(&mul2(&v[4]), &v[0]);
    v[0] = xor(&mul2(&b), &v[4]);
    v[4] = xor(&mul2(&v[4]), &v[3]);
    v[3] = xor(&mul2(&v[3]), &v[2]);
    v[2] = xor(&mul2(&v[2]), &v[1]);
    v[1] = xor(&mul2(&v[1]), &b);
    let mut m = *m;
    for x in v.iter_mut() {
        *x = xor(x, &m);
        m = mul2(&m);
    }
}

fn sub_crumb(a0: &mut u32, a1: &mut u32, a2: &mut u32, a3: &mut u32) {
    let mut tmp = *a0;
    *a0 |= *a1;
    *a2 ^= *a3;
    *a1 = !*a1;
    *a0 ^= *a3;
    *a3 &= tmp;
    *a1 ^= *a3;
    *a3 ^= *a2;
    *a2 &= *a0;
    *a0 = !*a0;
    *a2 ^= *a1;
    *a1 |= *a3;
    tmp ^= *a1;
    *a3 ^= *a2;
    *a2 &= *a1;
    *a1 ^= *a0;
    *a0 = tmp;
}

fn mix_word(u: &mut u32, v: &mut u32) {
    *v ^= *u;
    *u = u.rotate_left(2) ^ *v;
    *v = v.rotate_left(14) ^ *u;
    *u = u.rotate_left(10) ^ *v;
    *v = v.rotate_left(1);
}

fn permute(x: &mut Word8, j: usize) {
    // The tweak: sub-state j's upper four words are rotated by j bits before its permutation.
    for w in &mut x[4..] {
        *w = w.rotate_left(j as u32);
    }
    for r in 0..8 {
        let [x0, x1, x2, x3, x4, x5, x6, x7] = x;
        sub_crumb(x0, x1, x2, x3);
        sub_crumb(x5, x6, x7, x4);
        mix_word(x0, x4);
        mix_word(x1, x5);
        mix_word(x2, x6);
        mix_word(x3, x7);
        *x0 ^= RC0[j][r];
        *x4 ^= RC4[j][r];
    }
}

fn round(v: &mut [Word8; 5], block: &[u8; 32]) {
    let m: Word8 = std::array::from_fn(|i| {
        u32::from_be_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ])
    });
    message_injection(v, &m);
    for (j, x) in v.iter_mut().enumerate() {
        permute(x, j);
    }
}

fn output(v: &[Word8; 5], out: &mut [u8]) {
    for i in 0..8 {
        let w = v[0][i] ^ v[1][i] ^ v[2][i] ^ v[3][i] ^ v[4][i];
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
}

/// Luffa-512 of a byte string.
pub fn luffa512(data: &[u8]) -> [u8; 64] {
    let mut v = IV;
    let mut chunks = data.chunks_exact(32);
    for block in &mut chunks {
        round(&mut v, block.try_into().expect("32-byte chunk"));
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 32];
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] = 0x80;
    round(&mut v, &last);
    // Two blank rounds, each releasing 256 bits of output.
    let mut out = [0u8; 64];
    round(&mut v, &[0; 32]);
    output(&v, &mut out[..32]);
    round(&mut v, &[0; 32]);
    output(&v, &mut out[32..]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sphlib_vector() {
        // x11-hash-js (a port of sphlib) README: luffa('The great experiment continues.').
        assert_eq!(
            hex::encode(super::luffa512(b"The great experiment continues.")),
            "ea531ce38473fc4bd508c5396194dd6201699d47e25bd4d6b0c5dc7ab0627831e01ea027ebe33d80f608f139aa9fd0c6d923f32de9b5d714026300ed1c9a2f48"
        );
    }
}
