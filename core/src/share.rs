//! Share outcomes as values, and the found-block obligation.
//!
//! A share is judged once and the verdict is a value: [`ShareOutcome::Accepted`],
//! [`ShareOutcome::Block`] or [`ShareOutcome::Rejected`] with a [`RejectReason`] that maps to a
//! stratum error code. A block is carried as a [`FoundBlock`], which must be handed to the
//! coinservers: dropping one unsubmitted is a bug, reported loudly in every build and fatal in
//! debug builds.

use std::sync::Arc;

use crate::hash::Hash256;
use crate::merged::FoundAuxBlock;
use crate::record::ShareKind;

/// Why a share was refused. The order of the variants is the order of the checks in
/// [`crate::session::Session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    NotSubscribed,
    Unauthorized,
    /// The job id was never issued to this connection or fell out of its window.
    UnknownJob,
    /// The job was built on a previous block.
    Stale,
    BadExtranonce2 {
        expected_len: usize,
    },
    BadNtime,
    NtimeOutOfRange,
    BadNonce,
    BadVersionBits,
    Duplicate,
    LowDifficulty,
    /// Too many accepted shares for one job from one connection: memory per connection is
    /// bounded, so the miner must take newer work (vardiff raises its difficulty meanwhile).
    TooManyShares,
}

impl RejectReason {
    /// Stratum error code.
    pub fn code(&self) -> i32 {
        match self {
            RejectReason::NotSubscribed => 25,
            RejectReason::Unauthorized => 24,
            RejectReason::UnknownJob | RejectReason::Stale => 21,
            RejectReason::Duplicate => 22,
            RejectReason::LowDifficulty => 23,
            RejectReason::BadExtranonce2 { .. }
            | RejectReason::BadNtime
            | RejectReason::NtimeOutOfRange
            | RejectReason::BadNonce
            | RejectReason::BadVersionBits
            | RejectReason::TooManyShares => 20,
        }
    }

    pub fn message(&self) -> String {
        match self {
            RejectReason::NotSubscribed => "Not subscribed".into(),
            RejectReason::Unauthorized => "Unauthorized worker".into(),
            RejectReason::UnknownJob => "Job not found (=stale)".into(),
            RejectReason::Stale => "Stale job: built on a previous block".into(),
            RejectReason::BadExtranonce2 { expected_len } => {
                format!("Incorrect size of extranonce2: expected {expected_len} bytes")
            }
            RejectReason::BadNtime => "Malformed ntime: expected 8 hex digits".into(),
            RejectReason::NtimeOutOfRange => "ntime out of range".into(),
            RejectReason::BadNonce => "Malformed nonce: expected 8 hex digits".into(),
            RejectReason::BadVersionBits => {
                "Invalid version bits: outside the negotiated version-rolling mask".into()
            }
            RejectReason::Duplicate => "Duplicate share".into(),
            RejectReason::LowDifficulty => "Low difficulty share".into(),
            RejectReason::TooManyShares => "Too many shares for this job; take newer work".into(),
        }
    }

    /// How the share is recorded for statistics.
    pub fn kind(&self) -> ShareKind {
        match self {
            RejectReason::UnknownJob | RejectReason::Stale => ShareKind::Stale,
            RejectReason::Duplicate => ShareKind::Duplicate,
            RejectReason::LowDifficulty => ShareKind::LowDifficulty,
            _ => ShareKind::Invalid,
        }
    }
}

/// What happened to one submitted share.
#[derive(Debug)]
pub enum ShareOutcome {
    /// Accepted; `aux` holds the aux-chain blocks it found (merged mining), often none.
    Accepted {
        difficulty: f64,
        aux: Vec<FoundAuxBlock>,
    },
    /// Accepted, and it also meets the network target.
    Block {
        difficulty: f64,
        block: FoundBlock,
        aux: Vec<FoundAuxBlock>,
    },
    Rejected(RejectReason),
}

/// A block the pool found. It must be submitted: take its bytes with [`FoundBlock::into_submission`].
#[must_use = "a found block must be submitted to the coinservers"]
#[derive(Debug)]
pub struct FoundBlock {
    inner: Option<BlockSubmission>,
}

/// Everything the coinserver driver needs to submit a block and record it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSubmission {
    pub hash: Hash256,
    pub height: u64,
    /// Full serialized block as lowercase hex, shared so fanning out to several nodes copies
    /// nothing.
    pub hex: Arc<str>,
    pub currency: Arc<str>,
    pub address: Arc<str>,
    pub worker: Arc<str>,
    pub coinbase_value: u64,
    pub fees: u64,
    pub bits: u32,
}

impl FoundBlock {
    pub fn new(submission: BlockSubmission) -> Self {
        FoundBlock {
            inner: Some(submission),
        }
    }

    pub fn submission(&self) -> &BlockSubmission {
        self.inner
            .as_ref()
            .expect("a FoundBlock holds its submission until consumed")
    }

    /// Discharges the obligation: the caller now owns the submission.
    pub fn into_submission(mut self) -> BlockSubmission {
        self.inner
            .take()
            .expect("a FoundBlock holds its submission until consumed")
    }
}

impl Drop for FoundBlock {
    fn drop(&mut self) {
        if let Some(s) = &self.inner {
            tracing::error!(
                hash = %s.hash,
                height = s.height,
                "found block dropped without being submitted"
            );
            debug_assert!(
                std::thread::panicking(),
                "found block {} dropped without being submitted",
                s.hash
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_original_table() {
        assert_eq!(RejectReason::UnknownJob.code(), 21);
        assert_eq!(RejectReason::Duplicate.code(), 22);
        assert_eq!(RejectReason::LowDifficulty.code(), 23);
        assert_eq!(RejectReason::Unauthorized.code(), 24);
        assert_eq!(RejectReason::NotSubscribed.code(), 25);
        assert_eq!(RejectReason::BadVersionBits.code(), 20);
        assert_eq!(RejectReason::NtimeOutOfRange.kind(), ShareKind::Invalid);
        assert_eq!(RejectReason::Stale.kind(), ShareKind::Stale);
    }

    #[test]
    #[should_panic(expected = "dropped without being submitted")]
    #[cfg(debug_assertions)]
    fn dropping_a_found_block_is_loud() {
        let fb = FoundBlock::new(BlockSubmission {
            hash: Hash256::ZERO,
            height: 1,
            hex: "00".into(),
            currency: "BTC".into(),
            address: "a".into(),
            worker: "w".into(),
            coinbase_value: 0,
            fees: 0,
            bits: 0,
        });
        drop(fb);
    }
}
