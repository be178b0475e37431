//! What a miner does with a `mining.notify`: rebuild the header from the notify fields, the
//! extranonces and a nonce, and search nonces for a hash under the share target.
//!
//! This deliberately shares no code with the pool's job builder: the header is assembled from
//! the wire fields the way mining firmware does, so a pool that renders them wrongly gets its
//! shares rejected here instead of agreeing with itself.

use powerpool_core::hash::Hash256;
use powerpool_core::target::Target;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fields of one `mining.notify`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyJob {
    pub job_id: String,
    /// Previous block hash in header (internal) byte order.
    pub prev_hash: [u8; 32],
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

/// Why a `mining.notify` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("mining.notify params: field {0} is missing or malformed")]
    Field(&'static str),
}

fn hex_u32(v: &Value, name: &'static str) -> Result<u32, NotifyError> {
    v.as_str()
        .filter(|s| s.len() == 8)
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or(NotifyError::Field(name))
}

fn hex_32(v: &Value, name: &'static str) -> Result<[u8; 32], NotifyError> {
    let mut out = [0u8; 32];
    let s = v.as_str().ok_or(NotifyError::Field(name))?;
    hex::decode_to_slice(s, &mut out).map_err(|_| NotifyError::Field(name))?;
    Ok(out)
}

fn hex_bytes(v: &Value, name: &'static str) -> Result<Vec<u8>, NotifyError> {
    v.as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or(NotifyError::Field(name))
}

impl NotifyJob {
    /// Decodes the `params` array of a `mining.notify`.
    pub fn from_params(params: &Value) -> Result<NotifyJob, NotifyError> {
        let p = params.as_array().ok_or(NotifyError::Field("params"))?;
        let get = |i: usize, name: &'static str| p.get(i).ok_or(NotifyError::Field(name));
        let job_id = get(0, "job_id")?
            .as_str()
            .ok_or(NotifyError::Field("job_id"))?
            .to_owned();
        // Stratum sends the previous hash with each 4-byte word byte-swapped.
        let mut prev_hash = hex_32(get(1, "prevhash")?, "prevhash")?;
        for w in prev_hash.chunks_exact_mut(4) {
            w.reverse();
        }
        let branch = get(4, "merkle_branch")?
            .as_array()
            .ok_or(NotifyError::Field("merkle_branch"))?
            .iter()
            .map(|h| hex_32(h, "merkle_branch"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NotifyJob {
            job_id,
            prev_hash,
            coinb1: hex_bytes(get(2, "coinb1")?, "coinb1")?,
            coinb2: hex_bytes(get(3, "coinb2")?, "coinb2")?,
            branch,
            version: hex_u32(get(5, "version")?, "version")?,
            nbits: hex_u32(get(6, "nbits")?, "nbits")?,
            ntime: hex_u32(get(7, "ntime")?, "ntime")?,
            clean: get(8, "clean_jobs")?.as_bool().unwrap_or(false),
        })
    }

    /// The 80-byte header for these extranonces, with nonce 0.
    pub fn header(&self, extranonce1: &[u8], extranonce2: &[u8], ntime: u32) -> [u8; 80] {
        let mut cb = Vec::with_capacity(
            self.coinb1.len() + extranonce1.len() + extranonce2.len() + self.coinb2.len(),
        );
        cb.extend_from_slice(&self.coinb1);
        cb.extend_from_slice(extranonce1);
        cb.extend_from_slice(extranonce2);
        cb.extend_from_slice(&self.coinb2);
        let mut root = sha256d(&cb);
        let mut node = [0u8; 64];
        for sibling in &self.branch {
            node[..32].copy_from_slice(&root);
            node[32..].copy_from_slice(sibling);
            root = sha256d(&node);
        }
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&self.version.to_le_bytes());
        h[4..36].copy_from_slice(&self.prev_hash);
        h[36..68].copy_from_slice(&root);
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.nbits.to_le_bytes());
        h
    }
}

pub fn sha256d(data: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(data)).into()
}

/// The outcome of one nonce search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub nonce: Option<u32>,
    pub hashes: u64,
}

/// Tries up to `budget` nonces from `start` (wrapping) on `header`, returning the first whose
/// sha256d meets `target`. The first 64 header bytes are absorbed once; each nonce costs two
/// compressions for the first hash and one for the second.
pub fn search(header: &[u8; 80], target: &Target, start: u32, budget: u64) -> Found {
    let mid = Sha256::new().chain_update(&header[..64]);
    let tail: [u8; 12] = header[64..76].try_into().expect("12 bytes");
    let budget = budget.min(1 << 32);
    for i in 0..budget {
        let nonce = start.wrapping_add(i as u32);
        let first = mid
            .clone()
            .chain_update(tail)
            .chain_update(nonce.to_le_bytes())
            .finalize();
        let hash = Hash256(Sha256::digest(first).into());
        if target.is_met_by(&hash) {
            return Found {
                nonce: Some(nonce),
                hashes: i + 1,
            };
        }
    }
    Found {
        nonce: None,
        hashes: budget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Regtest block 123 (fixture `small_p2pkh`, accepted by Bitcoin Core v30.99): the notify
    /// the fixture's miner received, its extranonces and nonce, and the block hash the node
    /// reported. Rebuilding the header from the notify alone must give that hash.
    #[test]
    fn header_from_notify_matches_a_real_regtest_block() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../core/tests/data/regtest/small_p2pkh/job.json"
        );
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let job = NotifyJob::from_params(&fixture["stratum"]["notify"]["params"]).unwrap();
        assert_eq!(job.branch.len(), 4);
        let en1 = hex::decode(fixture["extranonce1"].as_str().unwrap()).unwrap();
        let en2 = hex::decode(fixture["extranonce2"].as_str().unwrap()).unwrap();
        let mut header = job.header(&en1, &en2, job.ntime);
        let nonce = fixture["nonce"].as_u64().unwrap() as u32;
        header[76..].copy_from_slice(&nonce.to_le_bytes());
        assert_eq!(hex::encode(header), fixture["header_hex"].as_str().unwrap());
        let mut hash = sha256d(&header);
        hash.reverse();
        assert_eq!(
            hex::encode(hash),
            "17f2a66ee6816928e8561cefa8a5061bcbe2e48032319139a30bac541ba3d713"
        );

        // The midstate search finds that nonce first when started there, at the block target.
        let target = Target::from_compact(job.nbits).unwrap();
        let found = search(&header, &target, nonce, 1);
        assert_eq!(found.nonce, Some(nonce));
        // And it never reports a nonce whose hash misses the target.
        let hard = Target::from_difficulty(1e6, &Target::SHA256D_DIFF1).unwrap();
        assert_eq!(search(&header, &hard, 0, 1000).nonce, None);
    }

    #[test]
    fn malformed_notify_is_an_error_not_a_panic() {
        assert!(NotifyJob::from_params(&json!(["1", "zz"])).is_err());
        assert!(NotifyJob::from_params(&json!({})).is_err());
        let mut ok = vec![json!("1"), json!("00".repeat(32)), json!(""), json!("")];
        ok.extend([
            json!([]),
            json!("20000000"),
            json!("1d00ffff"),
            json!("6b055309"),
        ]);
        ok.push(json!(true));
        assert!(NotifyJob::from_params(&Value::Array(ok.clone())).is_ok());
        ok[5] = json!("2000000");
        assert_eq!(
            NotifyJob::from_params(&Value::Array(ok)),
            Err(NotifyError::Field("version"))
        );
    }
}
