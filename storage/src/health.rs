//! Store health: a small synced write proves the database is writable (disk not full,
//! not read-only after an I/O error).

use crate::db::Batch;

use crate::db::Store;
use crate::error::StoreResult;
use crate::keys::CF_META;

impl Store {
    pub fn health_check(&self) -> StoreResult<()> {
        let mut batch = Batch::default();
        batch.put(CF_META, b"health_probe", self.now().to_be_bytes());
        self.commit(batch)
    }
}
