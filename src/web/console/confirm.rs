//! Confirmations of bulk queue actions. A bulk action (hold, release, retry, purge or
//! bounce of a filtered or ticked set) first shows what it would touch and hands out a
//! confirmation: a random single-use token bound to who asked (the console session, or
//! the API token), the action, the filter and the ticked ids as asked, and holding the
//! ids of the entries listed then. Only a request that presents it with the same owner,
//! action and selection acts, and it acts on the entries listed, never on mail that
//! arrived in between. A used, expired, foreign or altered confirmation changes nothing
//! and says why. Kept in the store like the sessions, under the SHA-256 of the token
//! (another node, or the same one after a restart, honours them, and the store's lock
//! makes "used once" hold across nodes), read against the injected clock. Blocking:
//! called off the async threads.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use understudy_storage::admins::ConsoleConfirmation;
use understudy_storage::{Clock, Store};

use super::session::{random_token, same_secret, secret_hash};
use crate::admin::queue::{BulkAction, QueueFilter};
use crate::outage::notify::format_time;

/// How long a confirmation may be used after it was shown.
pub const CONFIRMATION_SECS: i64 = 600;

/// What a bulk action was asked for: the action, the filter, and the ids ticked (`None`:
/// every entry the filter matches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub action: BulkAction,
    pub filter: QueueFilter,
    pub ticked: Option<Vec<u64>>,
}

impl Selection {
    /// A selection as compared: the filter normalised, ticked ids sorted and unique.
    pub fn new(action: BulkAction, filter: &QueueFilter, ticked: Option<Vec<u64>>) -> Selection {
        Selection {
            action,
            filter: filter.normalised(),
            ticked: ticked.map(|mut ids| {
                ids.sort_unstable();
                ids.dedup();
                ids
            }),
        }
    }

    fn scope(&self) -> String {
        match &self.ticked {
            None => format!("every entry of the filter ({})", self.filter.describe()),
            Some(ids) => format!(
                "the entries ticked ({}) of the filter ({})",
                ids_text(ids),
                self.filter.describe()
            ),
        }
    }
}

fn ids_text(ids: &[u64]) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
    match ids.len() {
        0 => "none".into(),
        n if n > 20 => format!("{} and {} more", shown.join(", "), n - 20),
        _ => shown.join(", "),
    }
}

/// The confirmations handed out and not yet expired, in the store.
pub struct Confirmations {
    store: Store,
    clock: Arc<dyn Clock>,
}

impl Confirmations {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Confirmations {
        Confirmations { store, clock }
    }

    /// A new confirmation for `owner` to run `selection` on the `listed` entries.
    pub fn issue(
        &self,
        owner: &str,
        selection: Selection,
        listed: Vec<u64>,
    ) -> Result<(String, i64), String> {
        let now = self.clock.now();
        let token = random_token();
        let stored = ConsoleConfirmation {
            owner: owner.to_string(),
            selection: serde_json::to_string(&selection).map_err(|e| e.to_string())?,
            listed,
            issued: now,
            used: None,
        };
        // Expired ones are dropped here, so the store holds only usable or recently used.
        self.store
            .put_console_confirmation(&secret_hash(&token), &stored, &|c| {
                now - c.issued < CONFIRMATION_SECS
            })
            .map_err(|e| format!("cannot keep the confirmation: {e}"))?;
        Ok((token, now + CONFIRMATION_SECS))
    }

    /// The entries to change if `token` confirms `selection` for `owner`; why not
    /// otherwise. A token its owner presents is used up either way, so an altered
    /// request cannot be followed by another try with the same token; one presented by
    /// anyone else stays as it was (they cannot use it, nor spoil it for its owner).
    pub fn redeem(&self, token: &str, owner: &str, selection: &Selection) -> Result<Vec<u64>, String> {
        let now = self.clock.now();
        self.store
            .redeem_console_confirmation(&secret_hash(token), |c| judge(c, now, owner, selection))
            .map_err(|e| format!("cannot read the confirmation: {e}: nothing was changed"))?
    }
}

/// The verdict on a confirmation presented (`None`: not in the store); marks it used
/// when its owner presents it.
fn judge(
    c: Option<&mut ConsoleConfirmation>,
    now: i64,
    owner: &str,
    selection: &Selection,
) -> Result<Vec<u64>, String> {
    let Some(c) = c else {
        return Err(format!(
                "this confirmation is not known (or expired over {} minutes ago): nothing was changed; ask for a new one",
                CONFIRMATION_SECS / 60
            ));
    };
    if !same_secret(&c.owner, owner) {
        return Err(
            "this confirmation was given to another session or API token: nothing was changed".into(),
        );
    }
    if let Some(at) = c.used {
        return Err(format!(
            "this confirmation was used already, at {}: nothing was changed; ask for a new one",
            format_time(at)
        ));
    }
    c.used = Some(now);
    if now - c.issued >= CONFIRMATION_SECS {
        return Err(format!(
                "this confirmation expired at {} ({} minutes after it was shown): nothing was changed; ask for a new one",
                format_time(c.issued + CONFIRMATION_SECS),
                CONFIRMATION_SECS / 60
            ));
    }
    let asked: Selection = serde_json::from_str(&c.selection)
        .map_err(|e| format!("this confirmation cannot be read ({e}): nothing was changed"))?;
    if asked.action != selection.action {
        return Err(format!(
            "this confirmation was for {}, not {}: nothing was changed",
            asked.action.name(),
            selection.action.name()
        ));
    }
    if asked.filter != selection.filter || asked.ticked != selection.ticked {
        return Err(format!(
            "this confirmation was for {}, not {}: nothing was changed",
            asked.scope(),
            selection.scope()
        ));
    }
    Ok(c.listed.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use understudy_storage::ManualClock;

    fn confirmations() -> (tempfile::TempDir, Confirmations, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1000));
        let store = Store::open_with(&dir.path().join("db"), Default::default(), clock.clone()).unwrap();
        (dir, Confirmations::new(store, clock.clone()), clock)
    }

    fn filter(domain: &str) -> QueueFilter {
        QueueFilter {
            domain: domain.into(),
            ..QueueFilter::default()
        }
    }

    #[test]
    fn a_confirmation_works_once_for_its_owner_and_its_selection() {
        let (_dir, c, _clock) = confirmations();
        let hold = Selection::new(BulkAction::Hold, &filter("Example.com "), None);
        let (token, until) = c.issue("session a", hold.clone(), vec![3, 4]).unwrap();
        assert_eq!(until, 1000 + CONFIRMATION_SECS);
        let same = Selection::new(BulkAction::Hold, &filter("example.com"), None);
        assert!(c
            .redeem(&token, "session b", &same)
            .unwrap_err()
            .contains("another session"));
        assert_eq!(c.redeem(&token, "session a", &same).unwrap(), vec![3, 4]);
        assert!(c
            .redeem(&token, "session a", &same)
            .unwrap_err()
            .contains("used already"));
        assert!(c
            .redeem("nonsense", "session a", &same)
            .unwrap_err()
            .contains("not known"));
    }

    #[test]
    fn an_altered_or_late_confirmation_is_refused_and_used_up() {
        let (_dir, c, clock) = confirmations();
        let hold = Selection::new(BulkAction::Hold, &filter("example.com"), Some(vec![4, 3, 3]));
        let ask = |sel: &Selection| {
            let (token, _) = c.issue("s", hold.clone(), vec![3, 4]).unwrap();
            let refused = c.redeem(&token, "s", sel).unwrap_err();
            assert!(c.redeem(&token, "s", &hold).unwrap_err().contains("used already"));
            refused
        };
        let purge = Selection {
            action: BulkAction::Purge,
            ..hold.clone()
        };
        assert!(ask(&purge).contains("was for hold, not purge"), "{}", ask(&purge));
        let wider = Selection::new(BulkAction::Hold, &filter(""), Some(vec![3, 4]));
        assert!(ask(&wider)
            .contains("(domain example.com), not the entries ticked (3, 4) of the filter (every entry)"));
        let more = Selection::new(BulkAction::Hold, &filter("example.com"), Some(vec![3, 4, 5]));
        assert!(ask(&more).contains("ticked (3, 4) of"));
        let all = Selection::new(BulkAction::Hold, &filter("example.com"), None);
        assert!(ask(&all).contains("not every entry of the filter"));
        let (token, _) = c.issue("s", hold.clone(), vec![3, 4]).unwrap();
        clock.advance(CONFIRMATION_SECS);
        assert!(c.redeem(&token, "s", &hold).unwrap_err().contains("expired"));
    }
}
