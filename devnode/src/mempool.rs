//! Synthetic mempool transactions.
//!
//! This chain runs no scripts, so the transactions only have to be well-formed: each is a real
//! consensus serialization (legacy, P2SH-P2WPKH, P2WPKH or taproot-key-path shaped inputs, the
//! segwit ones with witness data so the block's witness commitment depends on them), spends
//! outpoints no other generated transaction spends, and declares a fee. Everything comes from
//! one seeded ChaCha stream, so the same seed and the same arrival times give the same bytes.

use powerpool_core::encode::push_data;
use powerpool_core::hash::{Hash256, sha256d};
use powerpool_core::tx::{OutPoint, Transaction, TxIn, TxOut};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// A transaction the node knows, with what a template reports about it.
#[derive(Debug, Clone)]
pub struct MempoolTx {
    pub tx: Transaction,
    pub txid: Hash256,
    pub wtxid: Hash256,
    /// Declared fee in satoshis (the inputs are fake, so nothing else defines it).
    pub fee: u64,
    /// BIP141 weight.
    pub weight: u64,
    /// Sigop cost as `getblocktemplate` counts it (legacy sigops × 4 plus witness sigops).
    pub sigops_cost: u64,
    /// Serialization with witness, the template's `data`.
    pub data: Vec<u8>,
    /// The generated transaction whose output 0 the first input spends (an unconfirmed chain,
    /// the template's `depends`), if any.
    pub parent: Option<Hash256>,
}

impl MempoolTx {
    pub fn new(tx: Transaction, fee: u64) -> Self {
        let data = tx.serialize(true);
        let stripped = tx.serialize(false);
        let weight = (3 * stripped.len() + data.len()) as u64;
        let legacy: u64 = tx
            .inputs
            .iter()
            .map(|i| legacy_sigops(&i.script_sig))
            .chain(tx.outputs.iter().map(|o| legacy_sigops(&o.script_pubkey)))
            .sum();
        // A P2WPKH program (direct or P2SH-wrapped) costs one witness sigop; taproot none.
        let witness_sigops = tx.inputs.iter().filter(|i| i.witness.len() == 2).count() as u64;
        MempoolTx {
            txid: sha256d(&stripped),
            wtxid: sha256d(&data),
            fee,
            weight,
            sigops_cost: legacy * 4 + witness_sigops,
            data,
            tx,
            parent: None,
        }
    }

    /// Fee per weight unit compared without floats: true when `self` pays strictly more.
    pub(crate) fn pays_more_than(&self, other: &MempoolTx) -> bool {
        u128::from(self.fee) * u128::from(other.weight.max(1))
            > u128::from(other.fee) * u128::from(self.weight.max(1))
    }
}

/// Bitcoin Core's `GetSigOpCount(false)`: CHECKSIG(VERIFY) count 1, CHECKMULTISIG(VERIFY) 20;
/// pushes are skipped and a truncated push ends the count, as in Core.
pub(crate) fn legacy_sigops(script: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while i < script.len() {
        let op = script[i];
        i += 1;
        let skip = match op {
            0x01..=0x4b => usize::from(op),
            0x4c..=0x4e => {
                let width = match op {
                    0x4c => 1,
                    0x4d => 2,
                    _ => 4,
                };
                let Some(len_bytes) = script.get(i..i + width) else {
                    break;
                };
                i += width;
                len_bytes
                    .iter()
                    .rev()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
            }
            0xac | 0xad => {
                n += 1;
                0
            }
            0xae | 0xaf => {
                n += 20;
                0
            }
            _ => 0,
        };
        match i.checked_add(skip) {
            Some(next) if next <= script.len() => i = next,
            _ => break,
        }
    }
    n
}

#[derive(Clone, Copy)]
enum InputKind {
    P2pkh,
    P2shP2wpkh,
    P2wpkh,
    P2trKeyPath,
}

/// Deterministic source of synthetic transactions and their arrival gaps.
#[derive(Debug)]
pub(crate) struct TxFactory {
    rng: ChaCha8Rng,
    seed: u64,
    counter: u64,
}

impl TxFactory {
    pub(crate) fn new(seed: u64) -> Self {
        TxFactory {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_6d70_6f6f_6c21),
            seed,
            counter: 0,
        }
    }

    /// Uniform index below `n` (`n` > 0).
    pub(crate) fn pick(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.rng.fill_bytes(&mut v);
        v
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed gap with the given mean (a Poisson arrival process).
    pub(crate) fn gap(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }

    /// An outpoint no other generated transaction spends: its txid hashes the seed and a
    /// counter that never repeats.
    fn fake_outpoint(&mut self) -> OutPoint {
        let mut pre = b"powerpool-node outpoint".to_vec();
        pre.extend_from_slice(&self.seed.to_le_bytes());
        pre.extend_from_slice(&self.counter.to_le_bytes());
        self.counter += 1;
        OutPoint {
            txid: sha256d(&pre),
            vout: self.below(4) as u32,
        }
    }

    /// A DER-shaped 71/72-byte signature with sighash ALL (random contents).
    fn fake_sig(&mut self) -> Vec<u8> {
        let mut sig = vec![0x30];
        let len = 68 + self.below(2) as usize;
        sig.push(len as u8);
        sig.extend(self.bytes(len));
        sig.push(0x01);
        sig
    }

    fn fake_pubkey(&mut self) -> Vec<u8> {
        let mut k = vec![0x02 + self.below(2) as u8];
        k.extend(self.bytes(32));
        k
    }

    fn input(&mut self) -> TxIn {
        let kind = match self.below(4) {
            0 => InputKind::P2pkh,
            1 => InputKind::P2shP2wpkh,
            2 => InputKind::P2wpkh,
            _ => InputKind::P2trKeyPath,
        };
        let mut input = TxIn {
            prevout: self.fake_outpoint(),
            script_sig: Vec::new(),
            sequence: 0xffff_fffd,
            witness: Vec::new(),
        };
        match kind {
            InputKind::P2pkh => {
                let (sig, key) = (self.fake_sig(), self.fake_pubkey());
                push_data(&mut input.script_sig, &sig);
                push_data(&mut input.script_sig, &key);
            }
            InputKind::P2shP2wpkh => {
                let mut redeem = vec![0x00, 0x14];
                redeem.extend(self.bytes(20));
                push_data(&mut input.script_sig, &redeem);
                input.witness = vec![self.fake_sig(), self.fake_pubkey()];
            }
            InputKind::P2wpkh => input.witness = vec![self.fake_sig(), self.fake_pubkey()],
            InputKind::P2trKeyPath => input.witness = vec![self.bytes(64)],
        }
        input
    }

    fn output(&mut self) -> TxOut {
        let script_pubkey = match self.below(4) {
            0 => [vec![0x76, 0xa9, 0x14], self.bytes(20), vec![0x88, 0xac]].concat(),
            1 => [vec![0xa9, 0x14], self.bytes(20), vec![0x87]].concat(),
            2 => [vec![0x00, 0x14], self.bytes(20)].concat(),
            _ => [vec![0x51, 0x20], self.bytes(32)].concat(),
        };
        TxOut {
            value: 10_000 + self.below(100_000_000),
            script_pubkey,
        }
    }

    /// The next synthetic transaction. `lock_height` is the tip height when it was made: like a
    /// wallet's anti-fee-sniping locktime, it is final in any block above that height.
    /// With `parent`, the first input spends that transaction's output 0 instead of a fake
    /// outpoint.
    pub(crate) fn next_tx(&mut self, lock_height: u64, parent: Option<Hash256>) -> MempoolTx {
        let n_in = 1 + self.below(3) as usize;
        let n_out = 1 + self.below(3) as usize;
        let mut inputs: Vec<TxIn> = (0..n_in).map(|_| self.input()).collect();
        if let Some(txid) = parent {
            inputs[0].prevout = OutPoint { txid, vout: 0 };
        }
        let tx = Transaction {
            version: 2,
            inputs,
            outputs: (0..n_out).map(|_| self.output()).collect(),
            lock_time: u32::try_from(lock_height).unwrap_or(0),
        };
        let vsize = (tx.weight() as u64).div_ceil(4);
        let feerate = 1 + self.below(50);
        let mut m = MempoolTx::new(tx, feerate * vsize);
        m.parent = parent;
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_txs_are_well_formed_and_distinct() {
        let mut f = TxFactory::new(7);
        let mut spent = std::collections::HashSet::new();
        let mut with_witness = 0;
        for _ in 0..200 {
            let m = f.next_tx(5, None);
            let parsed = Transaction::from_bytes(&m.data).expect("round trip");
            assert_eq!(parsed, m.tx);
            assert_eq!(parsed.txid(), m.txid);
            assert_eq!(parsed.wtxid(), m.wtxid);
            assert!(m.fee >= m.weight.div_ceil(4));
            for i in &m.tx.inputs {
                assert!(spent.insert(i.prevout), "outpoint spent twice");
            }
            if m.tx.has_witness() {
                with_witness += 1;
                assert_ne!(m.txid, m.wtxid);
            }
        }
        assert!(with_witness > 50 && with_witness < 200);
        // Same seed, same bytes.
        let (mut a, mut b) = (TxFactory::new(9), TxFactory::new(9));
        assert_eq!(a.next_tx(1, None).data, b.next_tx(1, None).data);
    }

    #[test]
    fn sigop_count_matches_core_rules() {
        // P2PKH scriptPubKey: one CHECKSIG.
        let p2pkh = hex::decode("76a914ba07906a35542cf5d16b7b0163b39850388a26f988ac").unwrap();
        assert_eq!(legacy_sigops(&p2pkh), 1);
        // 1-of-1 bare multisig: CHECKMULTISIG counts 20 without accurate counting.
        assert_eq!(legacy_sigops(&[0x51, 0xae]), 20);
        // A push containing 0xac bytes is data, not an opcode; a truncated push stops.
        assert_eq!(legacy_sigops(&[0x02, 0xac, 0xac, 0xac]), 1);
        assert_eq!(legacy_sigops(&[0x4c, 0x05, 0xac]), 0);
        assert_eq!(legacy_sigops(&[0x4d]), 0);
    }
}
