//! An in-memory runtime for unit tests of the worker and daemon logic.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A container started with this in its env exits 0 as soon as it starts
/// (a job's task doing its work; the whole-node simulator's jobs).
pub const EXIT_AT_ONCE_ENV: &str = "SHOAL_FAKE_EXIT_AT_ONCE=1";

/// A container started with this in its env fails every health probe.
pub const UNHEALTHY_ENV: &str = "SHOAL_FAKE_UNHEALTHY=1";

/// A runtime that records calls and keeps containers in a map.
pub struct Fake {
    pub containers: Mutex<BTreeMap<String, ContainerState>>,
    /// The healthcheck each container was started with (its label).
    pub health: Mutex<BTreeMap<String, HealthConfig>>,
    /// Containers whose health probes fail (exit 1).
    pub failing_probes: Mutex<std::collections::BTreeSet<String>>,
    /// Calls to `probe`.
    pub probe_calls: AtomicUsize,
    pub images: Mutex<BTreeMap<String, ImageFacts>>,
    exits_tx: async_channel::Sender<Exit>,
    exits_rx: async_channel::Receiver<Exit>,
    /// Calls to `start`, failed or not.
    pub start_calls: AtomicUsize,
    /// Makes every `start` fail.
    pub fail_starts: AtomicBool,
}

impl Fake {
    pub fn new() -> Fake {
        let (exits_tx, exits_rx) = async_channel::bounded(64);
        let mut images = BTreeMap::new();
        images.insert(
            "busybox".to_string(),
            ImageFacts {
                name: "docker.io/library/busybox:latest".into(),
                digest: "sha256:00".into(),
                cmd: vec!["sh".into()],
                ..Default::default()
            },
        );
        Fake {
            containers: Mutex::new(BTreeMap::new()),
            health: Mutex::new(BTreeMap::new()),
            failing_probes: Mutex::new(std::collections::BTreeSet::new()),
            probe_calls: AtomicUsize::new(0),
            images: Mutex::new(images),
            exits_tx,
            exits_rx,
            start_calls: AtomicUsize::new(0),
            fail_starts: AtomicBool::new(false),
        }
    }

    /// Simulates a power cut: every container keeps its record and loses
    /// its process (containerd's `Created` after a reboot), no exit event.
    #[cfg(feature = "sim")]
    pub fn power_cut(&self) {
        for state in self.containers.lock().unwrap().values_mut() {
            if *state == ContainerState::Running {
                *state = ContainerState::Created;
            }
        }
    }

    /// Ids of the containers whose process runs.
    #[cfg(feature = "sim")]
    pub fn running(&self) -> Vec<String> {
        self.containers.lock().unwrap().iter().filter(|(_, s)| **s == ContainerState::Running).map(|(id, _)| id.clone()).collect()
    }

    /// Simulates a container's process ending.
    pub fn exit(&self, id: &str, code: i32) {
        self.containers.lock().unwrap().insert(id.to_string(), ContainerState::Stopped { exit_code: code });
        let _ = self.exits_tx.try_send(Exit { id: id.to_string(), exit_code: code });
    }
}

impl Runtime for Fake {
    fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake 0".into())
    }
    fn local_image(&self, reference: &str) -> Result<Option<ImageFacts>, RuntimeError> {
        // Match on the bare name: `busybox`, `busybox:latest`, `busybox:latest@sha256:00`.
        let name = reference.split('@').next().unwrap_or(reference);
        let name = name.split(':').next().unwrap_or(name);
        Ok(self.images.lock().unwrap().get(name).cloned())
    }
    fn remote_image(&self, reference: &str, _auth: Option<&shoal_image::Credentials>) -> Result<ImageFacts, RuntimeError> {
        Err(RuntimeError::RegistryUnreachable(format!("registry for {reference} is unreachable")))
    }
    fn ensure_image(&self, reference: &str, _auth: Option<&shoal_image::Credentials>) -> Result<ImageFacts, RuntimeError> {
        self.local_image(reference)?.ok_or_else(|| RuntimeError::Image(format!("no such image: {reference}")))
    }
    fn start(&self, spec: &StartSpec) -> Result<(), RuntimeError> {
        self.start_calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_starts.load(Ordering::SeqCst) {
            return Err(RuntimeError::Start("runc create failed: exec: \"x\": executable file not found in $PATH".into()));
        }
        self.containers.lock().unwrap().insert(spec.id.clone(), ContainerState::Running);
        match health_of(&spec.labels) {
            Some(h) => self.health.lock().unwrap().insert(spec.id.clone(), h),
            None => self.health.lock().unwrap().remove(&spec.id),
        };
        if spec.env.iter().any(|e| e == UNHEALTHY_ENV) {
            self.failing_probes.lock().unwrap().insert(spec.id.clone());
        }
        if spec.env.iter().any(|e| e == EXIT_AT_ONCE_ENV) {
            self.exit(&spec.id, 0);
        }
        Ok(())
    }
    fn signal(&self, id: &str, kill: bool) -> Result<Signalled, RuntimeError> {
        let state = self.containers.lock().unwrap().get(id).cloned();
        match state {
            Some(ContainerState::Stopped { exit_code }) => Ok(Signalled::NoProcess { exit_code: Some(exit_code) }),
            // The fake's processes honour the stop signal (143) as well as SIGKILL (137).
            Some(ContainerState::Running) => {
                self.exit(id, if kill { 137 } else { 143 });
                Ok(Signalled::Sent)
            }
            Some(ContainerState::Unknown) => Ok(Signalled::Sent),
            Some(ContainerState::Created) | None => Ok(Signalled::NoProcess { exit_code: None }),
        }
    }
    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.containers.lock().unwrap().remove(id);
        self.health.lock().unwrap().remove(id);
        self.failing_probes.lock().unwrap().remove(id);
        Ok(())
    }
    fn list(&self) -> Result<Vec<Observed>, RuntimeError> {
        let health = self.health.lock().unwrap();
        Ok(self
            .containers
            .lock()
            .unwrap()
            .iter()
            .map(|(id, s)| Observed { id: id.clone(), state: s.clone(), pid: None, health: health.get(id).cloned() })
            .collect())
    }
    fn probe(&self, id: &str, _argv: &[String], _timeout_ms: u64) -> Result<Probed, RuntimeError> {
        self.probe_calls.fetch_add(1, Ordering::SeqCst);
        if self.containers.lock().unwrap().get(id) != Some(&ContainerState::Running) {
            return Err(RuntimeError::Other(format!("container {id} is not running")));
        }
        let exit_code = if self.failing_probes.lock().unwrap().contains(id) { 1 } else { 0 };
        Ok(Probed { exit_code: Some(exit_code), output: Vec::new() })
    }
    fn exits(&self) -> async_channel::Receiver<Exit> {
        self.exits_rx.clone()
    }
    fn load(&self, _path: &Path) -> Result<Vec<String>, RuntimeError> {
        Ok(vec![])
    }
    fn pull_progress(&self, _reference: &str) -> Option<shoal_shared::api::PullProgress> {
        None
    }
    fn pull(&self, reference: &str, _auth: Option<&shoal_image::Credentials>) -> Result<super::Pulled, RuntimeError> {
        Err(RuntimeError::RegistryUnreachable(format!("registry for {reference} is unreachable")))
    }
    fn login(&self, registry: &str, _auth: &shoal_image::Credentials) -> Result<(), RuntimeError> {
        Err(RuntimeError::RegistryUnreachable(format!("registry {registry} is unreachable")))
    }
    fn images(&self) -> Result<Vec<ImageSummary>, RuntimeError> {
        Ok(vec![])
    }
}
