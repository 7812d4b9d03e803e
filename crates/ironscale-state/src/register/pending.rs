//! Pending interactive registrations: a machine that registered without a
//! credential waits here until someone vouches for it (an administrator with
//! `nodes register --key <id>`, or an identity provider after a login), it is
//! denied, or it expires.
//!
//! Ids are 24 characters from a CSPRNG (143 bits): they travel in the login
//! URL shown to the user, so guessing one must be hopeless. The table is
//! bounded: when it is full of live entries, new interactive registrations
//! are refused instead of growing memory for anyone who can open a Noise
//! connection. Entries live in memory only (a restarted server forgets them;
//! the client starts over).

use std::collections::HashMap;
use std::sync::Arc;

use ironscale_keys::{MachinePublic, NodePublic};
use ironscale_types::{Node, Timestamp};
use rand::Rng;
use tokio::sync::watch;

use super::decide::Request;

const ID_LEN: usize = 24;
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The id of a pending registration (the last path segment of its login URL).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationId(String);

impl RegistrationId {
    pub(crate) fn generate() -> RegistrationId {
        // ThreadRng is a CSPRNG (ChaCha, seeded and reseeded from the OS).
        let mut rng = rand::rng();
        let s = (0..ID_LEN)
            .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
            .collect();
        RegistrationId(s)
    }

    /// Accept what `generate` makes (anything else cannot name an entry).
    pub fn parse(s: &str) -> Option<RegistrationId> {
        (s.len() == ID_LEN && s.bytes().all(|b| ID_ALPHABET.contains(&b)))
            .then(|| RegistrationId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for RegistrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistrationId({})", self.0)
    }
}

/// A machine waiting for its registration to be approved.
#[derive(Debug, Clone)]
pub struct PendingRegistration {
    pub id: RegistrationId,
    pub machine: MachinePublic,
    pub node_key: NodePublic,
    /// The hostname the client reported (for the approver to recognise it).
    pub hostname: String,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub(crate) request: Request,
}

/// Where a pending registration stands (watched by the client's follow-up request).
#[derive(Debug, Clone)]
pub enum RegistrationStatus {
    Waiting,
    Approved(Arc<Node>),
    Denied(String),
}

/// A pending registration and its watchers.
pub(crate) struct Entry {
    reg: PendingRegistration,
    status: watch::Sender<RegistrationStatus>,
}

impl Entry {
    pub(crate) fn registration(&self) -> &PendingRegistration {
        &self.reg
    }
}

/// The table is full of live registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

pub(crate) struct PendingTable {
    by_id: HashMap<RegistrationId, Entry>,
    /// One live registration per machine: a newer login replaces the older.
    by_machine: HashMap<MachinePublic, RegistrationId>,
    /// Denied registrations, until they would have expired: a client that
    /// asks again with the same login URL hears the reason again.
    denied: HashMap<RegistrationId, (String, Timestamp)>,
    capacity: usize,
    ttl: chrono::Duration,
}

impl PendingTable {
    pub(crate) fn new(capacity: usize, ttl: std::time::Duration) -> PendingTable {
        PendingTable {
            by_id: HashMap::new(),
            by_machine: HashMap::new(),
            denied: HashMap::new(),
            capacity,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        }
    }

    fn remove(&mut self, id: &RegistrationId) -> Option<Entry> {
        let e = self.by_id.remove(id)?;
        if self.by_machine.get(&e.reg.machine) == Some(id) {
            self.by_machine.remove(&e.reg.machine);
        }
        Some(e)
    }

    fn purge_expired(&mut self, now: Timestamp) {
        self.denied.retain(|_, (_, until)| *until > now);
        let dead: Vec<RegistrationId> = self
            .by_id
            .iter()
            .filter(|(_, e)| e.reg.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            if let Some(e) = self.remove(&id) {
                e.status.send_replace(RegistrationStatus::Denied(
                    "the registration expired; run `tailscale up` again".into(),
                ));
            }
        }
    }

    /// The live registration of this machine's node key, or a new one.
    pub(crate) fn start(
        &mut self,
        machine: MachinePublic,
        request: &Request,
        now: Timestamp,
    ) -> Result<PendingRegistration, TableFull> {
        self.purge_expired(now);
        if let Some(id) = self.by_machine.get(&machine).cloned() {
            let same_key = self
                .by_id
                .get(&id)
                .is_some_and(|e| e.reg.node_key == request.node_key);
            if same_key {
                if let Some(e) = self.by_id.get_mut(&id) {
                    // The client asked again (restart, retry): same login URL,
                    // with what it reports now.
                    e.reg.request = request.clone();
                    return Ok(e.reg.clone());
                }
            }
            // A newer login of this machine (a new node key) replaces its older one.
            if let Some(old) = self.remove(&id) {
                old.status.send_replace(RegistrationStatus::Denied(
                    "a newer login of this machine replaced this one".into(),
                ));
            }
        }
        if self.by_id.len() >= self.capacity {
            return Err(TableFull);
        }
        let hostname = request
            .hostinfo
            .as_ref()
            .map(|h| ironscale_wire::HostinfoView::from_value(h).hostname)
            .unwrap_or_default();
        let reg = PendingRegistration {
            id: RegistrationId::generate(),
            machine,
            node_key: request.node_key,
            hostname,
            created: now,
            expires: now + self.ttl,
            request: request.clone(),
        };
        let (status, _) = watch::channel(RegistrationStatus::Waiting);
        self.by_machine.insert(reg.machine, reg.id.clone());
        self.by_id.insert(
            reg.id.clone(),
            Entry {
                reg: reg.clone(),
                status,
            },
        );
        Ok(reg)
    }

    pub(crate) fn get(&self, id: &RegistrationId, now: Timestamp) -> Option<PendingRegistration> {
        self.by_id
            .get(id)
            .filter(|e| e.reg.expires > now)
            .map(|e| e.reg.clone())
    }

    pub(crate) fn list(&self, now: Timestamp) -> Vec<PendingRegistration> {
        let mut v: Vec<_> = self
            .by_id
            .values()
            .filter(|e| e.reg.expires > now)
            .map(|e| e.reg.clone())
            .collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));
        v
    }

    /// Watch the status of `id` (None: unknown or expired).
    pub(crate) fn watch(
        &self,
        id: &RegistrationId,
        now: Timestamp,
    ) -> Option<watch::Receiver<RegistrationStatus>> {
        self.by_id
            .get(id)
            .filter(|e| e.reg.expires > now)
            .map(|e| e.status.subscribe())
    }

    /// End `id` with `status` (approved or denied) and forget it; a denial
    /// is remembered until the registration would have expired.
    pub(crate) fn finish(&mut self, id: &RegistrationId, status: RegistrationStatus) -> bool {
        match self.remove(id) {
            Some(e) => {
                self.finish_entry(e, status);
                true
            }
            None => false,
        }
    }

    /// Take `id` out of the table (an approval in progress: nobody else can
    /// approve or deny it meanwhile). Give it back with [`Self::restore`] or
    /// end it with [`Self::finish_entry`].
    pub(crate) fn take(&mut self, id: &RegistrationId, now: Timestamp) -> Option<Entry> {
        if self.by_id.get(id).is_some_and(|e| e.reg.expires <= now) {
            return None;
        }
        self.remove(id)
    }

    pub(crate) fn restore(&mut self, e: Entry) {
        self.by_machine.insert(e.reg.machine, e.reg.id.clone());
        self.by_id.insert(e.reg.id.clone(), e);
    }

    pub(crate) fn finish_entry(&mut self, e: Entry, status: RegistrationStatus) {
        if let RegistrationStatus::Denied(why) = &status {
            self.denied
                .insert(e.reg.id.clone(), (why.clone(), e.reg.expires));
        }
        e.status.send_replace(status);
    }

    /// Why `id` was denied, while that is remembered.
    pub(crate) fn denial(&self, id: &RegistrationId, now: Timestamp) -> Option<String> {
        self.denied
            .get(id)
            .filter(|(_, until)| *until > now)
            .map(|(why, _)| why.clone())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(k: u8) -> Request {
        let mut b = [0u8; 32];
        b[0] = k;
        Request {
            node_key: NodePublic::from_bytes(b),
            ..Default::default()
        }
    }

    fn machine(k: u8) -> MachinePublic {
        let mut b = [0u8; 32];
        b[1] = k;
        MachinePublic::from_bytes(b)
    }

    fn t(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn ids_are_long_random_and_parse_back() {
        let a = RegistrationId::generate();
        let b = RegistrationId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 24);
        assert_eq!(RegistrationId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(RegistrationId::parse("short"), None);
        assert_eq!(RegistrationId::parse(&"/".repeat(24)), None);
    }

    #[test]
    fn a_retry_gets_the_same_registration_and_another_machine_does_not() {
        let mut p = PendingTable::new(10, std::time::Duration::from_secs(60));
        let a = p
            .start(machine(1), &req(1), t(0))
            .unwrap_or_else(|_| panic!("full"));
        let again = p
            .start(machine(1), &req(1), t(5))
            .unwrap_or_else(|_| panic!("full"));
        assert_eq!(a.id, again.id);
        assert_eq!(p.len(), 1);
        let other = p
            .start(machine(2), &req(1), t(5))
            .unwrap_or_else(|_| panic!("full"));
        assert_ne!(a.id, other.id);
    }

    #[test]
    fn a_newer_login_of_a_machine_replaces_its_older_one() {
        let mut p = PendingTable::new(10, std::time::Duration::from_secs(60));
        let a = p
            .start(machine(1), &req(1), t(0))
            .unwrap_or_else(|_| panic!("full"));
        let w = p.watch(&a.id, t(0)).unwrap_or_else(|| panic!("watch"));
        let b = p
            .start(machine(1), &req(2), t(1))
            .unwrap_or_else(|_| panic!("full"));
        assert_ne!(a.id, b.id);
        assert_eq!(p.len(), 1, "one live registration per machine");
        assert!(matches!(&*w.borrow(), RegistrationStatus::Denied(m) if m.contains("newer")));
    }

    #[test]
    fn a_denial_is_remembered_until_the_registration_would_have_expired() {
        let mut p = PendingTable::new(10, std::time::Duration::from_secs(60));
        let a = p
            .start(machine(1), &req(1), t(0))
            .unwrap_or_else(|_| panic!("full"));
        assert!(p.finish(&a.id, RegistrationStatus::Denied("no".into())));
        assert_eq!(p.denial(&a.id, t(30)).as_deref(), Some("no"));
        assert_eq!(p.denial(&a.id, t(60)), None);
    }

    #[test]
    fn a_taken_entry_cannot_be_finished_until_restored() {
        let mut p = PendingTable::new(10, std::time::Duration::from_secs(60));
        let a = p
            .start(machine(1), &req(1), t(0))
            .unwrap_or_else(|_| panic!("full"));
        let e = p.take(&a.id, t(1)).unwrap_or_else(|| panic!("take"));
        assert!(!p.finish(&a.id, RegistrationStatus::Denied("late".into())));
        assert!(p.take(&a.id, t(1)).is_none());
        p.restore(e);
        assert!(p.get(&a.id, t(2)).is_some());
        assert!(
            p.take(&a.id, t(60)).is_none(),
            "an expired entry is not taken"
        );
    }

    #[test]
    fn entries_expire_and_the_table_is_bounded() {
        let mut p = PendingTable::new(2, std::time::Duration::from_secs(60));
        let a = p
            .start(machine(1), &req(1), t(0))
            .unwrap_or_else(|_| panic!("full"));
        let mut watch = p.watch(&a.id, t(1)).unwrap_or_else(|| panic!("watch"));
        p.start(machine(2), &req(2), t(10))
            .unwrap_or_else(|_| panic!("full"));
        assert_eq!(p.start(machine(3), &req(3), t(20)).err(), Some(TableFull));
        assert!(p.get(&a.id, t(59)).is_some());
        assert!(p.get(&a.id, t(60)).is_none(), "expired at created + ttl");
        // At t=61 the first entry is purged, which makes room, and its watcher hears why.
        p.start(machine(3), &req(3), t(61))
            .unwrap_or_else(|_| panic!("room after expiry"));
        assert!(
            matches!(&*watch.borrow_and_update(), RegistrationStatus::Denied(m) if m.contains("expired"))
        );
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn finish_tells_the_watcher_and_forgets_the_entry() {
        let mut p = PendingTable::new(2, std::time::Duration::from_secs(60));
        let a = p
            .start(machine(1), &req(1), t(0))
            .unwrap_or_else(|_| panic!("full"));
        let w = p.watch(&a.id, t(0)).unwrap_or_else(|| panic!("watch"));
        assert!(p.finish(&a.id, RegistrationStatus::Denied("no".into())));
        assert!(!p.finish(&a.id, RegistrationStatus::Denied("no".into())));
        assert!(matches!(&*w.borrow(), RegistrationStatus::Denied(m) if m == "no"));
        assert!(p.get(&a.id, t(1)).is_none());
        assert!(p.list(t(1)).is_empty());
    }
}
