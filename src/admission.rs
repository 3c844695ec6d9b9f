//! Admission at the accept layer, shared by every listener, mail and HTTP alike: a cap on
//! the connections a group of listeners may hold, a cap per client address, and the
//! file-descriptor budget that keeps the mail listeners accepting however the HTTP ones
//! are flooded. 1,100 idle connections to the metrics or autoconfig port once used up
//! every descriptor and IMAP greetings stopped (issue 19 item 7); anything accepting
//! connections goes through an [`Admission`], so a new HTTP stack keeps these limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for everything but accepted connections: the store's files, the
/// log, outbound delivery and directory connections, the admin socket.
pub const RESERVED_DESCRIPTORS: usize = 512;

/// Connection slots for one group of listeners.
pub struct Admission {
    slots: Arc<Semaphore>,
    capacity: usize,
    per_ip: Arc<PerIp>,
    per_ip_max: usize,
}

/// Held for as long as the connection lives; gives both slots back when dropped.
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
    _ip: PerIpGuard,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The group holds `capacity` connections.
    Full,
    /// This client address holds `per_ip_max`.
    PerIp,
}

impl Admission {
    pub fn new(capacity: usize, per_ip_max: usize) -> Arc<Admission> {
        let capacity = capacity.max(1);
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            per_ip: Arc::new(PerIp::default()),
            per_ip_max,
        })
    }

    /// A slot for a connection from `ip`, or why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let ip = self.per_ip.try_take(ip, self.per_ip_max).ok_or(Refusal::PerIp)?;
        Ok(Ticket { _slot: slot, _ip: ip })
    }

    /// Waits (at most `grace`) until every admitted connection has ended.
    pub async fn drained(&self, grace: Duration) -> bool {
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_ok()
    }
}

/// Raises the soft descriptor limit to the hard one and shares what it allows between
/// the groups: `wanted` connection slots per group, in order of priority (the mail
/// listeners first). A group gets at most what is left after the reserve and the groups
/// before it, and at least 16, so the caps never promise descriptors that are not there.
pub fn descriptor_budget(wanted: &[usize]) -> Vec<usize> {
    let limit = raise_descriptor_limit();
    let mut left = limit.saturating_sub(RESERVED_DESCRIPTORS);
    let mut out = Vec::with_capacity(wanted.len());
    // The later groups are served first from the budget, so that the mail listeners
    // (first) are the ones that shrink only if nothing else can.
    let later: usize = wanted.iter().skip(1).sum();
    for (i, &want) in wanted.iter().enumerate() {
        let keep_for_later = if i == 0 { later.min(left / 2) } else { 0 };
        let give = want.min(left.saturating_sub(keep_for_later)).max(want.min(16));
        if give < want {
            tracing::warn!(
                wanted = want,
                granted = give,
                descriptor_limit = limit,
                "not enough file descriptors for the configured connection limit; lowered (raise LimitNOFILE)"
            );
        }
        left = left.saturating_sub(give);
        out.push(give);
    }
    out
}

/// The soft RLIMIT_NOFILE after raising it to the hard limit.
fn raise_descriptor_limit() -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return 1024;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    }
    #[cfg(not(unix))]
    {
        usize::MAX
    }
}

/// Counts connections per client address; the guard gives the slot back.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn try_take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut map = self.0.lock();
        let count = map.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PerIpGuard {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut map = self.table.0.lock();
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_per_group_and_per_address() {
        let a = Admission::new(3, 2);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let t1 = a.admit(ip(1)).unwrap();
        let _t2 = a.admit(ip(1)).unwrap();
        assert_eq!(a.admit(ip(1)).err(), Some(Refusal::PerIp));
        let _t3 = a.admit(ip(2)).unwrap();
        assert_eq!(a.admit(ip(3)).err(), Some(Refusal::Full));
        drop(t1);
        assert!(a.admit(ip(1)).is_ok(), "a slot comes back with its ticket");
    }

    #[test]
    fn the_budget_keeps_the_reserve_and_favours_the_first_group() {
        let limit = raise_descriptor_limit();
        let got = descriptor_budget(&[10, 20]);
        assert_eq!(got, vec![10, 20], "small asks are granted (limit {limit})");
        let got = descriptor_budget(&[usize::MAX / 4, 64]);
        assert!(got[0] + got[1] <= limit.saturating_sub(RESERVED_DESCRIPTORS).max(32));
        assert_eq!(got[1], 64);
    }
}
