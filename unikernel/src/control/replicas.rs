//! What this node holds of tasks it does not run, and the rules of
//! ownership: [`ReplicaStore`] keeps the replicas (checkpoints received or
//! sent away, indexed for deduplication), the migrations this node accepted
//! (their epochs settle later offers), and the leases of a standby on its
//! owners' tasks. No socket in sight: the rules are tested on their own.

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;

use smoltcp::wire::IpAddress;
use tern_protocol::{Hash, Known, NackReason, Offer, Replica};

/// Accepted migrations remembered. A sender in doubt repeats its offer
/// until the link returns; while the task runs here its running epoch
/// answers that, afterwards this record does. Past this many the oldest
/// record goes: a retry arriving after 1024 later acceptances would be
/// taken again, the price of not keeping one record per task ever received
/// on a node that runs for weeks.
pub(super) const ACCEPTED_KEPT: usize = 1024;

/// A task this node keeps a replica of: the last checkpoint received (or
/// sent away).
pub(super) struct HeldReplica {
    /// The checkpoint, indexed by chunk.
    pub(super) replica: Rc<Replica>,
    /// The offer it came with (task, epoch, progress, chunks).
    pub(super) offer: Offer,
    /// Node id of the task's owner as this node knows it.
    pub(super) owner: u64,
    /// When it was last replaced.
    pub(super) updated_ns: u64,
}

/// A standby's lease on the replica of one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Lease {
    /// Node id of the owner.
    pub(super) owner: u64,
    /// Address of the owner (a failover syncs back to its control port).
    pub(super) from: IpAddress,
    /// The server connection the last sync came on (its graceful close ends
    /// the lease; another session of the same owner has its own).
    pub(super) conn: usize,
    /// Last message from the owner.
    pub(super) heard_ns: u64,
}

/// What to do with a replica offer (`Replicate` or `Standby`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplicaVerdict {
    /// Take it.
    Accept,
    /// The peer runs the task at a newer epoch than this node's running
    /// copy: stop that copy here (it becomes a replica), then take it.
    StepDownFirst,
    /// Refuse it: this node knows the task at an epoch at least as new, or
    /// holds a newer replica.
    Refuse(NackReason),
}

/// Replicas, accepted migrations and leases.
pub(super) struct ReplicaStore {
    replicas: BTreeMap<u64, HeldReplica>,
    /// By task id: what was accepted, and the acceptance's number (the
    /// oldest goes past [`ACCEPTED_KEPT`]).
    accepted: BTreeMap<u64, (Known, u64)>,
    accepted_count: u64,
    leases: BTreeMap<u64, Lease>,
    lease_ns: u64,
}

impl ReplicaStore {
    /// An empty store whose leases last `lease_ns`.
    pub(super) fn new(lease_ns: u64) -> Self {
        Self {
            replicas: BTreeMap::new(),
            accepted: BTreeMap::new(),
            accepted_count: 0,
            leases: BTreeMap::new(),
            lease_ns,
        }
    }

    /// How long a lease lasts without word from the owner.
    pub(super) fn lease_ns(&self) -> u64 {
        self.lease_ns
    }

    /// Sets the lease (shell `sync lease`).
    pub(super) fn set_lease_ns(&mut self, lease_ns: u64) {
        self.lease_ns = lease_ns;
    }

    /// Keeps `held` as the replica of `task_id`, then forgets the least
    /// recently updated replicas without a lease while replicas hold more
    /// than `budget` bytes (replicas of tasks that migrated away would
    /// otherwise fill the heap, one per task, and leave no room, or no
    /// contiguous room, for the next checkpoint).
    pub(super) fn keep(&mut self, task_id: u64, held: HeldReplica, budget: u64) {
        self.replicas.insert(task_id, held);
        loop {
            let held: u64 = self
                .replicas
                .values()
                .map(|r| r.replica.state_bytes())
                .sum();
            if held <= budget {
                return;
            }
            let oldest = self
                .replicas
                .iter()
                .filter(|(id, _)| **id != task_id && !self.leases.contains_key(id))
                .min_by_key(|(_, r)| r.updated_ns)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    self.replicas.remove(&id);
                }
                None => return,
            }
        }
    }

    /// The replica of `task_id`, if one is held.
    pub(super) fn get(&self, task_id: u64) -> Option<&HeldReplica> {
        self.replicas.get(&task_id)
    }

    /// Every replica held, by task id.
    pub(super) fn replicas(&self) -> impl Iterator<Item = (u64, &HeldReplica)> {
        self.replicas.iter().map(|(id, r)| (*id, r))
    }

    /// What this node knows of a task's ownership: the migration it
    /// accepted, or the epoch it runs the task at (`running_epoch`),
    /// whichever is newer.
    pub(super) fn known(&self, task_id: u64, running_epoch: Option<u64>) -> Option<Known> {
        let mut known = self.accepted.get(&task_id).map(|(known, _)| known.clone());
        if let Some(epoch) = running_epoch {
            if known.as_ref().is_none_or(|k| k.epoch < epoch) {
                known = Some(Known {
                    epoch,
                    checkpoint_hash: None,
                });
            }
        }
        known
    }

    /// Records that the task now runs here at `epoch` (a migration this
    /// node accepted, with its checkpoint's hash, or a failover): the
    /// replica and the lease of the task are over.
    pub(super) fn owned_here(&mut self, task_id: u64, epoch: u64, hash: Option<Hash>) {
        self.accepted_count += 1;
        self.accepted.insert(
            task_id,
            (
                Known {
                    epoch,
                    checkpoint_hash: hash,
                },
                self.accepted_count,
            ),
        );
        if self.accepted.len() > ACCEPTED_KEPT {
            let oldest = self
                .accepted
                .iter()
                .min_by_key(|(_, (_, number))| *number)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.accepted.remove(&id);
            }
        }
        self.replicas.remove(&task_id);
        self.leases.remove(&task_id);
    }

    /// The rule for a replica offer of a task this node runs at
    /// `running = (epoch, migrating)`, if it runs it: a peer running the
    /// task at a newer epoch wins (unless this node is migrating the task
    /// out: the migration decides); a replica never replaces a newer one
    /// (older epoch, or less progress at the same epoch).
    pub(super) fn verdict(&self, offer: &Offer, running: Option<(u64, bool)>) -> ReplicaVerdict {
        if let Some((epoch, migrating)) = running {
            return if offer.epoch <= epoch || migrating {
                ReplicaVerdict::Refuse(NackReason::StaleEpoch { known: epoch })
            } else {
                ReplicaVerdict::StepDownFirst
            };
        }
        match self.replicas.get(&offer.task_id) {
            Some(held)
                if (offer.epoch, offer.progress) < (held.offer.epoch, held.offer.progress) =>
            {
                ReplicaVerdict::Refuse(NackReason::StaleEpoch {
                    known: held.offer.epoch,
                })
            }
            _ => ReplicaVerdict::Accept,
        }
    }

    /// Takes (or renews) the lease on the replica of `task_id` from `owner`
    /// at `from`, whose sync came on server connection `conn`.
    pub(super) fn take_lease(
        &mut self,
        task_id: u64,
        owner: u64,
        from: IpAddress,
        conn: usize,
        now_ns: u64,
    ) {
        self.leases.insert(
            task_id,
            Lease {
                owner,
                from,
                conn,
                heard_ns: now_ns,
            },
        );
    }

    /// Renews the leases of `owner`'s tasks: a message came from it.
    pub(super) fn heard_from(&mut self, owner: u64, now_ns: u64) {
        for lease in self.leases.values_mut().filter(|l| l.owner == owner) {
            lease.heard_ns = now_ns;
        }
    }

    /// `owner` closed server connection `conn` gracefully: the sessions
    /// that synced on it are over and their replicas stay without lease.
    pub(super) fn end_leases(&mut self, owner: u64, conn: usize) {
        self.leases
            .retain(|_, l| !(l.owner == owner && l.conn == conn));
    }

    /// The owner said the task ended at `epoch` ([`tern_protocol::Message::TaskEnded`]):
    /// drops the replica of `task_id` and its lease, unless the replica is
    /// newer (a later owner's). Returns the dropped replica's epoch.
    pub(super) fn ended(&mut self, task_id: u64, epoch: u64) -> Option<u64> {
        let held = self.replicas.get(&task_id)?.offer.epoch;
        if held > epoch {
            return None;
        }
        self.replicas.remove(&task_id);
        self.leases.remove(&task_id);
        Some(held)
    }

    /// Whether this node holds a lease on the task.
    pub(super) fn leased(&self, task_id: u64) -> bool {
        self.leases.contains_key(&task_id)
    }

    /// Every lease, by task id.
    pub(super) fn leases(&self) -> impl Iterator<Item = (u64, &Lease)> {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    /// The tasks whose owner has been silent for longer than the lease.
    pub(super) fn expired(&self, now_ns: u64) -> Vec<u64> {
        self.leases
            .iter()
            .filter(|(_, l)| now_ns.saturating_sub(l.heard_ns) > self.lease_ns)
            .map(|(&t, _)| t)
            .collect()
    }

    /// Takes the lease and the replica of `task_id` out of the store, for a
    /// failover.
    pub(super) fn take_for_failover(&mut self, task_id: u64) -> Option<(Lease, HeldReplica)> {
        let lease = self.leases.remove(&task_id)?;
        let held = self.replicas.remove(&task_id)?;
        Some((lease, held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use tern_protocol::Transfer;

    fn offer(task_id: u64, epoch: u64, progress: u64) -> Offer {
        Offer {
            transfer: Transfer::Replicate,
            task_id,
            kind: "npb-is".into(),
            kind_version: 1,
            progress,
            progress_total: 10,
            epoch,
            checkpoint_hash: [0; 32],
            total_len: 800_000,
            layout: Vec::new(),
            base: None,
            chunks: Vec::new(),
        }
    }

    /// A replica of 800 000 bytes of state.
    fn bytes(task_id: u64) -> Replica {
        let data = tern_migration::BulkRegion::from_vec(vec![task_id as u8; 800_000]);
        let mut snap = tern_migration::Snapshot::new();
        snap.bulk("data", &data);
        let info = tern_migration::HeaderInfo {
            task_kind: "npb-is".into(),
            task_version: 1,
            progress: 1,
            progress_total: 10,
            epoch: 1,
            created_unix_ms: 0,
            isa: "x86_64".into(),
            board: "test".into(),
        };
        let capture = tern_migration::capture(&info, &snap, None).unwrap();
        Replica::advance(None, capture).unwrap()
    }

    fn replica(task_id: u64, updated_ns: u64) -> HeldReplica {
        HeldReplica {
            replica: Rc::new(bytes(task_id)),
            offer: offer(task_id, 1, 1),
            owner: 1,
            updated_ns,
        }
    }

    const OWNER: IpAddress = IpAddress::v4(10, 0, 0, 1);

    #[test]
    fn replicas_give_way_oldest_first_when_memory_runs_short_but_leased_ones_stay() {
        let budget = 2 << 20;
        let mut store = ReplicaStore::new(3_000);
        store.keep(1, replica(1, 10), budget);
        store.keep(2, replica(2, 20), budget);
        store.keep(3, replica(3, 30), budget);
        // 2.4 MB > 2 MiB: the least recently updated goes.
        let ids = |s: &ReplicaStore| s.replicas().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids(&store), [2, 3]);
        // A standby's leased replica stays; the next oldest goes instead.
        store.take_lease(2, 1, OWNER, 0, 40);
        store.keep(4, replica(4, 40), budget);
        assert_eq!(ids(&store), [2, 4]);
    }

    #[test]
    fn a_replica_never_replaces_a_newer_one_and_a_newer_owner_wins() {
        let mut store = ReplicaStore::new(3_000);
        store.keep(7, replica(7, 0), u64::MAX);
        let refuse = |known| ReplicaVerdict::Refuse(NackReason::StaleEpoch { known });
        // Held: epoch 1, progress 1.
        assert_eq!(store.verdict(&offer(7, 1, 0), None), refuse(1));
        assert_eq!(store.verdict(&offer(7, 1, 1), None), ReplicaVerdict::Accept);
        assert_eq!(store.verdict(&offer(7, 2, 0), None), ReplicaVerdict::Accept);
        // Running here at epoch 2: an offer at 2 is stale, at 3 it wins,
        // except while this node migrates the task out.
        assert_eq!(store.verdict(&offer(7, 2, 5), Some((2, false))), refuse(2));
        assert_eq!(
            store.verdict(&offer(7, 3, 0), Some((2, false))),
            ReplicaVerdict::StepDownFirst
        );
        assert_eq!(store.verdict(&offer(7, 3, 0), Some((2, true))), refuse(2));
    }

    #[test]
    fn leases_expire_without_word_and_end_with_their_connection() {
        let mut store = ReplicaStore::new(3_000);
        store.keep(7, replica(7, 0), u64::MAX);
        store.keep(8, replica(8, 0), u64::MAX);
        store.take_lease(7, 1, OWNER, 0, 1_000);
        store.take_lease(8, 1, OWNER, 1, 1_000);
        assert!(store.expired(4_000).is_empty());
        store.heard_from(1, 3_000);
        assert!(store.expired(5_000).is_empty());
        assert_eq!(store.expired(6_001), [7, 8]);
        // A graceful close of connection 1 ends only the lease taken on it.
        store.end_leases(1, 1);
        assert!(store.leased(7) && !store.leased(8));
        let (lease, held) = store.take_for_failover(7).unwrap();
        assert_eq!((lease.owner, held.offer.task_id), (1, 7));
        assert!(store.get(7).is_none() && !store.leased(7));
        assert!(store.take_for_failover(8).is_none());
    }

    #[test]
    fn a_task_ended_drops_its_replica_and_lease_but_not_a_newer_replica() {
        let mut store = ReplicaStore::new(3_000);
        store.keep(7, replica(7, 0), u64::MAX);
        store.take_lease(7, 1, OWNER, 0, 0);
        store.keep(8, replica(8, 0), u64::MAX);
        // Held at epoch 1: an end at epoch 0 is an older owner's.
        assert_eq!(store.ended(7, 0), None);
        assert!(store.get(7).is_some() && store.leased(7));
        assert_eq!(store.ended(7, 1), Some(1));
        assert!(store.get(7).is_none() && !store.leased(7));
        assert!(store.expired(u64::MAX).is_empty());
        assert_eq!(store.ended(7, 1), None);
        assert_eq!(store.ended(8, 5), Some(1));
        assert_eq!(store.replicas().count(), 0);
    }

    #[test]
    fn ownership_known_here_is_the_newest_of_accepted_and_running() {
        let mut store = ReplicaStore::new(3_000);
        assert_eq!(store.known(7, None), None);
        assert_eq!(store.known(7, Some(2)).unwrap().epoch, 2);
        store.keep(7, replica(7, 0), u64::MAX);
        store.take_lease(7, 1, OWNER, 0, 0);
        store.owned_here(7, 3, Some([9; 32]));
        assert!(store.get(7).is_none() && !store.leased(7));
        let known = store.known(7, Some(2)).unwrap();
        assert_eq!((known.epoch, known.checkpoint_hash), (3, Some([9; 32])));
        assert_eq!(store.known(7, Some(4)).unwrap().epoch, 4);
    }

    #[test]
    fn the_oldest_accepted_migrations_are_forgotten_past_the_bound() {
        let mut store = ReplicaStore::new(3_000);
        store.owned_here(1, 2, None);
        for id in 2..=ACCEPTED_KEPT as u64 {
            store.owned_here(id, 1, None);
        }
        // Accepted again: now the newest.
        store.owned_here(1, 4, None);
        store.owned_here(5_000, 1, None);
        assert_eq!(store.accepted.len(), ACCEPTED_KEPT);
        assert_eq!(store.known(1, None).unwrap().epoch, 4);
        assert_eq!(store.known(2, None), None);
        assert!(store.known(3, None).is_some() && store.known(5_000, None).is_some());
    }
}
