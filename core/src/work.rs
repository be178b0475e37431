//! The job manager: templates in, jobs out.
//!
//! A new job is built only when the template really changed — a new previous block (a *clean*
//! job: every earlier job becomes stale), or different transactions, value, bits, version or
//! aux commitment (an *update*: earlier jobs stay valid). The original rebuilt a job on every
//! fetch because its comparison always saw a difference, and built none on a
//! signal-driven fetch at an unchanged height even when the transactions had changed.
//!
//! Drain order: after each `handle_*`, call [`Work::poll_job`] until it returns `None`; updates
//! come out in the order they were made, so a clean job is never overtaken by an older update.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::hash::Hash256;
use crate::job::{CoinbaseParams, Job, JobError, JobId};
use crate::merged::AuxCommitment;
use crate::pow::Algorithm;
use crate::template::BlockTemplate;
use crate::time::Now;

#[derive(Debug, Clone, PartialEq)]
pub struct WorkConfig {
    pub currency: Arc<str>,
    pub algo: Algorithm,
    pub coinbase: CoinbaseParams,
}

/// A job to hand to every session: `clean` means "drop all earlier work".
#[derive(Debug, Clone)]
pub struct JobUpdate {
    pub job: Arc<Job>,
    pub clean: bool,
}

/// What identifies a template's content for the "really changed" test (ntime is excluded:
/// miners roll it themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TemplateKey {
    prev_hash: Hash256,
    height: u64,
    bits: u32,
    version: u32,
    coinbase_value: u64,
    txids: Vec<Hash256>,
    witness_commitment: Option<Vec<u8>>,
    aux_commitment: Option<[u8; 44]>,
}

#[derive(Debug)]
pub struct Work {
    cfg: WorkConfig,
    next_id: u64,
    template: Option<BlockTemplate>,
    key: Option<TemplateKey>,
    current: Option<Arc<Job>>,
    updates: VecDeque<JobUpdate>,
}

impl Work {
    /// `first_job_id` lets a restarted instance avoid reusing job ids miners still hold.
    pub fn new(cfg: WorkConfig, first_job_id: u64) -> Self {
        Work {
            cfg,
            next_id: first_job_id,
            template: None,
            key: None,
            current: None,
            updates: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &WorkConfig {
        &self.cfg
    }

    pub fn current(&self) -> Option<&Arc<Job>> {
        self.current.as_ref()
    }

    pub fn template(&self) -> Option<&BlockTemplate> {
        self.template.as_ref()
    }

    /// A fresh template from the coinserver. Returns whether a job was made.
    pub fn handle_template(&mut self, now: Now, tpl: BlockTemplate) -> Result<bool, JobError> {
        let key = self.key_for(&tpl);
        if self.key.as_ref() == Some(&key) {
            // Same content; keep the newer curtime for the next rebuild only.
            self.template = Some(tpl);
            return Ok(false);
        }
        let clean = self
            .key
            .as_ref()
            .is_none_or(|k| k.prev_hash != key.prev_hash);
        self.publish(now, tpl, key, clean)?;
        Ok(true)
    }

    /// New aux work (an aux chain moved on or changed its block). Rebuilds the current job as
    /// an update: aux changes never flush miners unless the parent changed too.
    pub fn set_aux(&mut self, now: Now, aux: Option<Arc<AuxCommitment>>) -> Result<bool, JobError> {
        let bytes = |a: &Option<Arc<AuxCommitment>>| a.as_ref().map(|c| c.commitment_bytes());
        if bytes(&self.cfg.coinbase.aux) == bytes(&aux) {
            return Ok(false);
        }
        self.cfg.coinbase.aux = aux;
        let Some(tpl) = self.template.clone() else {
            return Ok(false);
        };
        let key = self.key_for(&tpl);
        self.publish(now, tpl, key, false)?;
        Ok(true)
    }

    #[must_use]
    pub fn poll_job(&mut self) -> Option<JobUpdate> {
        self.updates.pop_front()
    }

    fn key_for(&self, tpl: &BlockTemplate) -> TemplateKey {
        TemplateKey {
            prev_hash: tpl.prev_hash,
            height: tpl.height,
            bits: tpl.bits,
            version: tpl.version,
            coinbase_value: tpl.coinbase_value,
            txids: tpl.txids(),
            witness_commitment: tpl.witness_commitment_script.clone(),
            aux_commitment: self.cfg.coinbase.aux.as_ref().map(|a| a.commitment_bytes()),
        }
    }

    fn publish(
        &mut self,
        now: Now,
        tpl: BlockTemplate,
        key: TemplateKey,
        clean: bool,
    ) -> Result<(), JobError> {
        let id = JobId(self.next_id);
        let job = Arc::new(Job::build(
            id,
            self.cfg.currency.clone(),
            self.cfg.algo,
            &tpl,
            &self.cfg.coinbase,
            now,
        )?);
        self.next_id = self.next_id.wrapping_add(1);
        self.template = Some(tpl);
        self.key = Some(key);
        self.current = Some(job.clone());
        self.updates.push_back(JobUpdate { job, clean });
        Ok(())
    }
}
