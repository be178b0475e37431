//! Bitcoin serialization helpers: CompactSize integers and script pushes.
//!
//! Guarantees:
//! - [`read_varint`] accepts exactly what Bitcoin Core's `ReadCompactSize` accepts (canonical,
//!   shortest encodings only) and never reads past its input.
//! - [`push_int`] and [`bip34_height`] produce the same bytes as Bitcoin Core's
//!   `CScript() << n`, which is what `ContextualCheckBlock` compares the coinbase scriptSig
//!   prefix against (`bad-cb-height`). Heights 1..=16 are therefore the single opcodes
//!   `OP_1`..`OP_16`, not a one-byte data push.
//!
//! The original pool encoded heights as minimal two's-complement pushes with `OP_N` for 1..16,
//! which agrees with these rules; here the encoding is shared by the coinbase builder and the
//! coinbase checker so the two cannot drift apart.

/// Appends `n` as a CompactSize ("varint") integer.
pub fn write_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Number of bytes [`write_varint`] produces for `n`.
pub fn varint_len(n: u64) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Reads a CompactSize integer from the front of `input`.
///
/// Returns the value and the number of bytes used, or `None` when the input is too short or the
/// value was not written in its shortest form (Bitcoin Core rejects those as
/// "non-canonical ReadCompactSize()").
pub fn read_varint(input: &[u8]) -> Option<(u64, usize)> {
    let (&first, rest) = input.split_first()?;
    match first {
        0xfd => {
            let v = u64::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
            (v >= 0xfd).then_some((v, 3))
        }
        0xfe => {
            let v = u64::from(u32::from_le_bytes(rest.get(..4)?.try_into().ok()?));
            (v > 0xffff).then_some((v, 5))
        }
        0xff => {
            let v = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
            (v > 0xffff_ffff).then_some((v, 9))
        }
        n => Some((u64::from(n), 1)),
    }
}

/// Script opcodes used by the helpers here and by script builders elsewhere in the crate.
pub mod opcode {
    pub const OP_0: u8 = 0x00;
    pub const OP_PUSHDATA1: u8 = 0x4c;
    pub const OP_PUSHDATA2: u8 = 0x4d;
    pub const OP_PUSHDATA4: u8 = 0x4e;
    pub const OP_1NEGATE: u8 = 0x4f;
    pub const OP_1: u8 = 0x51;
    pub const OP_16: u8 = 0x60;
    pub const OP_RETURN: u8 = 0x6a;
    pub const OP_DUP: u8 = 0x76;
    pub const OP_EQUAL: u8 = 0x87;
    pub const OP_EQUALVERIFY: u8 = 0x88;
    pub const OP_HASH160: u8 = 0xa9;
    pub const OP_CHECKSIG: u8 = 0xac;
}

/// Appends a push of `data` using the smallest push opcode that can carry it, as Bitcoin Core's
/// `CScript << std::vector<unsigned char>` does (direct length byte below 76 bytes, then
/// `OP_PUSHDATA1/2/4`). An empty slice becomes `OP_0`.
pub fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    let len = data.len();
    if len < usize::from(opcode::OP_PUSHDATA1) {
        out.push(len as u8);
    } else if len <= 0xff {
        out.push(opcode::OP_PUSHDATA1);
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(opcode::OP_PUSHDATA2);
        out.extend_from_slice(&(len as u16).to_le_bytes());
    } else {
        out.push(opcode::OP_PUSHDATA4);
        // Scripts are bounded far below 4 GiB by consensus; saturating keeps this total.
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    }
    out.extend_from_slice(data);
}

/// Minimal little-endian sign-magnitude encoding of a script number (Bitcoin Core's
/// `CScriptNum::serialize`): no bytes for zero, and an extra `0x00`/`0x80` byte when the top bit
/// of the magnitude is set.
pub fn script_num_bytes(negative: bool, magnitude: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    let mut m = magnitude;
    while m != 0 {
        out.push((m & 0xff) as u8);
        m >>= 8;
    }
    if let Some(last) = out.last_mut() {
        if *last & 0x80 != 0 {
            out.push(if negative { 0x80 } else { 0x00 });
        } else if negative {
            *last |= 0x80;
        }
    }
    out
}

/// Appends `n` exactly as Bitcoin Core's `CScript() << n` (`push_int64`): `OP_0` for zero,
/// `OP_1NEGATE` for -1, `OP_1`..`OP_16` for 1..=16, otherwise a push of the minimal script
/// number encoding.
pub fn push_int(out: &mut Vec<u8>, n: i64) {
    match n {
        0 => out.push(opcode::OP_0),
        -1 => out.push(opcode::OP_1NEGATE),
        1..=16 => out.push(opcode::OP_1 + (n as u8 - 1)),
        _ => push_data(out, &script_num_bytes(n < 0, n.unsigned_abs())),
    }
}

/// The BIP34 height prefix a coinbase scriptSig must start with: `CScript() << height`.
///
/// Heights beyond `i64::MAX` cannot occur on any chain; they are still encoded as the positive
/// script number so that the function is total.
pub fn bip34_height(height: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    match i64::try_from(height) {
        Ok(h) => push_int(&mut out, h),
        Err(_) => push_data(&mut out, &script_num_bytes(false, height)),
    }
    out
}

/// Reads the BIP34 height from the start of a coinbase scriptSig.
///
/// Returns `Some(h)` only when the scriptSig starts with exactly [`bip34_height`]`(h)`, so a
/// `Some` result is a height Bitcoin Core would accept for that block. Negative numbers,
/// non-minimal encodings and pushes longer than 8 bytes give `None`.
pub fn read_bip34_height(script_sig: &[u8]) -> Option<u64> {
    let (&op, rest) = script_sig.split_first()?;
    let height = match op {
        opcode::OP_0 => 0,
        opcode::OP_1..=opcode::OP_16 => u64::from(op - opcode::OP_1 + 1),
        1..=9 => {
            let bytes = rest.get(..usize::from(op))?;
            let (&last, _) = bytes.split_last()?;
            if last & 0x80 != 0 {
                return None; // negative
            }
            let mut value: u128 = 0;
            for (i, b) in bytes.iter().enumerate() {
                value |= u128::from(*b) << (8 * i);
            }
            u64::try_from(value).ok()?
        }
        _ => return None,
    };
    let expected = bip34_height(height);
    script_sig.starts_with(&expected).then_some(height)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_hex(n: u64) -> String {
        let mut v = Vec::new();
        write_varint(&mut v, n);
        assert_eq!(v.len(), varint_len(n));
        hex::encode(v)
    }

    #[test]
    fn varint_boundaries() {
        assert_eq!(varint_hex(0), "00");
        assert_eq!(varint_hex(0xfc), "fc");
        assert_eq!(varint_hex(0xfd), "fdfd00");
        assert_eq!(varint_hex(0xffff), "fdffff");
        assert_eq!(varint_hex(0x1_0000), "fe00000100");
        assert_eq!(varint_hex(0xffff_ffff), "feffffffff");
        assert_eq!(varint_hex(0x1_0000_0000), "ff0000000001000000");
        for n in [
            0,
            1,
            0xfc,
            0xfd,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            1 << 32,
            u64::MAX,
        ] {
            let mut v = Vec::new();
            write_varint(&mut v, n);
            v.push(0xaa); // trailing byte must not be consumed
            assert_eq!(read_varint(&v), Some((n, v.len() - 1)));
        }
    }

    #[test]
    fn varint_rejects_short_and_non_canonical() {
        assert_eq!(read_varint(&[]), None);
        assert_eq!(read_varint(&[0xfd, 0x00]), None);
        assert_eq!(read_varint(&[0xfe, 1, 2, 3]), None);
        assert_eq!(read_varint(&[0xff, 1, 2, 3, 4, 5, 6, 7]), None);
        assert_eq!(read_varint(&[0xfd, 0xfc, 0x00]), None);
        assert_eq!(read_varint(&[0xfe, 0xff, 0xff, 0x00, 0x00]), None);
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn push_data_picks_smallest_opcode() {
        let enc = |len: usize| {
            let mut v = Vec::new();
            push_data(&mut v, &vec![7u8; len]);
            assert_eq!(&v[v.len() - len..], &vec![7u8; len][..]);
            hex::encode(&v[..v.len() - len])
        };
        assert_eq!(enc(0), "00");
        assert_eq!(enc(1), "01");
        assert_eq!(enc(75), "4b");
        assert_eq!(enc(76), "4c4c");
        assert_eq!(enc(255), "4cff");
        assert_eq!(enc(256), "4d0001");
        assert_eq!(enc(65535), "4dffff");
        assert_eq!(enc(65536), "4e00000100");
    }

    #[test]
    fn push_int_matches_script_num_rules() {
        let enc = |n: i64| {
            let mut v = Vec::new();
            push_int(&mut v, n);
            hex::encode(v)
        };
        assert_eq!(enc(0), "00");
        assert_eq!(enc(-1), "4f");
        assert_eq!(enc(1), "51");
        assert_eq!(enc(16), "60");
        assert_eq!(enc(17), "0111");
        assert_eq!(enc(-2), "0182");
        assert_eq!(enc(127), "017f");
        assert_eq!(enc(128), "028000");
        assert_eq!(enc(-128), "028080");
        assert_eq!(enc(255), "02ff00");
        assert_eq!(enc(1001), "02e903"); // the height PowerPool documented for its coinbase
        assert_eq!(enc(i64::MAX), "08ffffffffffffff7f");
        assert_eq!(enc(i64::MIN), "09000000000000008080");
    }

    #[test]
    fn bip34_round_trip_and_rejects() {
        for h in [
            0u64,
            1,
            16,
            17,
            127,
            128,
            255,
            256,
            500_000,
            1 << 40,
            u64::MAX,
        ] {
            let mut s = bip34_height(h);
            s.extend_from_slice(b"/pool/");
            assert_eq!(read_bip34_height(&s), Some(h), "height {h}");
        }
        assert_eq!(read_bip34_height(&[]), None);
        assert_eq!(read_bip34_height(&[0x4f]), None); // -1
        assert_eq!(read_bip34_height(&[0x01, 0x81]), None); // negative
        assert_eq!(read_bip34_height(&[0x01, 0x05]), None); // 5 must be OP_5
        assert_eq!(read_bip34_height(&[0x02, 0x11, 0x00]), None); // non-minimal 17
        assert_eq!(read_bip34_height(&[0x03, 0x11, 0x22]), None); // truncated push
        assert_eq!(read_bip34_height(&[0x4c, 0x01, 0x11]), None); // PUSHDATA1 is not minimal
    }
}
