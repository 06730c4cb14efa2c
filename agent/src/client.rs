//! The CLI's side of the control socket: one blocking request, one reply.
//!
//! Every call is bounded: connecting fails at once when no daemon listens,
//! and a reply must arrive within the timeout given for the request.

use shoal_shared::api::{Reply, Request, API_VERSION};
use shoal_shared::frame::{self, FrameError, CONTROL_FRAME_BYTES_MAX};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// Default control socket, as Docker's `/var/run/docker.sock`.
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoal.sock";
/// Reply deadline for ordinary requests.
pub const REPLY_MS_DEFAULT: u64 = 30_000;
/// Reply deadline for image transfers.
pub const REPLY_MS_IMAGES: u64 = 900_000;

/// A connection to a daemon.
pub struct Client {
    host: String,
    stream: UnixStream,
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid host {0:?}: use unix:///path/to/shoal.sock")]
    BadHost(String),
    #[error("cannot connect to the shoal daemon at {0}: is it running?")]
    Connect(String),
    #[error("the shoal daemon at {host} did not answer within {ms} ms")]
    Timeout { host: String, ms: u64 },
    #[error("lost the connection to the shoal daemon at {host}: {source}")]
    Frame { host: String, source: FrameError },
}

impl Client {
    /// Connects to `host` (`unix:///path`).
    pub fn connect(host: &str) -> Result<Client, ClientError> {
        let path = host.strip_prefix("unix://").filter(|p| p.starts_with('/')).ok_or_else(|| ClientError::BadHost(host.to_string()))?;
        let stream = UnixStream::connect(PathBuf::from(path)).map_err(|_| ClientError::Connect(host.to_string()))?;
        Ok(Client { host: host.to_string(), stream })
    }

    /// Sends a request and waits up to `timeout_ms` for the reply.
    pub fn call(&mut self, req: &Request, timeout_ms: u64) -> Result<Reply, ClientError> {
        let frame_err = |source| ClientError::Frame { host: self.host.clone(), source };
        self.stream.set_read_timeout(Some(Duration::from_millis(timeout_ms))).map_err(|e| frame_err(e.into()))?;
        self.stream.set_write_timeout(Some(Duration::from_millis(REPLY_MS_DEFAULT))).map_err(|e| frame_err(e.into()))?;
        frame::write_blocking(&mut self.stream, API_VERSION, req).map_err(frame_err)?;
        match frame::read_blocking(&mut self.stream, API_VERSION, CONTROL_FRAME_BYTES_MAX) {
            Ok(r) => Ok(r),
            Err(FrameError::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Err(ClientError::Timeout { host: self.host.clone(), ms: timeout_ms })
            }
            Err(e) => Err(frame_err(e)),
        }
    }
}
