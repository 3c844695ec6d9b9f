//! Per-domain outage state (`normal -> outage -> draining -> normal`) and its history.
//! The state survives restarts: a restart in the middle of an outage stays in it. The
//! outage engine records each of its decisions as one compare-and-set write
//! ([`Store::record_outage_change`]), so nodes sharing a store never double an alert.

use std::collections::HashMap;

use crate::db::Batch;
use serde::{Deserialize, Serialize};

use crate::db::{decode, Store};
use crate::error::{StoreError, StoreResult};
use crate::keys::*;
use crate::mailbox::{blob_id, blob_lock, DeliveryRequest};
use crate::model::BlobId;
use crate::outage_ops::{memo_key, OutageMemo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OutagePhase {
    #[default]
    Normal,
    Outage,
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OutageState {
    pub phase: OutagePhase,
    pub since: i64,
    pub reason: String,
    /// Started by an admin: never ends by itself.
    pub manual: bool,
}

/// What one decision of the outage machine writes ([`Store::record_outage_change`]).
#[derive(Debug, Clone, Default)]
pub struct OutageChange<'a> {
    /// `(from, to)` of each transition, in order; the last `to` is the new state.
    pub transitions: Vec<(OutagePhase, OutageState)>,
    /// The notices, each a message queued for the alert recipients.
    pub notices: Vec<DeliveryRequest<'a>>,
    /// The new memo, when it changed.
    pub memo: Option<OutageMemo>,
}

/// The lock of a domain's outage records (one key type with the body locks it is taken
/// with, so both go through one sorted `Store::lock`).
fn outage_lock(domain: &str) -> (&'static str, u64) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(domain, &mut h);
    ("outage", std::hash::Hasher::finish(&h))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutageTransition {
    pub at: i64,
    pub from: OutagePhase,
    pub to: OutagePhase,
    pub reason: String,
}

/// Outage states by domain as last read, for the reads on every delivery. Cleared and
/// bumped on every state write, so a read that raced a write is not kept (the same
/// scheme as `accounts::AccountsCache`). Bounded: a lookup of names that are no
/// protected domain cannot grow it past `OUTAGE_CACHE_LIMIT`.
#[derive(Default)]
pub(crate) struct OutageCache {
    generation: u64,
    states: HashMap<String, OutageState>,
}

const OUTAGE_CACHE_LIMIT: usize = 10_000;

impl Store {
    pub fn outage_state(&self, domain: &str) -> StoreResult<OutageState> {
        let domain = domain.to_ascii_lowercase();
        let generation = {
            let cache = self.inner.outage_cache.lock();
            if let Some(state) = cache.states.get(&domain) {
                return Ok(state.clone());
            }
            cache.generation
        };
        let state: OutageState = self.get_json(CF_OUTAGE, domain.as_bytes())?.unwrap_or_default();
        let mut cache = self.inner.outage_cache.lock();
        if cache.generation == generation && !self.shared() {
            if cache.states.len() >= OUTAGE_CACHE_LIMIT {
                cache.states.clear();
            }
            cache.states.insert(domain, state.clone());
        }
        Ok(state)
    }

    /// Records a transition and the new state in one synced write, whatever the state
    /// was (tests and tools; the outage engine uses [`Store::record_outage_change`]).
    pub fn set_outage_state(&self, domain: &str, state: &OutageState) -> StoreResult<()> {
        let domain = domain.to_ascii_lowercase();
        let _guard = self.lock(&[outage_lock(&domain)])?;
        let old = self.outage_state(&domain)?;
        let mut batch = Batch::default();
        self.stage_transition(&mut batch, &domain, old.phase, state)?;
        self.commit(batch)?;
        self.outage_written();
        Ok(())
    }

    /// One outage change as one compare-and-set write: the transitions (state and
    /// history), the notices queued for the alert recipients and the memo, committed
    /// together and only if the stored state and memo are still `expected` (what the
    /// machine decided from). Otherwise nothing is written and the error is
    /// [`StoreError::Conflict`]: another node (or an admin) changed the domain since,
    /// and the caller re-reads the store and decides again. So an outage's notices are
    /// queued exactly once however many nodes watch it and wherever one is killed.
    /// Returns the queue id of each notice.
    pub fn record_outage_change(
        &self,
        domain: &str,
        expected: (&OutageState, &OutageMemo),
        change: &OutageChange<'_>,
    ) -> StoreResult<Vec<u64>> {
        let domain = domain.to_ascii_lowercase();
        let blobs: Vec<BlobId> = change.notices.iter().map(|n| blob_id(n.body)).collect();
        let mut keys = vec![outage_lock(&domain)];
        keys.extend(blobs.iter().map(blob_lock));
        let guards = self.lock(&keys)?;
        let ((state, state_raw), (memo, memo_raw)) = self.outage_record_raw(&domain)?;
        if (&state, &memo) != expected {
            return Err(StoreError::Conflict(format!(
                "outage state of {domain} changed since it was read"
            )));
        }
        let mut batch = Batch::default();
        batch.expect_raw(CF_OUTAGE, domain.as_bytes(), state_raw.as_deref());
        batch.expect_raw(CF_OUTAGE, memo_key(&domain), memo_raw.as_deref());
        for (from, to) in &change.transitions {
            self.stage_transition(&mut batch, &domain, *from, to)?;
        }
        let mut staged = Vec::with_capacity(change.notices.len());
        let now = self.now();
        for (notice, blob) in change.notices.iter().zip(&blobs) {
            let tracking_id = self.reserve_tracking_id()?;
            staged.push(self.stage_delivery(&mut batch, tracking_id, notice, blob, (&[], &[]))?);
            let mut key = domain_prefix(&domain);
            key.extend_from_slice(&due_key(now, tracking_id));
            batch.put(CF_OUTAGE_NOTICES, key, []);
        }
        if let Some(memo) = &change.memo {
            self.put_json(&mut batch, CF_OUTAGE, &memo_key(&domain), memo)?;
        }
        let result = self.commit_unlocking(batch, guards);
        // Whether or not it committed (a lost reply may hide a commit): not cached.
        self.outage_written();
        result?;
        Ok(staged
            .into_iter()
            .flat_map(|s| self.delivered(s).queue_ids)
            .collect())
    }

    /// A domain's outage state and memo as stored, read from the engine and never from
    /// the cache (which may hold the last value for a moment after a write became
    /// visible): what [`Store::record_outage_change`] compares with, so what a decision
    /// that lost must start again from.
    pub fn outage_record(&self, domain: &str) -> StoreResult<(OutageState, OutageMemo)> {
        let ((state, _), (memo, _)) = self.outage_record_raw(&domain.to_ascii_lowercase())?;
        Ok((state, memo))
    }

    /// [`Store::outage_record`] with the raw bytes of each record (`None`: absent).
    #[allow(clippy::type_complexity)]
    fn outage_record_raw(
        &self,
        domain: &str,
    ) -> StoreResult<((OutageState, Option<Vec<u8>>), (OutageMemo, Option<Vec<u8>>))> {
        let state_raw = self.get_raw(CF_OUTAGE, domain.as_bytes())?;
        let memo_raw = self.get_raw(CF_OUTAGE, &memo_key(domain))?;
        let state = match &state_raw {
            Some(raw) => decode(CF_OUTAGE, raw)?,
            None => OutageState::default(),
        };
        let memo = match &memo_raw {
            Some(raw) => decode(CF_OUTAGE, raw)?,
            None => OutageMemo::default(),
        };
        Ok(((state, state_raw), (memo, memo_raw)))
    }

    /// The state record and its history entry of one transition, into `batch`.
    fn stage_transition(
        &self,
        batch: &mut Batch,
        domain: &str,
        from: OutagePhase,
        state: &OutageState,
    ) -> StoreResult<()> {
        self.put_json(batch, CF_OUTAGE, domain.as_bytes(), state)?;
        let mut key = domain_prefix(domain);
        key.extend_from_slice(&due_key(state.since, self.next_id(crate::db::COUNTER_TRACKING)?));
        let transition = OutageTransition {
            at: state.since,
            from,
            to: state.phase,
            reason: state.reason.clone(),
        };
        self.put_json(batch, CF_OUTAGE_HISTORY, &key, &transition)
    }

    /// After a write of outage state: what the cache held may be stale.
    fn outage_written(&self) {
        let mut cache = self.inner.outage_cache.lock();
        cache.generation += 1;
        cache.states.clear();
    }

    /// Tracking ids of the notices about `domain` queued at or after `since`, oldest
    /// first: read from the index written with them, not by a scan of the tracking log.
    pub fn outage_notice_ids(&self, domain: &str, since: i64) -> StoreResult<Vec<u64>> {
        let prefix = domain_prefix(&domain.to_ascii_lowercase());
        let mut from = prefix.clone();
        from.extend_from_slice(&due_key(since, 0));
        let mut out = Vec::new();
        for item in self.iter(
            CF_OUTAGE_NOTICES,
            crate::db::IterMode::From(&from, crate::db::Direction::Forward),
        )? {
            let (key, _) = item?;
            let Some(rest) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if let Some((_, id)) = due_key_time(rest) {
                out.push(id);
            }
        }
        Ok(out)
    }

    pub fn outage_history(&self, domain: &str) -> StoreResult<Vec<OutageTransition>> {
        self.scan_prefix(CF_OUTAGE_HISTORY, &domain_prefix(&domain.to_ascii_lowercase()))?
            .iter()
            .map(|(_, v)| decode(CF_OUTAGE_HISTORY, v))
            .collect()
    }
}
