//! The control socket: accepts CLI connections and relays each request to
//! the event loop as an [`Event::Control`], then writes the reply back.
//!
//! Connection tasks own nothing but their stream. Limits: frames are bounded
//! by [`CONTROL_FRAME_BYTES_MAX`]; a request must arrive whole within
//! [`REQUEST_READ_MS_MAX`] once its header started; the loop must answer
//! within [`REPLY_WAIT_MS_MAX`] (image pulls included) or the client is told.

use super::Event;
use anyhow::Context;
use async_channel::Sender;
use async_io::Async;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use shoal_shared::api::{ErrorKind, Reply, Request, API_VERSION};
use shoal_shared::frame::{self, CONTROL_FRAME_BYTES_MAX};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Time allowed for the rest of a request after its header.
const REQUEST_READ_MS_MAX: u64 = 30_000;
/// Time a connection may sit idle between requests.
const IDLE_MS_MAX: u64 = 600_000;
/// Longest the loop may take to answer (pulls of large images included).
const REPLY_WAIT_MS_MAX: u64 = 900_000;

/// Binds the control socket, replacing a stale one but never a live one.
pub(crate) fn bind(path: &Path) -> anyhow::Result<Async<UnixListener>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create socket dir {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!("another shoal daemon is listening on {}: stop it, or use --socket", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(Async::new(listener)?)
}

/// Accepts connections forever, one task per connection.
pub(crate) async fn accept_loop(listener: Async<UnixListener>, tx: Sender<Event>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                smol::spawn(serve(stream, tx.clone())).detach();
            }
            Err(e) => {
                crate::log!("WARN", "accept failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn timeout<T>(ms: u64, f: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    future::or(f, async {
        smol::Timer::after(Duration::from_millis(ms)).await;
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no data for {ms} ms")))
    })
    .await
}

async fn serve(mut stream: Async<UnixStream>, tx: Sender<Event>) {
    loop {
        let mut header = [0u8; 4];
        if timeout(IDLE_MS_MAX, stream.read_exact(&mut header)).await.is_err() {
            return;
        }
        let reply = match frame::header_len(header, CONTROL_FRAME_BYTES_MAX) {
            Err(e) => {
                let _ = write_reply(&mut stream, &Reply::error(ErrorKind::InvalidArgument, e.to_string())).await;
                return; // the stream is out of sync now
            }
            Ok(len) => {
                let mut payload = vec![0u8; len as usize];
                if timeout(REQUEST_READ_MS_MAX, stream.read_exact(&mut payload)).await.is_err() {
                    return;
                }
                match frame::decode::<Request>(API_VERSION, &payload) {
                    Ok(req) => relay(req, &tx).await,
                    Err(e) => Reply::error(ErrorKind::InvalidArgument, format!("bad request: {e}")),
                }
            }
        };
        if write_reply(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

async fn relay(req: Request, tx: &Sender<Event>) -> Reply {
    let (reply_tx, reply_rx) = async_channel::bounded(1);
    if tx.send(Event::Control { req, reply: reply_tx }).await.is_err() {
        return Reply::error(ErrorKind::Unavailable, "the daemon is shutting down");
    }
    let wait = async {
        smol::Timer::after(Duration::from_millis(REPLY_WAIT_MS_MAX)).await;
        Reply::error(ErrorKind::Unavailable, format!("the daemon did not answer within {} s", REPLY_WAIT_MS_MAX / 1000))
    };
    future::or(async { reply_rx.recv().await.unwrap_or_else(|_| Reply::error(ErrorKind::Internal, "the request was dropped")) }, wait).await
}

async fn write_reply(stream: &mut Async<UnixStream>, reply: &Reply) -> std::io::Result<()> {
    let bytes = frame::encode(API_VERSION, reply).map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&bytes).await?;
    stream.flush().await
}
