//! Replacing a node's data key (the key in `seal.key` that seals its raft
//! records and key files) when autolock turns on, as swarmkit rotates its
//! raft DEK: a copy of the data dir taken while the key was in clear must
//! not open what the node writes once it is locked.
//!
//! Steps, each durable before the next, so a crash anywhere loses nothing:
//! 1. `seal.key` holds the new key and the old one, both wrapped under the
//!    unlock key ([`Keyring::wrapped_rotating`]): from here a restart is
//!    locked, and unlocking yields both keys, so records and key files
//!    sealed under either open;
//! 2. every raft record is re-sealed under the new key (one fsynced
//!    transaction, [`shoal_manager::store::Store::reseal`]);
//! 3. `node.key` and `cluster.key` are re-sealed (each replaced by rename);
//! 4. `seal.key` holds the new key alone, wrapped as the swarm says now.
//!
//! A keyring found with two keys (a crash between 1 and 4) is finished the
//! same way from step 2 on the next converge after the daemon starts.

use super::autolock::Sealing;
use super::Daemon;
use crate::daemon::swarm::Mode;
use shoal_shared::noise::key;
use shoal_shared::seal::{self, Keyring, SealKey, UnlockKey};
use std::sync::Arc;

impl Daemon {
    /// Starts or finishes a data-key replacement when one is due; returns
    /// whether the keyring was handled here (then `sync_keyring` has nothing to do).
    pub(crate) fn rekey_if_due(&mut self) -> bool {
        let autolock = self.store.state().autolock.clone();
        let manager = self.swarm.mode == Mode::Manager;
        if self.sealing.keyring.is_rotating() {
            self.finish_rekey();
            return true;
        }
        let (Some(unlock), true, None) = (autolock.key, manager, self.sealing.keyring.wrapped_epoch()) else {
            return false;
        };
        // Autolock turned on while the data key is in clear: step 1.
        let unlock = UnlockKey::from_bytes(unlock);
        // Three draws: the new key; two wrap nonces, whose tails make the nonce prefix.
        let draws: Result<Vec<[u8; 32]>, String> = (0..3).map(|_| self.io.random32()).collect();
        let draws = match draws {
            Ok(d) => d,
            Err(e) => {
                self.keyring_failed(format!("cannot replace the data key: {e}"));
                return true;
            }
        };
        let new_key = draws[0];
        let mut n1 = [0u8; 24];
        let mut n2 = [0u8; 24];
        let mut prefix = [0u8; 16];
        n1.copy_from_slice(&draws[1][..24]);
        n2.copy_from_slice(&draws[2][..24]);
        prefix[..8].copy_from_slice(&draws[1][24..]);
        prefix[8..].copy_from_slice(&draws[2][24..]);
        let old = (self.sealing.keyring.key_id(), *self.sealing.key.key_bytes());
        let new_id = old.0.wrapping_add(1).max(1);
        let ring = Keyring::wrapped_rotating((new_id, &new_key), (old.0, &old.1), &unlock, autolock.epoch, [n1, n2]);
        if let Err(e) = seal::save_keyring(&self.cfg.data_dir.join(seal::KEYRING_FILE), &ring) {
            self.keyring_failed(format!("cannot replace the data key: {e}"));
            return true;
        }
        let key = SealKey::new(new_id, new_key, prefix).with_previous(Some(old));
        let change_pending = self.sealing.change_pending;
        self.sealing = Sealing { key: Arc::new(key), keyring: ring, retry_at_ms: 0, change_pending };
        self.finish_rekey();
        true
    }

    /// Steps 2 to 4 (see the module docs); on error the keyring keeps both
    /// keys and a later converge tries again (after [`super::autolock::KEYRING_RETRY_MS`]).
    fn finish_rekey(&mut self) {
        let current = self.sealing.key.clone();
        if let Err(e) = self.store.reseal(current.clone()) {
            self.keyring_failed(format!("cannot re-seal the raft records under the new data key: {e}"));
            return;
        }
        let dir = self.cfg.data_dir.clone();
        let mut files = vec![(key::NODE_KEY_FILE, self.swarm.node_key.clone())];
        // The cluster key as held, or as on disk when it did not load at start (a file left
        // sealed under the old key would never open again once that key is dropped).
        let on_disk = || key::load(&dir.join(key::CLUSTER_KEY_FILE), &current).ok();
        if let Some(c) = self.swarm.cluster_key.clone().or_else(on_disk) {
            files.push((key::CLUSTER_KEY_FILE, c));
        }
        for (name, k) in files {
            if let Err(e) = key::save(&dir.join(name), &k, &current) {
                self.keyring_failed(format!("cannot re-seal {name} under the new data key: {e}"));
                return;
            }
        }
        let autolock = self.store.state().autolock.clone();
        let id = current.id();
        let data = *current.key_bytes();
        let ring = match (autolock.key, self.swarm.mode == Mode::Manager) {
            (Some(k), true) => match self.io.random32() {
                Ok(r) => Keyring::wrapped(id, &data, &UnlockKey::from_bytes(k), autolock.epoch, r[..24].try_into().unwrap_or_default()),
                Err(e) => {
                    self.keyring_failed(format!("cannot wrap the new data key: {e}"));
                    return;
                }
            },
            _ => Keyring::clear(id, data),
        };
        if let Err(e) = seal::save_keyring(&dir.join(seal::KEYRING_FILE), &ring) {
            self.keyring_failed(format!("cannot store the keyring: {e}"));
            return;
        }
        crate::log!(
            "INFO",
            "replaced the data key with key {id}, kept under the swarm's unlock key (generation {}) when autolock is on: every raft record and key file is re-sealed under it",
            autolock.epoch
        );
        self.sealing.keyring = ring;
    }
}
