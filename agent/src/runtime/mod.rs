//! The worker's view of a container runtime, as a blocking trait.
//!
//! The daemon calls these methods from `smol::unblock` tasks, never on its
//! event loop. The production implementation is [`containerd::Containerd`];
//! unit tests and the whole-node simulator use [`fake::Fake`]. Integration tests always run containerd:
//! the fake proves nothing about containers.

pub mod containerd;
#[cfg(any(test, feature = "sim"))]
pub mod fake;

use shoal_shared::api::ImageSummary;
use shoal_shared::platform::Platform;
use shoal_shared::types::HealthConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the runtime knows about a usable image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// Canonical name, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// Digest of what the name points at (index or manifest).
    pub digest: String,
    /// Platforms the image supports (from its index, or its config).
    pub platforms: Vec<Platform>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub stop_signal: String,
    /// Top snapshot (chain id) for this node's platform.
    pub chain_id: String,
    /// The image's `HEALTHCHECK` (negative durations read as 0: the default).
    pub healthcheck: Option<HealthConfig>,
}

/// A bind or tmpfs mount, resolved to host paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMount {
    pub source: PathBuf,
    pub target: String,
    pub tmpfs: bool,
    pub read_only: bool,
}

/// Everything needed to start one task's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartSpec {
    pub id: String,
    pub image: ImageFacts,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub log_path: PathBuf,
    pub memory_limit_bytes: i64,
    pub nano_cpus: i64,
    pub mounts: Vec<HostMount>,
    pub stop_signal: String,
    /// The task's own network namespace (as the runtime's mount namespace
    /// sees it); `None`: the host's (`--network host`).
    pub netns: Option<PathBuf>,
}

/// A container as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Stopped { exit_code: i32 },
    Unknown,
}

/// One container in the runtime's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub state: ContainerState,
    /// Its main process, while it has one (the data path adopts a running
    /// task's network namespace through it).
    pub pid: Option<u32>,
    /// The healthcheck it was started with ([`HEALTH_LABEL`]), so a
    /// restarted daemon probes it as before.
    pub health: Option<HealthConfig>,
}

/// The container label that keeps a task's effective healthcheck. Layout:
/// `1 INTERVAL_NS TIMEOUT_NS START_PERIOD_NS RETRIES`, then ` LEN:WORD` per
/// word of the test (LEN its bytes: nothing to escape). Written by hand,
/// not as JSON: serde_json's code for it cost 12 KB of the binary.
pub const HEALTH_LABEL: &str = "io.shoal.healthcheck";
/// containerd's bound on one label, key and value together.
const LABEL_BYTES_MAX: usize = 4096;

/// The label value for a task's effective healthcheck; an error when it
/// does not fit in a label (an image's very long `HEALTHCHECK`).
pub fn health_label(h: &HealthConfig) -> Result<String, RuntimeError> {
    let mut v = format!("1 {} {} {} {}", h.interval_ns, h.timeout_ns, h.start_period_ns, h.retries);
    for w in &h.test {
        v.push_str(&format!(" {}:{w}", w.len()));
    }
    if HEALTH_LABEL.len() + v.len() > LABEL_BYTES_MAX {
        return Err(RuntimeError::Start(format!(
            "the healthcheck takes {} bytes as a container label, over containerd's {LABEL_BYTES_MAX}: use a shorter health command",
            v.len()
        )));
    }
    Ok(v)
}

/// The healthcheck a container was started with, from its labels: `None`
/// without one, or when it does not read as one (then it is not probed).
pub fn health_of(labels: &BTreeMap<String, String>) -> Option<HealthConfig> {
    let v = labels.get(HEALTH_LABEL)?;
    let mut rest = v.strip_prefix("1 ")?;
    let mut n = [0u64; 4];
    for (i, slot) in n.iter_mut().enumerate() {
        let end = rest.find(' ').unwrap_or(rest.len());
        *slot = rest[..end].parse().ok()?;
        rest = &rest[end..];
        if i < 3 {
            rest = rest.strip_prefix(' ')?;
        }
    }
    let mut test = Vec::new();
    while let Some(r) = rest.strip_prefix(' ') {
        let (len, r) = r.split_once(':')?;
        let len: usize = len.parse().ok()?;
        test.push(r.get(..len)?.to_string());
        rest = &r[len..];
    }
    if !rest.is_empty() {
        return None;
    }
    let h = HealthConfig { test, interval_ns: n[0], timeout_ns: n[1], start_period_ns: n[2], retries: n[3] };
    // Bounded again: what a probe runs never depends on an unchecked label.
    shoal_shared::health::effective(Some(&h), None)
}

/// A container's main process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub id: String,
    pub exit_code: i32,
}

/// What a signal found (see [`Runtime::signal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signalled {
    /// Delivered to a live process; its exit comes as an [`Exit`] or in a listing.
    Sent,
    /// Nothing to signal: no container, no task, or a task that already
    /// exited (with its exit code).
    NoProcess { exit_code: Option<i32> },
}

/// Runtime failures, classified for task states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime itself is not there (socket missing, daemon down).
    #[error("{0}")]
    Unavailable(String),
    /// The image is not present and could not be obtained.
    #[error("{0}")]
    Image(String),
    /// The registry answered but has no such image (or tag).
    #[error("{0}")]
    ImageNotFound(String),
    /// The registry could not be reached.
    #[error("{0}")]
    RegistryUnreachable(String),
    /// Creating or starting the container failed.
    #[error("{0}")]
    Start(String),
    /// Anything else the runtime refused.
    #[error("{0}")]
    Other(String),
}

/// Bytes of a health probe's output kept (Docker keeps as many).
#[cfg_attr(not(feature = "probes"), allow(dead_code))]
pub const PROBE_OUTPUT_BYTES_MAX: usize = 4096;

/// What one health probe (a command run in a running container) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probed {
    /// Its exit status; `None`: it timed out and was killed.
    pub exit_code: Option<i64>,
    /// Its stdout and stderr, the first [`PROBE_OUTPUT_BYTES_MAX`] bytes.
    pub output: Vec<u8>,
}

/// A finished pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// The image's familiar name.
    pub name: String,
    pub progress: shoal_shared::api::PullProgress,
    /// Whether a layer was downloaded or the name now points at another
    /// image (Docker's "Downloaded newer image" against "Image is up to date").
    pub downloaded: bool,
}

/// What a runtime without a registry client (the fake) answers registry calls with.
fn no_registry(reference: &str) -> RuntimeError {
    RuntimeError::Image(format!("this runtime reaches no registry for {reference}"))
}

/// A container runtime driven by the worker.
pub trait Runtime: Send + Sync + 'static {
    /// Runtime name and version, e.g. `containerd 1.6.20`.
    fn version(&self) -> Result<String, RuntimeError>;
    /// The image if it is present locally.
    fn local_image(&self, reference: &str) -> Result<Option<ImageFacts>, RuntimeError>;
    /// Resolves a reference on its registry without pulling: digest and platforms.
    /// `auth`: credentials for its registry (`--with-registry-auth`).
    fn remote_image(&self, reference: &str, auth: Option<&shoal_image::Credentials>) -> Result<ImageFacts, RuntimeError>;
    /// Makes the image usable here (pulling it if missing, with `auth` if
    /// given) and returns its facts.
    fn ensure_image(&self, reference: &str, auth: Option<&shoal_image::Credentials>) -> Result<ImageFacts, RuntimeError>;
    /// Creates and starts a container.
    fn start(&self, spec: &StartSpec) -> Result<(), RuntimeError>;
    /// Sends a container its stop signal (`kill`: SIGKILL to all its
    /// processes) and returns at once. The grace period between the two is
    /// the caller's timer, never a blocked call.
    fn signal(&self, id: &str, kill: bool) -> Result<Signalled, RuntimeError>;
    /// Deletes a container and everything it holds; idempotent.
    fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every container in this node's namespace.
    fn list(&self) -> Result<Vec<Observed>, RuntimeError>;
    /// Runs a health probe, `argv`, in a running container with the
    /// container's own process settings, for at most `timeout_ms`.
    fn probe(&self, id: &str, argv: &[String], timeout_ms: u64) -> Result<Probed, RuntimeError>;
    /// Exit notifications (best effort; `list` reconciles what is missed).
    fn exits(&self) -> async_channel::Receiver<Exit>;
    /// Loads images from an OCI or docker archive; returns their names.
    fn load(&self, path: &Path) -> Result<Vec<String>, RuntimeError>;
    /// Pulls an image (with these credentials for its registry, if any);
    /// returns its canonical name and how its layers went.
    fn pull(&self, reference: &str, auth: Option<&shoal_image::Credentials>) -> Result<Pulled, RuntimeError>;
    /// Where a pull of `reference` in flight is (`image pull`'s progress).
    fn pull_progress(&self, reference: &str) -> Option<shoal_shared::api::PullProgress>;
    /// Checks credentials against a registry (`shoal login`).
    fn login(&self, registry: &str, auth: &shoal_image::Credentials) -> Result<(), RuntimeError>;
    /// Images present locally.
    fn images(&self) -> Result<Vec<ImageSummary>, RuntimeError>;
    /// Where pulls ask for manifests and blobs before the registry (the
    /// swarm's blob cache, issue #16); `None`: the registry only.
    fn set_blob_peer(&self, _peer: Option<Arc<dyn shoal_image::BlobPeer>>) {}
    /// A manifest or index of `reference`'s repository by digest, from its
    /// registry: (media type, bytes). What a manager's blob cache serves.
    fn registry_manifest(
        &self,
        reference: &str,
        _digest: &str,
        _auth: Option<&shoal_image::Credentials>,
    ) -> Result<(String, Vec<u8>), RuntimeError> {
        Err(no_registry(reference))
    }
    /// Downloads blob `digest` (`size` bytes) of `reference`'s repository
    /// from its registry into `dest`, verified (resumed inside on breaks);
    /// `done_bytes` follows the download.
    fn registry_blob_to(
        &self,
        reference: &str,
        _digest: &str,
        _size: u64,
        _auth: Option<&shoal_image::Credentials>,
        _dest: &Path,
        _done_bytes: &std::sync::atomic::AtomicU64,
    ) -> Result<(), RuntimeError> {
        Err(no_registry(reference))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The label round-trips the effective check; a label that does not
    /// read as one, or a check too long for containerd, is no check / an error.
    #[test]
    fn the_healthcheck_label() {
        let h = HealthConfig {
            test: vec!["CMD-SHELL".into(), "test -f \"/ok\"".into()],
            interval_ns: 1_000_000_000,
            timeout_ns: 30_000_000_000,
            start_period_ns: 0,
            retries: 3,
        };
        let label = health_label(&h).unwrap();
        assert_eq!(label, "1 1000000000 30000000000 0 3 9:CMD-SHELL 13:test -f \"/ok\"");
        let labels = BTreeMap::from([(HEALTH_LABEL.to_string(), label)]);
        assert_eq!(health_of(&labels), Some(h.clone()));
        let odd = HealthConfig { test: vec!["CMD".into(), "a b:c".into(), "é 7:x".into()], ..h.clone() };
        assert_eq!(health_of(&BTreeMap::from([(HEALTH_LABEL.to_string(), health_label(&odd).unwrap())])), Some(odd));
        assert_eq!(health_of(&BTreeMap::new()), None);
        for bad in [
            "",
            "{",
            "1 1 2 3",
            "1 1 2 3 4 4:NONE",
            "1 1 2 3 4 3:CMD 9:x",
            "1 1 2 3 4 3:CMD 1:xy",
            "2 1 2 3 4 3:CMD 1:x",
            "1 1 2 3 4 3:CMD 1:\u{e9}",
        ] {
            assert_eq!(health_of(&BTreeMap::from([(HEALTH_LABEL.to_string(), bad.to_string())])), None, "{bad}");
        }
        let long = HealthConfig { test: vec!["CMD".into(), "x".repeat(4_050)], ..h };
        assert!(health_label(&long).unwrap_err().to_string().contains("over containerd's 4096"));
    }
}
