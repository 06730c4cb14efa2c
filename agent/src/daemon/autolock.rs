//! Autolock in the daemon: the node's keyring file (`DATA_DIR/seal.key`,
//! layout in `shoal_shared::seal`), the locked mode a manager starts in
//! when its data key is wrapped, and keeping the keyring in step with the
//! swarm's autolock setting.
//!
//! Start: no keyring yet (a new node, or one from before sealing) → a fresh
//! random data key in clear. A clear keyring → the daemon starts as usual.
//! A wrapped one → [`serve_locked`]: the control socket answers `version`,
//! `info`, `swarm unlock` and `swarm leave --force` and refuses everything
//! else with Docker's message; nothing else runs (no raft, no links, no
//! worker: the node's containers keep running in containerd untouched and
//! are adopted once unlocked). `swarm unlock` needs no quorum: the key only
//! has to unwrap the local data key.
//!
//! Running: after every converge the daemon compares the keyring with the
//! replicated [`Autolock`] ([`Daemon::sync_keyring`]): a manager of a swarm
//! with autolock on keeps its data key wrapped under the current unlock key
//! (a rotation re-wraps it as soon as the entry is applied here; a manager
//! that was unreachable still unlocks with the previous key and re-wraps
//! when it catches up); any other node keeps it in clear. The keyring file
//! is replaced atomically (temporary file, fsync, rename), so no file in
//! the data dir keeps the clear data key once autolock is on.

use super::router::Outcome;
use super::{Daemon, Event};
use crate::daemon::swarm::Mode;
use anyhow::Context;
use shoal_manager::control;
use shoal_shared::api::{ErrorKind, Reply, Request, SwarmInfo, VersionInfo};
use shoal_shared::noise::key;
use shoal_shared::seal::{self, Keyring, SealKey, UnlockKey};
use shoal_shared::types::Autolock;
use shoal_shared::types::NodeRole;
use std::path::Path;
use std::sync::Arc;

/// Docker's message for any command on a locked manager.
pub(crate) const LOCKED_MESSAGE: &str =
    "Swarm is encrypted and needs to be unlocked before it can be used. Please use \"shoal swarm unlock\" to unlock it.";
/// Docker's message for `swarm leave` without `--force` on a locked manager.
pub(crate) const LOCKED_LEAVE_MESSAGE: &str =
    "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.";
/// Docker's message for a wrong or malformed key.
pub(crate) const INVALID_KEY_MESSAGE: &str = "swarm could not be unlocked: invalid key provided";

/// The node's data key and the keyring file it came from.
pub(crate) struct Sealing {
    pub(crate) key: Arc<SealKey>,
    pub(crate) keyring: Keyring,
    /// After a failed keyring change, when to try again (mono ms): a full
    /// disk must not turn into an error line per tick.
    pub(crate) retry_at_ms: u64,
    /// An autolock change proposed here and when (mono ms): one at a time,
    /// or two could compute the same epoch, the second be skipped at apply
    /// and its key be printed although it never took effect.
    pub(crate) change_pending: Option<(shoal_manager::store::Proposal, u64)>,
}

/// How long after a failed keyring change the next try waits.
pub(crate) const KEYRING_RETRY_MS: u64 = 10_000;

impl Sealing {
    /// The data key of an unlocked keyring, with a fresh nonce prefix.
    /// The data keys of a keyring opened with `unlock` (none when clear),
    /// with a fresh nonce prefix; an unfinished rotation's previous key
    /// still opens what it sealed (see `rekey`).
    fn from_keyring(keyring: Keyring, unlock: Option<&UnlockKey>) -> anyhow::Result<Sealing> {
        let data_key = keyring.data_key(unlock)?;
        let previous = keyring.previous_key(unlock)?;
        let prefix = key::os_random::<16>()?;
        let mut key = SealKey::new(keyring.key_id(), data_key, prefix).with_previous(previous);
        if !keyring.is_wrapped() {
            // A data key in clear protects nothing from whoever can write the data dir.
            key = key.allowing_plain_upgrade();
        }
        Ok(Sealing { key: Arc::new(key), keyring, retry_at_ms: 0, change_pending: None })
    }

    /// A given data key (no keyring file): tests and the simulator, which
    /// pass a fresh `nonce_prefix` at each boot.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn fixed(bytes: [u8; 32], nonce_prefix: [u8; 16]) -> Sealing {
        Sealing {
            key: Arc::new(SealKey::new(1, bytes, nonce_prefix)),
            keyring: Keyring::clear(1, bytes),
            retry_at_ms: 0,
            change_pending: None,
        }
    }
}

/// How the daemon may start.
pub(crate) enum Start {
    Unlocked(Sealing),
    /// The data key is wrapped: serve [`serve_locked`] first.
    Locked(Keyring),
}

/// Reads the keyring, creating a clear one with a fresh data key when the
/// data dir has none.
pub(crate) fn open_keyring(data_dir: &Path) -> anyhow::Result<Start> {
    let path = data_dir.join(seal::KEYRING_FILE);
    match seal::load_keyring(&path)? {
        Some(k) if k.is_wrapped() => Ok(Start::Locked(k)),
        Some(k) => Ok(Start::Unlocked(Sealing::from_keyring(k, None)?)),
        None => {
            let k = Keyring::clear(1, key::os_random::<32>()?);
            seal::save_keyring(&path, &k)?;
            Ok(Start::Unlocked(Sealing::from_keyring(k, None)?))
        }
    }
}

/// How the locked mode ended.
pub(crate) enum Unlocked {
    Key(Sealing),
    /// `swarm leave --force`: the swarm state and keys were deleted; start
    /// as a new node.
    Left,
    /// SIGTERM or SIGINT while locked.
    Stopped,
}

/// Serves the control socket of a locked manager until it is unlocked, left
/// or stopped (see the module docs).
pub(crate) fn serve_locked(cfg: &super::Config, keyring: &Keyring, runtime_version: String) -> anyhow::Result<Unlocked> {
    let listener = super::server::bind(&cfg.socket)?;
    let node_id = key::public_of(&cfg.data_dir.join(key::NODE_KEY_FILE)).map(|p| key::node_id_of(&p)).unwrap_or_default();
    crate::log!(
        "WARN",
        "this manager is locked: its swarm has autolock on and its keys are sealed under the unlock key; run `shoal swarm unlock` \
         (containers keep running; nothing is started or stopped until then)"
    );
    let (tx, rx) = async_channel::bounded(16);
    smol::block_on(async {
        let accept = smol::spawn(super::server::accept_loop(listener, tx.clone()));
        let signals = smol::spawn(super::signals(tx.clone()));
        let out = loop {
            let Ok(ev) = rx.recv().await else { break Ok(Unlocked::Stopped) };
            let (req, reply) = match ev {
                Event::Signal => break Ok(Unlocked::Stopped),
                Event::Control { req, reply } => (req, reply),
                _ => continue,
            };
            let (answer, done) = locked_answer(cfg, keyring, &node_id, &runtime_version, req);
            let _ = reply.try_send(answer);
            if let Some(done) = done {
                break done;
            }
        };
        // Dropping the tasks closes the listener; the socket file is replaced by the next bind.
        drop(accept);
        drop(signals);
        out
    })
}

/// One request to a locked manager: the reply, and how the locked mode ends if it does.
fn locked_answer(
    cfg: &super::Config,
    keyring: &Keyring,
    node_id: &str,
    runtime_version: &str,
    req: Request,
) -> (Reply, Option<anyhow::Result<Unlocked>>) {
    let version = || VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        platform: crate::host::platform().to_string(),
        containerd: runtime_version.to_string(),
        node_id: node_id.to_string(),
        swarm: true,
    };
    match req {
        Request::Ping => (Reply::Pong, None),
        Request::Version => (Reply::Version(version()), None),
        Request::Info => {
            let info = SwarmInfo {
                version: version(),
                local_state: "locked".into(),
                is_manager: true,
                node_addr: String::new(),
                manager_addrs: Vec::new(),
                cluster_id: String::new(),
                managers: 0,
                nodes: 0,
                settings: None,
                leader_id: String::new(),
                plugins: Vec::new(),
                warnings: Vec::new(),
                autolock: true,
                node_lost_after_ms: 0,
                link_profile: Default::default(),
                autopilot: None,
                tunnel: None,
                registries: Default::default(),
                layer_sharing: None,
            };
            (Reply::Info(Box::new(info)), None)
        }
        Request::SwarmUnlock { key } => {
            let unlocked = UnlockKey::parse(&key).and_then(|k| keyring.data_key(Some(&k)).map(|_| k));
            match unlocked {
                Err(_) => (Reply::error(ErrorKind::InvalidArgument, INVALID_KEY_MESSAGE), None),
                Ok(k) => match Sealing::from_keyring(keyring.clone(), Some(&k)) {
                    Ok(s) => {
                        crate::log!("INFO", "unlocked with the unlock key; starting");
                        (Reply::Ok, Some(Ok(Unlocked::Key(s))))
                    }
                    Err(e) => (Reply::error(ErrorKind::Internal, e.to_string()), Some(Err(e))),
                },
            }
        }
        Request::SwarmLeave { force: true } => match forget_swarm(&cfg.data_dir) {
            Ok(()) => {
                crate::log!("WARN", "left the swarm while locked (--force): the swarm state and keys of this node were deleted");
                (Reply::Left, Some(Ok(Unlocked::Left)))
            }
            Err(e) => (Reply::error(ErrorKind::Internal, format!("cannot delete the swarm state: {e:#}")), None),
        },
        Request::SwarmLeave { force: false } => (Reply::error(ErrorKind::FailedPrecondition, LOCKED_LEAVE_MESSAGE), None),
        _ => (Reply::error(ErrorKind::FailedPrecondition, LOCKED_MESSAGE), None),
    }
}

/// Deletes what a locked node cannot read without its unlock key: the
/// state database and every key file. The node starts afresh (a new node
/// id, in no swarm); its task containers are cleaned up as after any leave.
fn forget_swarm(data_dir: &Path) -> anyhow::Result<()> {
    for name in ["shoal.redb", key::CLUSTER_KEY_FILE, key::NODE_KEY_FILE, seal::KEYRING_FILE] {
        let p = data_dir.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
    Ok(())
}

/// What the keyring should be: wrapped at the swarm's epoch on a manager of
/// an autolocked swarm, clear elsewhere.
fn wanted(manager: bool, autolock: &Autolock) -> Option<(UnlockKey, u64)> {
    match (manager, autolock.key) {
        (true, Some(k)) => Some((UnlockKey::from_bytes(k), autolock.epoch)),
        _ => None,
    }
}

impl Daemon {
    /// Brings the keyring file in step with the swarm's autolock setting
    /// (see the module docs). Cheap when nothing changed.
    pub(crate) fn sync_keyring(&mut self) {
        if self.mono_ms() < self.sealing.retry_at_ms || self.rekey_if_due() {
            return;
        }
        let manager = self.swarm.mode == Mode::Manager;
        let want = wanted(manager, &self.store.state().autolock);
        let have = self.sealing.keyring.wrapped_epoch();
        if want.as_ref().map(|(_, e)| *e) == have {
            return;
        }
        let data = *self.sealing.key.key_bytes();
        let id = self.sealing.keyring.key_id();
        let next = match &want {
            Some((unlock, epoch)) => match self.io.random32() {
                Ok(r) => {
                    let mut nonce = [0u8; 24];
                    nonce[..24].copy_from_slice(&r[..24]);
                    Keyring::wrapped(id, &data, unlock, *epoch, nonce)
                }
                Err(e) => {
                    self.keyring_failed(format!("cannot wrap the data key: {e}"));
                    return;
                }
            },
            None => Keyring::clear(id, data),
        };
        let path = self.cfg.data_dir.join(seal::KEYRING_FILE);
        match seal::save_keyring(&path, &next) {
            Ok(()) => {
                match &want {
                    Some((_, epoch)) => crate::log!(
                        "INFO",
                        "autolock: the data key is now wrapped under the swarm's unlock key (generation {epoch}); \
                         after a restart this manager needs `shoal swarm unlock`"
                    ),
                    None => crate::log!("INFO", "autolock off on this node: the data key is kept in clear"),
                }
                self.sealing.keyring = next;
            }
            Err(e) => self.keyring_failed(format!("cannot update the keyring: {e}")),
        }
    }

    /// `swarm update`: settings and autolock in one entry; turning autolock
    /// on (or asking for it while on) is answered with the unlock key.
    pub(crate) fn swarm_update(
        &mut self,
        heartbeat_ms: Option<u64>,
        node_lost_after_ms: Option<u64>,
        link_profile: Option<shoal_shared::types::LinkProfile>,
        autolock: Option<bool>,
        autopilot: shoal_shared::api::AutopilotUpdate,
        layer_sharing: Option<bool>,
    ) -> Outcome {
        if autolock.is_some() {
            if let Some(busy) = self.autolock_change_busy() {
                return busy;
            }
        }
        let state = self.store.state();
        let r = control::update_swarm(state, heartbeat_ms, node_lost_after_ms).and_then(|mut ops| {
            if let Some(p) = link_profile {
                ops.extend(control::set_link_profile(state, p)?);
            }
            if let Some(on) = layer_sharing {
                ops.extend(control::set_layer_sharing(state, on)?);
            }
            if !autopilot.is_empty() {
                ops.extend(control::update_autopilot(state, autopilot.managers, autopilot.manager_lost_after_ms, autopilot.spread_label)?);
            }
            let Some(on) = autolock else { return Ok((ops, Reply::Ok)) };
            let new_key = self.io.random32().map_err(control::ControlError::Invalid)?;
            let (more, key) = control::set_autolock(state, on, new_key)?;
            ops.extend(more);
            let reply = match key {
                Some(k) => Reply::UnlockKey { key: UnlockKey::from_bytes(k).to_string(), rotated: false, previous_needed_by: Vec::new() },
                None => Reply::Ok,
            };
            Ok((ops, reply))
        });
        let out = self.write(r);
        if autolock.is_some() {
            self.note_autolock_change(&out);
        }
        out
    }

    /// The refusal while an autolock change proposed here is not applied yet.
    fn autolock_change_busy(&mut self) -> Option<Outcome> {
        let now_ms = self.mono_ms();
        let (proposal, at) = self.sealing.change_pending?;
        let applied = self.store.state().applied_index >= proposal.index;
        if applied || now_ms.saturating_sub(at) >= super::swarm::WRITE_TIMEOUT_MS {
            self.sealing.change_pending = None;
            return None;
        }
        Some(Outcome::Now(Reply::error(ErrorKind::Unavailable, "another autolock change is still being committed; retry in a moment")))
    }

    fn note_autolock_change(&mut self, out: &Outcome) {
        if let Outcome::AfterCommit { proposal, .. } = out {
            self.sealing.change_pending = Some((*proposal, self.mono_ms()));
        }
    }

    /// `swarm unlock-key [--rotate]`. A rotation names the managers this
    /// leader cannot reach: they keep needing the previous key until they
    /// have caught up.
    pub(crate) fn unlock_key(&mut self, rotate: bool) -> Outcome {
        if rotate {
            if let Some(busy) = self.autolock_change_busy() {
                return busy;
            }
        }
        let state = self.store.state();
        if !rotate {
            let r = control::unlock_key(state).map(|k| {
                (Vec::new(), Reply::UnlockKey { key: UnlockKey::from_bytes(k).to_string(), rotated: false, previous_needed_by: Vec::new() })
            });
            return self.write(r);
        }
        let (reachable, _) = self.reachability();
        let behind: Vec<String> = state
            .nodes
            .values()
            .filter(|n| n.role == NodeRole::Manager && n.id != self.node_id && !reachable.contains(&n.id))
            .map(|n| if n.description.hostname.is_empty() { n.id.clone() } else { n.description.hostname.clone() })
            .collect();
        let r = self.io.random32().map_err(control::ControlError::Invalid).and_then(|k| {
            let ops = control::rotate_unlock_key(state, k)?;
            Ok((ops, Reply::UnlockKey { key: UnlockKey::from_bytes(k).to_string(), rotated: true, previous_needed_by: behind }))
        });
        let out = self.write(r);
        self.note_autolock_change(&out);
        out
    }

    /// Logs a failed keyring change; the next try waits [`KEYRING_RETRY_MS`].
    pub(crate) fn keyring_failed(&mut self, what: String) {
        crate::log!("ERROR", "{what}; trying again in {} s", KEYRING_RETRY_MS / 1000);
        self.sealing.retry_at_ms = self.mono_ms() + KEYRING_RETRY_MS;
    }

    /// `swarm unlock` on a running daemon: there is nothing to unlock.
    pub(crate) fn unlock_running(&self) -> Reply {
        let in_swarm = self.swarm.mode != Mode::Solo || self.store.state().cluster.is_some();
        if in_swarm {
            Reply::error(ErrorKind::FailedPrecondition, "swarm is not locked")
        } else {
            Reply::error(ErrorKind::FailedPrecondition, "This node is not part of a swarm")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_is_wrapped_only_on_managers_of_an_autolocked_swarm() {
        let on = Autolock { key: Some([3; 32]), epoch: 2 };
        assert_eq!(wanted(true, &on).map(|(k, e)| (k.as_bytes()[0], e)), Some((3, 2)));
        assert!(wanted(false, &on).is_none());
        assert!(wanted(true, &Autolock { key: None, epoch: 3 }).is_none());
    }

    #[test]
    fn a_new_data_dir_gets_a_clear_keyring_that_survives_restarts() {
        let dir = std::env::temp_dir().join(format!("shoal-autolock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let Start::Unlocked(a) = open_keyring(&dir).unwrap() else { panic!("locked") };
        let Start::Unlocked(b) = open_keyring(&dir).unwrap() else { panic!("locked") };
        assert_eq!(a.key.key_bytes(), b.key.key_bytes());
        let unlock = UnlockKey::from_bytes([9; 32]);
        seal::save_keyring(&dir.join(seal::KEYRING_FILE), &Keyring::wrapped(1, a.key.key_bytes(), &unlock, 1, [0; 24])).unwrap();
        let Start::Locked(k) = open_keyring(&dir).unwrap() else { panic!("not locked") };
        assert_eq!(&k.data_key(Some(&unlock)).unwrap(), a.key.key_bytes());
        // Only a data key in clear may seal records found in clear (an
        // upgrade from before sealing); an unlocked one refuses them.
        assert!(a.key.allows_plain_upgrade());
        let unlocked = Sealing::from_keyring(k, Some(&unlock)).unwrap();
        assert!(!unlocked.key.allows_plain_upgrade());
        let _ = std::fs::remove_dir_all(dir);
    }
}
