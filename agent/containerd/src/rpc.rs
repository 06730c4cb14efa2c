//! The runtime-side plumbing: the tonic channel, request metadata
//! (namespace, lease), per-call timeouts and leases.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::services::v1::{CreateRequest, DeleteRequest};
use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Response, Status};

use crate::{Config, Error, CONNECT_TIMEOUT_MS};

/// Lease label making containerd drop a forgotten lease.
pub(crate) const LEASE_EXPIRE_LABEL: &str = "containerd.io/gc.expire";
/// Leases expire this long after creation if never deleted (crash).
pub(crate) const LEASE_TTL_S: u64 = 3_600;

/// Cloneable context every async operation runs with.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) channel: Channel,
    pub(crate) ns: Arc<str>,
    pub(crate) socket: Arc<PathBuf>,
    pub(crate) call_ms: u64,
}

/// Opens the channel (bounded by [`CONNECT_TIMEOUT_MS`]).
pub(crate) async fn connect(socket: PathBuf) -> Result<Channel, Error> {
    let fut = containerd_client::connect(socket.clone());
    match tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), fut).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(Error::Unavailable { socket, reason: error_chain(&e) }),
        Err(_) => Err(Error::Unavailable { socket, reason: format!("no answer within {CONNECT_TIMEOUT_MS} ms") }),
    }
}

/// `e: cause: cause`, lowercase-ish, without repeats.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

/// A process-unique suffix for leases and temporary keys.
pub(crate) fn nonce() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{}-{:x}-{}", std::process::id(), t, N.fetch_add(1, Ordering::Relaxed))
}

/// RFC 3339 UTC timestamp for a unix time in seconds.
pub(crate) fn rfc3339(unix_s: u64) -> String {
    shoal_shared::clock::rfc3339(unix_s)
}

pub(crate) fn ts_nanos(ts: &Option<prost_types::Timestamp>) -> Option<i64> {
    ts.as_ref().map(|t| t.seconds.saturating_mul(1_000_000_000) + i64::from(t.nanos))
}

impl Ctx {
    pub(crate) fn new(channel: Channel, cfg: &Config) -> Ctx {
        Ctx { channel, ns: Arc::from(cfg.namespace.as_str()), socket: Arc::new(cfg.socket.clone()), call_ms: cfg.call_timeout_ms }
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// A request carrying the namespace and, if given, the lease.
    pub(crate) fn req<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut r = Request::new(msg);
        // Both are validated identifiers, so they are valid header values.
        if let Ok(v) = MetadataValue::try_from(&*self.ns) {
            r.metadata_mut().insert("containerd-namespace", v);
        }
        if let Some(l) = lease {
            if let Ok(v) = MetadataValue::try_from(l) {
                r.metadata_mut().insert("containerd-lease", v);
            }
        }
        r
    }

    /// Awaits one unary call with the call timeout.
    pub(crate) async fn call<T>(&self, op: &str, fut: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, Error> {
        self.call_ms(op, self.call_ms, fut).await
    }

    /// Awaits one unary call with timeout `ms`.
    pub(crate) async fn call_ms<T>(&self, op: &str, ms: u64, fut: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, Error> {
        match tokio::time::timeout(Duration::from_millis(ms), fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(st)) => Err(Error::from_status(op, self.socket(), st)),
            Err(_) => Err(Error::Timeout { op: op.to_string(), ms }),
        }
    }

    pub(crate) async fn version(&self, ms: u64) -> Result<String, Error> {
        let mut c = VersionClient::new(self.channel.clone());
        let r = self.call_ms("Version", ms, c.version(Request::new(()))).await;
        match r {
            Ok(v) => Ok(v.version),
            Err(Error::Timeout { .. }) => {
                Err(Error::Unavailable { socket: self.socket.to_path_buf(), reason: format!("no Version answer within {ms} ms") })
            }
            Err(Error::Rpc { message, .. }) => {
                Err(Error::Unavailable { socket: self.socket.to_path_buf(), reason: format!("not containerd? Version failed: {message}") })
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a lease that expires after [`LEASE_TTL_S`] if never deleted.
    pub(crate) async fn lease_create(&self) -> Result<String, Error> {
        let id = format!("shoal-{}", nonce());
        self.lease_ensure(&id, LEASE_TTL_S).await?;
        Ok(id)
    }

    /// Creates lease `id` expiring after `ttl_s`, unless it exists (kept as is).
    pub(crate) async fn lease_ensure(&self, id: &str, ttl_s: u64) -> Result<(), Error> {
        let expire = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + ttl_s;
        let labels = HashMap::from([(LEASE_EXPIRE_LABEL.to_string(), rfc3339(expire))]);
        let mut c = LeasesClient::new(self.channel.clone());
        match self.call("Leases.Create", c.create(self.req(CreateRequest { id: id.to_string(), labels }, None))).await {
            Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a lease (best effort: errors are returned but callers usually
    /// ignore them; the lease expires by itself).
    pub(crate) async fn lease_delete(&self, id: &str) -> Result<(), Error> {
        let mut c = LeasesClient::new(self.channel.clone());
        self.call("Leases.Delete", c.delete(self.req(DeleteRequest { id: id.to_string(), sync: false }, None))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_794_995_200), "2026-11-18T09:46:40Z");
    }
}
