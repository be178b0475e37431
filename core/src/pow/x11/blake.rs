//! BLAKE-512 (the SHA-3 finalist, 16 rounds), one-shot over a byte string.

const IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// The first 1024 fractional bits of pi.
const C: [u64; 16] = [
    0x243f6a8885a308d3,
    0x13198a2e03707344,
    0xa4093822299f31d0,
    0x082efa98ec4e6c89,
    0x452821e638d01377,
    0xbe5466cf34e90c6c,
    0xc0ac29b7c97c50dd,
    0x3f84d5b5b5470917,
    0x9216d5d98979fb1b,
    0xd1310ba698dfb5ac,
    0x2ffd72dbd01adfb7,
    0xb8e1afed6a267e96,
    0xba7c9045f12c7f99,
    0x24a19947b3916cf7,
    0x0801f2e2858efc16,
    0x636920d871574e69,
];

const SIGMA: [[usize; 16]; 10] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

#[allow(clippy::too_many_arguments)]
fn g(
    v: &mut [u64; 16],
    m: &[u64; 16],
    s: &[usize; 16],
    i: usize,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
) {
    let (x, y) = (s[2 * i], s[2 * i + 1]);
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(m[x] ^ C[y]);
    v[d] = (v[d] ^ v[a]).rotate_right(32);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(25);
    v[a] = v[a].wrapping_add(v[b]).wrapping_add(m[y] ^ C[x]);
    v[d] = (v[d] ^ v[a]).rotate_right(16);
    v[c] = v[c].wrapping_add(v[d]);
    v[b] = (v[b] ^ v[c]).rotate_right(11);
}

/// `t` is the count of message bits up to and including this block (0 for a block holding only
/// padding), split into the spec's two 64-bit halves.
fn compress(h: &mut [u64; 8], block: &[u8], t: u128) {
    let m: [u64; 16] = std::array::from_fn(|i| {
        u64::from_be_bytes(block[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    });
    let (t0, t1) = (t as u64, (t >> 64) as u64);
    let mut v = [0u64; 16];
    v[..8].copy_from_slice(h);
    v[8..12].copy_from_slice(&C[..4]);
    v[12] = t0 ^ C[4];
    v[13] = t0 ^ C[5];
    v[14] = t1 ^ C[6];
    v[15] = t1 ^ C[7];
    for r in 0..16 {
        let s = &SIGMA[r % 10];
        g(&mut v, &m, s, 0, 0, 4, 8, 12);
        g(&mut v, &m, s, 1, 1, 5, 9, 13);
        g(&mut v, &m, s, 2, 2, 6, 10, 14);
        g(&mut v, &m, s, 3, 3, 7, 11, 15);
        g(&mut v, &m, s, 4, 0, 5, 10, 15);
        g(&mut v, &m, s, 5, 1, 6, 11, 12);
        g(&mut v, &m, s, 6, 2, 7, 8, 13);
        g(&mut v, &m, s, 7, 3, 4, 9, 14);
    }
    for i in 0..8 {
        h[i] ^= v[i] ^ v[i + 8];
    }
}

/// BLAKE-512 of a byte string.
pub fn blake512(data: &[u8]) -> [u8; 64] {
    let mut h = IV;
    let bits = (data.len() as u128) * 8;
    let mut done: u128 = 0;
    let mut chunks = data.chunks_exact(128);
    for block in &mut chunks {
        done += 1024;
        compress(&mut h, block, done);
    }
    let rest = chunks.remainder();
    // Padding: 0x80, zeros, a final 1 bit just before the 128-bit big-endian length.
    let mut tail = [0u8; 256];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 112 { 128 } else { 256 };
    tail[tail_len - 17] |= 0x01;
    tail[tail_len - 16..tail_len].copy_from_slice(&bits.to_be_bytes());
    if tail_len == 128 {
        let t = if rest.is_empty() { 0 } else { bits };
        compress(&mut h, &tail[..128], t);
    } else {
        compress(&mut h, &tail[..128], bits);
        compress(&mut h, &tail[128..], 0);
    }
    let mut out = [0u8; 64];
    for (o, w) in out.chunks_exact_mut(8).zip(h) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::blake512;

    #[test]
    fn sha3_submission_vectors() {
        // BLAKE submission document, appendix: one-byte message 0x00, and 144 zero bytes.
        assert_eq!(
            hex::encode(blake512(&[0])),
            "97961587f6d970faba6d2478045de6d1fabd09b61ae50932054d52bc29d31be4ff9102b9f69e2bbdb83be13d4b9c06091e5fa0b48bd081b634058be0ec49beb3"
        );
        assert_eq!(
            hex::encode(blake512(&[0; 144])),
            "313717d608e9cf758dcb1eb0f0c3cf9fc150b2d500fb33f51c52afc99d358a2f1374b8a38bba7974e7f6ef79cab16f22ce1e649d6e01ad9589c213045d545dde"
        );
    }

    #[test]
    fn sphlib_vector() {
        // x11-hash-js (a port of sphlib) README: blake('The great experiment continues.').
        assert_eq!(
            hex::encode(blake512(b"The great experiment continues.")),
            "8f257723af0741fb7d3d8c264a5ea86a57d4ae833557de04f5f78fad1ac17d6dfa1ae4a78a7564c08fc21d5d8cdd2793ca17d5500ecc2b43eb8aaf9c220d7b49"
        );
    }
}
