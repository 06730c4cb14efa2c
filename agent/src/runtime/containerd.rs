//! The production runtime: containerd through `shoal-containerd`, images
//! through `shoal-image`. (Wired in once the driver lands.)

use super::*;
use std::sync::Arc;

/// Connects the containerd-backed runtime.
pub fn connect(socket: &Path, _namespace: &str, _data_dir: &Path) -> Result<Arc<dyn Runtime>, RuntimeError> {
    Err(RuntimeError::Unavailable(format!("cannot connect to containerd at {}: driver not built", socket.display())))
}
