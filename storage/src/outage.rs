//! Per-domain outage state (`normal -> outage -> draining -> normal`) and its history.
//! The state survives restarts: a restart in the middle of an outage stays in it.

use std::collections::HashMap;

use crate::db::Batch;
use serde::{Deserialize, Serialize};

use crate::db::{decode, Store};
use crate::error::StoreResult;
use crate::keys::*;

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

    /// Records a transition and the new state in one synced write.
    pub fn set_outage_state(&self, domain: &str, state: &OutageState) -> StoreResult<()> {
        let domain = domain.to_ascii_lowercase();
        let _guard = self.lock(&[("outage", domain.as_str())])?;
        let old = self.outage_state(&domain)?;
        let mut batch = Batch::default();
        self.put_json(&mut batch, CF_OUTAGE, domain.as_bytes(), state)?;
        let mut key = domain_prefix(&domain);
        key.extend_from_slice(&due_key(state.since, self.next_id(crate::db::COUNTER_TRACKING)?));
        let transition = OutageTransition {
            at: state.since,
            from: old.phase,
            to: state.phase,
            reason: state.reason.clone(),
        };
        self.put_json(&mut batch, CF_OUTAGE_HISTORY, &key, &transition)?;
        self.commit(batch)?;
        let mut cache = self.inner.outage_cache.lock();
        cache.generation += 1;
        cache.states.clear();
        Ok(())
    }

    pub fn outage_history(&self, domain: &str) -> StoreResult<Vec<OutageTransition>> {
        self.scan_prefix(CF_OUTAGE_HISTORY, &domain_prefix(&domain.to_ascii_lowercase()))?
            .iter()
            .map(|(_, v)| decode(CF_OUTAGE_HISTORY, v))
            .collect()
    }
}
