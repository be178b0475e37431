//! Transactions, block headers and blocks in Bitcoin's consensus serialization.
//!
//! Guarantees:
//! - Parsing follows Bitcoin Core's `UnserializeTransaction`: the segwit marker/flag is
//!   recognised only where an empty input list would otherwise be read, a witness flag with all
//!   witness stacks empty is rejected ("superfluous witness record"), and any other flag bit is
//!   rejected ("unknown transaction optional data").
//! - Parsers never panic and never allocate by an untrusted count beyond what the remaining
//!   input could hold: every count is checked against the bytes left before anything is reserved.
//! - `serialize(parse(b)) == b` for every transaction and block Bitcoin Core would serialize that
//!   way (canonical CompactSize integers are enforced on input).
//! - [`Block::parse`] rejects trailing bytes; [`Transaction::parse`] reports how many bytes it
//!   used so it can walk a block, and [`Transaction::from_bytes`] rejects trailing bytes.

use crate::encode::{read_varint, write_varint};
use crate::hash::{Hash256, sha256d};

/// Why bytes could not be read as a transaction or block. Every variant means the bytes are not
/// a valid serialization: drop the template/block that carried them and report it, retrying
/// will not help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("truncated data: ran out of bytes while reading {0}")]
    Truncated(&'static str),
    #[error("non-canonical CompactSize integer while reading {0}")]
    NonCanonicalVarint(&'static str),
    #[error("{what} count {count} is larger than the {remaining} bytes left could hold")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("segwit flag set but every witness is empty (superfluous witness record)")]
    SuperfluousWitness,
    #[error("unknown transaction flag byte {0:#04x} (only 0x01, witness, is defined)")]
    UnknownFlags(u8),
    #[error("{0} unexpected bytes after the end of the data")]
    TrailingBytes(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OutPoint {
    pub txid: Hash256,
    pub vout: u32,
}

impl OutPoint {
    /// The null prevout a coinbase input spends.
    pub const NULL: OutPoint = OutPoint {
        txid: Hash256::ZERO,
        vout: u32::MAX,
    };

    pub fn is_null(&self) -> bool {
        *self == Self::NULL
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxIn {
    pub prevout: OutPoint,
    pub script_sig: Vec<u8>,
    pub sequence: u32,
    pub witness: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxOut {
    pub value: u64,
    pub script_pubkey: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transaction {
    pub version: i32,
    pub inputs: Vec<TxIn>,
    pub outputs: Vec<TxOut>,
    pub lock_time: u32,
}

/// A bounds-checked cursor; every read names what it was reading for the error message.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TxError> {
        if n > self.remaining() {
            return Err(TxError::Truncated(what));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TxError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TxError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, TxError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, TxError> {
        let rest = &self.data[self.pos..];
        match read_varint(rest) {
            Some((v, used)) => {
                self.pos += used;
                Ok(v)
            }
            None => {
                // Distinguish a short read from a non-canonical encoding for the message.
                let need = match rest.first() {
                    Some(0xfd) => 3,
                    Some(0xfe) => 5,
                    Some(0xff) => 9,
                    _ => 1,
                };
                if rest.len() < need {
                    Err(TxError::Truncated(what))
                } else {
                    Err(TxError::NonCanonicalVarint(what))
                }
            }
        }
    }

    /// A count of items each at least `min_size` bytes long, checked against the input left.
    fn count(&mut self, what: &'static str, min_size: usize) -> Result<usize, TxError> {
        let count = self.varint(what)?;
        let remaining = self.remaining();
        match usize::try_from(count) {
            Ok(c) if c.saturating_mul(min_size) <= remaining => Ok(c),
            _ => Err(TxError::CountTooLarge {
                what,
                count,
                remaining,
            }),
        }
    }

    fn var_bytes(&mut self, what: &'static str) -> Result<Vec<u8>, TxError> {
        let len = self.count(what, 1)?;
        Ok(self.bytes(len, what)?.to_vec())
    }
}

fn read_inputs(r: &mut Reader<'_>) -> Result<Vec<TxIn>, TxError> {
    // prevout 36 + script length 1 + sequence 4
    let n = r.count("input count", 41)?;
    let mut inputs = Vec::with_capacity(n);
    for _ in 0..n {
        let txid = Hash256(r.array("input prevout txid")?);
        let vout = r.u32("input prevout index")?;
        let script_sig = r.var_bytes("input scriptSig")?;
        let sequence = r.u32("input sequence")?;
        inputs.push(TxIn {
            prevout: OutPoint { txid, vout },
            script_sig,
            sequence,
            witness: Vec::new(),
        });
    }
    Ok(inputs)
}

fn read_outputs(r: &mut Reader<'_>) -> Result<Vec<TxOut>, TxError> {
    // value 8 + script length 1
    let n = r.count("output count", 9)?;
    let mut outputs = Vec::with_capacity(n);
    for _ in 0..n {
        let value = u64::from_le_bytes(r.array("output value")?);
        let script_pubkey = r.var_bytes("output scriptPubKey")?;
        outputs.push(TxOut {
            value,
            script_pubkey,
        });
    }
    Ok(outputs)
}

fn read_witness(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, TxError> {
    let n = r.count("witness item count", 1)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(r.var_bytes("witness item")?);
    }
    Ok(items)
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

impl Transaction {
    /// Parses one transaction from the front of `bytes`; returns it and the bytes it used.
    pub fn parse(bytes: &[u8]) -> Result<(Self, usize), TxError> {
        let mut r = Reader::new(bytes);
        let tx = Self::read(&mut r)?;
        Ok((tx, r.pos))
    }

    /// Parses exactly one transaction; trailing bytes are an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TxError> {
        let (tx, used) = Self::parse(bytes)?;
        match bytes.len() - used {
            0 => Ok(tx),
            extra => Err(TxError::TrailingBytes(extra)),
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, TxError> {
        let version = i32::from_le_bytes(r.array("version")?);
        let mut flags = 0u8;
        let mut inputs = read_inputs(r)?;
        let outputs;
        if inputs.is_empty() {
            // Either the segwit marker (an empty input list) or a transaction with no inputs;
            // Bitcoin Core tells them apart by the next byte.
            flags = r.u8("segwit flag")?;
            if flags != 0 {
                inputs = read_inputs(r)?;
                outputs = read_outputs(r)?;
            } else {
                outputs = Vec::new();
            }
        } else {
            outputs = read_outputs(r)?;
        }
        if flags & 1 != 0 {
            flags ^= 1;
            for input in &mut inputs {
                input.witness = read_witness(r)?;
            }
            if inputs.iter().all(|i| i.witness.is_empty()) {
                return Err(TxError::SuperfluousWitness);
            }
        }
        if flags != 0 {
            return Err(TxError::UnknownFlags(flags));
        }
        let lock_time = r.u32("lock time")?;
        Ok(Transaction {
            version,
            inputs,
            outputs,
            lock_time,
        })
    }

    /// Consensus serialization. With `with_witness` and at least one non-empty witness the
    /// BIP144 form (marker `00`, flag `01`, witnesses before the lock time) is written;
    /// otherwise the legacy form that txids are computed over.
    pub fn serialize(&self, with_witness: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        self.write(&mut out, with_witness);
        out
    }

    fn size_hint(&self) -> usize {
        let ins: usize = self
            .inputs
            .iter()
            .map(|i| 50 + i.script_sig.len() + i.witness.iter().map(|w| w.len() + 3).sum::<usize>())
            .sum();
        let outs: usize = self
            .outputs
            .iter()
            .map(|o| 12 + o.script_pubkey.len())
            .sum();
        24 + ins + outs
    }

    fn write(&self, out: &mut Vec<u8>, with_witness: bool) {
        let witness = with_witness && self.has_witness();
        out.extend_from_slice(&self.version.to_le_bytes());
        if witness {
            out.extend_from_slice(&[0x00, 0x01]);
        }
        write_varint(out, self.inputs.len() as u64);
        for i in &self.inputs {
            out.extend_from_slice(&i.prevout.txid.0);
            out.extend_from_slice(&i.prevout.vout.to_le_bytes());
            write_bytes(out, &i.script_sig);
            out.extend_from_slice(&i.sequence.to_le_bytes());
        }
        write_varint(out, self.outputs.len() as u64);
        for o in &self.outputs {
            out.extend_from_slice(&o.value.to_le_bytes());
            write_bytes(out, &o.script_pubkey);
        }
        if witness {
            for i in &self.inputs {
                write_varint(out, i.witness.len() as u64);
                for item in &i.witness {
                    write_bytes(out, item);
                }
            }
        }
        out.extend_from_slice(&self.lock_time.to_le_bytes());
    }

    /// sha256d of the serialization without witnesses.
    pub fn txid(&self) -> Hash256 {
        sha256d(&self.serialize(false))
    }

    /// sha256d of the serialization with witnesses; equals [`Self::txid`] when there are none.
    /// (The block's witness tree uses zero for the coinbase instead, see
    /// [`crate::merkle::witness_root`].)
    pub fn wtxid(&self) -> Hash256 {
        sha256d(&self.serialize(true))
    }

    pub fn has_witness(&self) -> bool {
        self.inputs.iter().any(|i| !i.witness.is_empty())
    }

    /// One input spending the null prevout, as Bitcoin Core's `IsCoinBase`.
    pub fn is_coinbase(&self) -> bool {
        self.inputs.len() == 1 && self.inputs[0].prevout.is_null()
    }

    /// BIP141 weight: 3 × stripped size + total size.
    pub fn weight(&self) -> usize {
        3 * self.serialize(false).len() + self.serialize(true).len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockHeader {
    pub version: i32,
    pub prev_blockhash: Hash256,
    pub merkle_root: Hash256,
    pub time: u32,
    pub bits: u32,
    pub nonce: u32,
}

impl BlockHeader {
    pub const SIZE: usize = 80;

    pub fn to_bytes(&self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..36].copy_from_slice(&self.prev_blockhash.0);
        b[36..68].copy_from_slice(&self.merkle_root.0);
        b[68..72].copy_from_slice(&self.time.to_le_bytes());
        b[72..76].copy_from_slice(&self.bits.to_le_bytes());
        b[76..80].copy_from_slice(&self.nonce.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 80]) -> Self {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        let hash = |i: usize| {
            let mut h = [0u8; 32];
            h.copy_from_slice(&b[i..i + 32]);
            Hash256(h)
        };
        BlockHeader {
            version: i32::from_le_bytes(word(0)),
            prev_blockhash: hash(4),
            merkle_root: hash(36),
            time: u32::from_le_bytes(word(68)),
            bits: u32::from_le_bytes(word(72)),
            nonce: u32::from_le_bytes(word(76)),
        }
    }

    /// sha256d of the 80 header bytes (the SHA-256d proof-of-work hash and block id).
    pub fn block_hash(&self) -> Hash256 {
        sha256d(&self.to_bytes())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<Transaction>,
}

impl Block {
    /// Parses a whole serialized block (header, tx count, transactions with witnesses);
    /// trailing bytes are an error.
    pub fn parse(bytes: &[u8]) -> Result<Block, TxError> {
        let mut r = Reader::new(bytes);
        let header = BlockHeader::from_bytes(&r.array("block header")?);
        // The smallest transaction (no inputs, no outputs) is 10 bytes.
        let n = r.count("transaction count", 10)?;
        let mut txs = Vec::with_capacity(n);
        for _ in 0..n {
            txs.push(Transaction::read(&mut r)?);
        }
        match r.remaining() {
            0 => Ok(Block { header, txs }),
            extra => Err(TxError::TrailingBytes(extra)),
        }
    }

    /// Serialization with witnesses, as `submitblock` expects.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(81 + self.txs.iter().map(Transaction::size_hint).sum::<usize>());
        out.extend_from_slice(&self.header.to_bytes());
        write_varint(&mut out, self.txs.len() as u64);
        for tx in &self.txs {
            tx.write(&mut out, true);
        }
        out
    }

    pub fn txids(&self) -> Vec<Hash256> {
        self.txs.iter().map(Transaction::txid).collect()
    }

    /// Merkle root over the txids, to compare with `header.merkle_root`.
    pub fn compute_merkle_root(&self) -> Hash256 {
        crate::merkle::merkle_root(&self.txids())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bitcoin mainnet genesis coinbase (block 0), as in Bitcoin Core's CreateGenesisBlock.
    const GENESIS_COINBASE: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";

    #[test]
    fn genesis_coinbase_round_trip() {
        let raw = hex::decode(GENESIS_COINBASE).unwrap();
        let (tx, used) = Transaction::parse(&raw).unwrap();
        assert_eq!(used, raw.len());
        assert!(tx.is_coinbase());
        assert!(!tx.has_witness());
        assert_eq!(tx.serialize(true), raw);
        assert_eq!(
            tx.txid().to_display_hex(),
            "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
        );
        assert_eq!(tx.wtxid(), tx.txid());
    }

    #[test]
    fn rejects_truncation_trailing_and_bad_flags() {
        let raw = hex::decode(GENESIS_COINBASE).unwrap();
        for cut in 0..raw.len() {
            assert!(Transaction::parse(&raw[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = raw.clone();
        long.push(0);
        assert_eq!(
            Transaction::from_bytes(&long),
            Err(TxError::TrailingBytes(1))
        );
        // Marker with flag 0x02.
        let bad = hex::decode("0100000000020000000000").unwrap();
        assert_eq!(Transaction::parse(&bad), Err(TxError::UnknownFlags(2)));
        // Witness flag but an empty witness for the single input.
        let mut sw = hex::decode("010000000001").unwrap();
        sw.extend_from_slice(&raw[5..raw.len() - 4]); // inputs and outputs
        sw.push(0x00); // empty witness stack
        sw.extend_from_slice(&[0; 4]);
        assert_eq!(Transaction::parse(&sw), Err(TxError::SuperfluousWitness));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        // Input count 2^64-1 with nothing behind it.
        let bad = hex::decode("01000000ffffffffffffffffff").unwrap();
        assert!(matches!(
            Transaction::parse(&bad),
            Err(TxError::CountTooLarge { .. })
        ));
        let mut blk = vec![0u8; 80];
        blk.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            Block::parse(&blk),
            Err(TxError::CountTooLarge { .. })
        ));
    }

    #[test]
    fn witness_serialization_round_trip() {
        let tx = Transaction {
            version: 2,
            inputs: vec![TxIn {
                prevout: OutPoint::NULL,
                script_sig: vec![0x51, 0x51],
                sequence: u32::MAX,
                witness: vec![vec![0; 32]],
            }],
            outputs: vec![TxOut {
                value: 5,
                script_pubkey: vec![0x51],
            }],
            lock_time: 0,
        };
        let with = tx.serialize(true);
        assert_eq!(&with[4..6], &[0x00, 0x01]);
        assert_eq!(Transaction::from_bytes(&with).unwrap(), tx);
        let without = tx.serialize(false);
        assert_eq!(with.len(), without.len() + 2 + 1 + 1 + 32);
        assert_ne!(tx.txid(), tx.wtxid());
        assert_eq!(tx.weight(), 3 * without.len() + with.len());
    }
}
