//! Shoal's containerd driver: images, snapshots, containers and tasks over
//! containerd's gRPC socket. The only crate that links tokio and tonic.
