//! Exec of a command in a running container, for health probes
//! ([`Driver::exec`]).
//!
//! Call sequence: `Containers.Get` (the container's OCI spec) -> `Tasks.Get`
//! (must be running) -> a FIFO in a fresh 0700 directory under the temp dir,
//! opened for reading -> `Tasks.Exec` (the container's own `process` with
//! `args` replaced and no terminal; stdout = stderr = the FIFO's path, no
//! stdin) -> `Tasks.Start(exec_id)` -> `Tasks.Wait(exec_id)` up to the
//! timeout, while a reader task drains the FIFO, keeping the first
//! `output_max_bytes` bytes and discarding the rest -> on timeout SIGKILL
//! to the exec's process group (see `kill_exec_group`) and
//! `Tasks.Kill(SIGKILL, exec_id)`, then `Tasks.Wait` up to
//! [`EXEC_KILL_WAIT_MS`] -> `Tasks.DeleteProcess(exec_id)` -> the reader
//! runs to end of file (at most [`EXEC_DRAIN_MS`]) -> the directory is
//! removed.
//!
//! The shim (containerd's `fifo` stdio: a plain path) copies the process's
//! stdout and stderr into the FIFO. Nothing is written to disk and memory is
//! bounded by `output_max_bytes` plus one read buffer: the reader keeps
//! draining after the limit so a chatty command runs to its end (Docker's
//! health checks behave the same), and it never blocks on a full pipe.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::{DeleteProcessRequest, ExecProcessRequest, StartRequest};
use containerd_client::types::v1::Status as TaskStatus;
use serde_json::Value;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::rpc::{nonce, Ctx};
use crate::{valid_identifier, Driver, Error, ExecOutcome};

/// Type URL of an OCI process spec (what containerd's own client sends to `Tasks.Exec`).
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Every exec id starts with this, followed by a process-unique nonce.
pub const EXEC_ID_PREFIX: &str = "probe-";
/// Name prefix of the per-exec directory (under the temp dir) holding the output FIFO.
pub const EXEC_DIR_PREFIX: &str = "shoal-exec-";
/// After the timeout's SIGKILL, how long [`Driver::exec`] waits for the process to be reaped.
pub const EXEC_KILL_WAIT_MS: u64 = 2_000;
/// After `Tasks.DeleteProcess`, how long output may still be read before the FIFO is closed.
pub const EXEC_DRAIN_MS: u64 = 1_000;
/// The largest `output_max_bytes` [`Driver::exec`] accepts.
pub const EXEC_OUTPUT_MAX_BYTES: usize = 1 << 20;
/// A process that outlived its SIGKILL is waited for this long in the
/// background before its exec is deleted.
const ABANDONED_WAIT_MS: u64 = 60_000;
/// Size of the reader's buffer.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The exec's process spec: the container's own `process` (env, cwd, user,
/// capabilities, rlimits, ...) with `args` replaced and no terminal.
pub(crate) fn exec_process(spec_json: &[u8], args: &[String]) -> Result<Vec<u8>, String> {
    let spec: Value = serde_json::from_slice(spec_json).map_err(|e| format!("its runtime spec is not JSON: {e}"))?;
    let Some(Value::Object(process)) = spec.get("process") else {
        return Err("its runtime spec has no process".into());
    };
    let mut p = process.clone();
    p.insert("args".into(), Value::from(args.to_vec()));
    p.insert("terminal".into(), Value::Bool(false));
    p.remove("consoleSize");
    p.remove("commandLine");
    serde_json::to_vec(&Value::Object(p)).map_err(|e| format!("cannot encode its process spec: {e}"))
}

/// Removes the exec output directories (`<dir>/shoal-exec-<pid>-...`) of
/// processes that are gone: a daemon killed mid-probe never dropped its
/// [`Scratch`]. A directory whose pid is alive (another daemon on this
/// host, or a reused pid) is kept. Returns how many were removed.
pub fn sweep_stale_exec_dirs(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(EXEC_DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() && std::fs::remove_dir_all(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// A 0700 directory holding the output FIFO; removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn create() -> Result<Scratch, Error> {
        let dir = std::env::temp_dir().join(format!("{EXEC_DIR_PREFIX}{}", nonce()));
        // Not recursive: fails rather than reuse anything already there.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating exec output directory {} (is the temp dir writable?)", dir.display()), e))?;
        let s = Scratch { dir };
        let fifo = s.fifo();
        let c = CString::new(fifo.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidInput(format!("temp dir path {} contains a NUL byte", s.dir.display())))?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(Error::io(format!("creating fifo {}", fifo.display()), std::io::Error::last_os_error()));
        }
        Ok(s)
    }

    fn fifo(&self) -> PathBuf {
        self.dir.join("output")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the reader kept.
#[derive(Default)]
struct Capture {
    output: Vec<u8>,
    truncated: bool,
}

/// Reads the FIFO until end of file (every writer closed), keeping the
/// first `max` bytes and discarding the rest.
async fn read_capped(rx: pipe::Receiver, max: usize, cap: Arc<Mutex<Capture>>) {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        if rx.readable().await.is_err() {
            return;
        }
        match rx.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let Ok(mut c) = cap.lock() else {
                    return;
                };
                let take = max.saturating_sub(c.output.len()).min(n);
                c.output.extend_from_slice(&buf[..take]);
                c.truncated |= take < n;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {}
            Err(_) => return,
        }
    }
}

/// The reader and what it owns; finished (bounded) after the exec is deleted.
struct Output {
    reader: JoinHandle<()>,
    cap: Arc<Mutex<Capture>>,
    _scratch: Scratch,
}

impl Output {
    /// Lets the reader reach end of file (at most `ms`), then takes what it kept.
    async fn finish(mut self, ms: u64) -> Capture {
        if tokio::time::timeout(Duration::from_millis(ms), &mut self.reader).await.is_err() {
            self.reader.abort();
        }
        self.cap.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }
}

/// `pgrp` and `session` of process `pid` from `/proc/<pid>/stat`.
fn pgrp_and_session(pid: u32) -> Option<(u32, u32)> {
    parse_pgrp_and_session(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pgrp` and `session` out of a `/proc/<pid>/stat` line.
fn parse_pgrp_and_session(stat: &str) -> Option<(u32, u32)> {
    // "pid (comm) state ppid pgrp session ..."; comm may hold anything but ')' ends it last.
    let mut f = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// SIGKILLs the process group of exec process `pid` (as containerd sees
/// it: `Tasks.Start`'s answer), so children a timed-out shell probe waits
/// for die with it. `runc exec` makes the process a session leader; the
/// group is killed only if `/proc/<pid>` shows exactly that, in the
/// container's pid namespace (the one of its init, `init_pid`) and not in
/// ours (so a daemon in another pid namespace, where these pids mean other
/// processes, kills nothing). True if it sent the signal.
fn kill_exec_group(pid: u32, init_pid: u32) -> bool {
    let Ok(group) = i32::try_from(pid) else {
        return false;
    };
    if group <= 1 || init_pid == 0 || pgrp_and_session(pid) != Some((pid, pid)) {
        return false;
    }
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let (own, init, ours) = (ns(&pid.to_string()), ns(&init_pid.to_string()), ns("self"));
    if own.is_none() || own != init || own == ours {
        return false;
    }
    // SAFETY: kill(2) has no memory preconditions; -group names the process group checked above.
    unsafe { libc::kill(-group, libc::SIGKILL) == 0 }
}

impl Ctx {
    /// `Tasks.DeleteProcess`; NotFound is fine.
    async fn process_delete(&self, id: &str, exec_id: &str) -> Result<(), Error> {
        let req = DeleteProcessRequest { container_id: id.to_string(), exec_id: exec_id.to_string() };
        let op = format!("Tasks.DeleteProcess of exec {exec_id} in container {id}");
        match self.call(&op, self.tasks().delete_process(self.req(req, None))).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Kills, waits for and deletes an exec in the background (the caller
    /// already has its answer), keeping its output drained meanwhile so the
    /// shim's copy never blocks on a full FIFO.
    fn abandon_exec(&self, id: String, exec_id: String, output: Option<Output>) {
        let ctx = self.clone();
        tokio::spawn(async move {
            let _ = ctx.process_kill(&id, &exec_id, libc::SIGKILL as u32, false).await;
            if let Ok(Some(_)) = ctx.process_wait(&id, &exec_id, ABANDONED_WAIT_MS).await {
                let _ = ctx.process_delete(&id, &exec_id).await;
            }
            if let Some(o) = output {
                o.finish(EXEC_DRAIN_MS).await;
            }
        });
    }

    async fn exec(&self, id: String, args: Vec<String>, timeout_ms: u64, max: usize) -> Result<ExecOutcome, Error> {
        let c = self.container_get(&id).await?.ok_or_else(|| Error::NotFound { what: format!("container {id}") })?;
        let spec = c.spec.map(|a| a.value).unwrap_or_default();
        let process = exec_process(&spec, &args).map_err(|m| Error::InvalidInput(format!("cannot exec in container {id}: {m}")))?;
        let init_pid = match self.task_get(&id).await? {
            Some(p) if TaskStatus::try_from(p.status) == Ok(TaskStatus::Running) => p.pid,
            Some(p) if TaskStatus::try_from(p.status) == Ok(TaskStatus::Stopped) => {
                return Err(Error::NotFound { what: format!("running task of container {id} (it exited with code {})", p.exit_status) })
            }
            Some(p) => {
                let state = TaskStatus::try_from(p.status).map(|s| s.as_str_name().to_lowercase()).unwrap_or_else(|_| "unknown".into());
                return Err(Error::NotFound { what: format!("running task of container {id} (its task is {state})") });
            }
            None => return Err(Error::NotFound { what: format!("running task of container {id}") }),
        };

        let scratch = Scratch::create()?;
        let fifo = scratch.fifo();
        let Some(fifo_str) = fifo.to_str().map(str::to_string) else {
            return Err(Error::InvalidInput(format!("temp dir path {} is not UTF-8 (set TMPDIR)", scratch.dir.display())));
        };
        // Opened (non-blocking) before the shim opens its end, so the
        // shim's blocking open of the writer returns at once; read only
        // after Tasks.Start, when the writer is open and end of file means
        // the process's output is complete.
        let rx = pipe::OpenOptions::new().open_receiver(&fifo).map_err(|e| Error::io(format!("opening fifo {}", fifo.display()), e))?;

        let exec_id = format!("{EXEC_ID_PREFIX}{}", nonce());
        let req = ExecProcessRequest {
            container_id: id.clone(),
            stdin: String::new(),
            stdout: fifo_str.clone(),
            stderr: fifo_str,
            terminal: false,
            spec: Some(prost_types::Any { type_url: PROCESS_TYPE_URL.into(), value: process }),
            exec_id: exec_id.clone(),
        };
        let op = format!("Tasks.Exec in container {id}");
        if let Err(e) = self.call(&op, self.tasks().exec(self.req(req, None))).await {
            let _ = self.process_delete(&id, &exec_id).await;
            return Err(e);
        }
        let req = StartRequest { container_id: id.clone(), exec_id: exec_id.clone() };
        let op = format!("Tasks.Start of exec {exec_id} in container {id}");
        let started = self.call(&op, self.tasks().start(self.req(req, None))).await;
        if let Err(Error::Rpc { .. } | Error::NotFound { .. }) = started {
            // containerd answered: the process did not start (e.g. no such executable).
            let _ = self.process_delete(&id, &exec_id).await;
        }
        let cap = Arc::new(Mutex::new(Capture::default()));
        let output = Output { reader: tokio::spawn(read_capped(rx, max, cap.clone())), cap, _scratch: scratch };
        let pid = match started {
            Ok(r) => r.pid,
            Err(e @ (Error::Rpc { .. } | Error::NotFound { .. })) => {
                output.finish(0).await;
                return Err(e);
            }
            Err(e) => {
                // No answer: it may run (the reader then drains it until it is deleted).
                self.abandon_exec(id, exec_id, Some(output));
                return Err(e);
            }
        };

        let (exit_code, reaped) = match self.process_wait(&id, &exec_id, timeout_ms).await {
            Ok(Some(status)) => (Some(i64::from(status)), true),
            Ok(None) => {
                // Its whole process group first (what a shell probe started
                // in the foreground), then the process itself through containerd.
                let group_killed = kill_exec_group(pid, init_pid);
                let killed = self.process_kill(&id, &exec_id, libc::SIGKILL as u32, false).await;
                match (group_killed, killed, self.process_wait(&id, &exec_id, EXEC_KILL_WAIT_MS).await) {
                    // Nothing to kill: it exited by itself just at the deadline.
                    (false, Ok(false), Ok(Some(status))) => (Some(i64::from(status)), true),
                    (_, _, Ok(Some(_))) => (None, true),
                    _ => (None, false),
                }
            }
            Err(e) => {
                kill_exec_group(pid, init_pid);
                self.abandon_exec(id, exec_id, Some(output));
                return Err(e);
            }
        };
        if !reaped {
            // Not dead yet (uninterruptible sleep, or containerd stopped
            // answering): it is deleted once it is reaped.
            let (out, truncated) = output.cap.lock().map(|c| (c.output.clone(), c.truncated)).unwrap_or_default();
            self.abandon_exec(id, exec_id, Some(output));
            return Ok(ExecOutcome { exit_code: None, output: out, truncated });
        }
        // The shim waits (up to 2 s) for its output copy before it deletes
        // the process, then closes its end of the FIFO: the reader sees end
        // of file right after.
        let deleted = self.process_delete(&id, &exec_id).await;
        let cap = output.finish(EXEC_DRAIN_MS).await;
        deleted?;
        Ok(ExecOutcome { exit_code, output: cap.output, truncated: cap.truncated })
    }
}

impl Driver {
    /// Runs `args` in running container `container_id` (its namespaces,
    /// env, cwd, user, capabilities and rlimits; no terminal, no stdin) and
    /// waits for it at most `timeout_ms` (counted from its start), then
    /// SIGKILLs it and reports `exit_code: None`. Returns the first
    /// `output_max_bytes` (at most [`EXEC_OUTPUT_MAX_BYTES`]) of its stdout
    /// and stderr, interleaved as written; `truncated` when there was more.
    /// At the timeout its whole process group is killed too (e.g. what a
    /// shell probe waits for). The exec process is always deleted from the
    /// shim; its exit never reaches [`Driver::exits`]. Processes it left
    /// running in the background after a normal exit are not killed (as
    /// with Docker), and one that keeps its stdout or stderr open delays
    /// the answer by the shim's 2 s output wait.
    ///
    /// Errors: [`Error::NotFound`] when the container or its running task
    /// is missing; [`Error::Rpc`] when the process cannot start (e.g. no
    /// such executable; callers of a health probe count it as a failure);
    /// [`Error::InvalidInput`] for empty `args`, a zero timeout or a bad id.
    ///
    /// The output FIFO lives in a fresh directory under the temp dir
    /// (`TMPDIR`), which containerd's shim must see at the same path.
    pub fn exec(&self, container_id: &str, args: &[String], timeout_ms: u64, output_max_bytes: usize) -> Result<ExecOutcome, Error> {
        if !valid_identifier(container_id) {
            return Err(Error::InvalidInput(format!(
                "container id {container_id:?} must be letters/digits separated by single '.', '_' or '-', at most 76 chars"
            )));
        }
        if args.is_empty() || args[0].is_empty() {
            return Err(Error::InvalidInput(format!("exec in container {container_id}: args must not be empty")));
        }
        if timeout_ms == 0 {
            return Err(Error::InvalidInput(format!("exec in container {container_id}: timeout_ms must be > 0")));
        }
        if output_max_bytes > EXEC_OUTPUT_MAX_BYTES {
            return Err(Error::InvalidInput(format!(
                "exec in container {container_id}: output_max_bytes {output_max_bytes} is over the limit of {EXEC_OUTPUT_MAX_BYTES}"
            )));
        }
        let ctx = self.ctx().clone();
        let backstop = timeout_ms.saturating_add(EXEC_KILL_WAIT_MS + EXEC_DRAIN_MS).saturating_add(ctx.call_ms.saturating_mul(6));
        let (id, args) = (container_id.to_string(), args.to_vec());
        self.block("exec", backstop, async move { ctx.exec(id, args, timeout_ms, output_max_bytes).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_process_keeps_the_container_process_and_replaces_args() {
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": true,
                "consoleSize": {"height": 10, "width": 20},
                "user": {"uid": 1000, "gid": 1000},
                "args": ["sleep", "1000"],
                "env": ["PATH=/bin", "FOO=bar"],
                "cwd": "/srv",
                "capabilities": {"bounding": ["CAP_KILL"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": true
            },
            "hostname": "h"
        });
        let out = exec_process(&serde_json::to_vec(&spec).unwrap(), &["sh".into(), "-c".into(), "echo $FOO".into()]).unwrap();
        let p: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(p["args"], serde_json::json!(["sh", "-c", "echo $FOO"]));
        assert_eq!(p["terminal"], false);
        assert!(p.get("consoleSize").is_none());
        assert!(p.get("hostname").is_none(), "the process only, not the whole spec");
        for k in ["user", "env", "cwd", "capabilities", "rlimits", "noNewPrivileges"] {
            assert_eq!(p[k], spec["process"][k], "{k}");
        }
    }

    #[test]
    fn exec_process_refuses_specs_without_a_process() {
        assert!(exec_process(b"not json", &["true".into()]).unwrap_err().contains("not JSON"));
        assert!(exec_process(b"{}", &["true".into()]).unwrap_err().contains("no process"));
        assert!(exec_process(b"", &["true".into()]).is_err());
    }

    #[test]
    fn group_kill_needs_a_session_leader_in_the_containers_pid_namespace() {
        // The stat line's fields, whatever the command's name holds (QEMU
        // user-mode fakes /proc/self/stat with zeros, so a fixed line is tested).
        let line = "4242 (sh (x) y) S 4200 4242 4242 0 -1 4194560 100 0 0 0";
        assert_eq!(parse_pgrp_and_session(line), Some((4242, 4242)));
        assert_eq!(parse_pgrp_and_session("4242 (sh) S 1"), None);
        assert_eq!(parse_pgrp_and_session("garbage"), None);
        // This test process: not a session leader in another pid namespace.
        let me = std::process::id();
        assert!(!kill_exec_group(me, me), "our own pid namespace is never the container's");
        assert!(!kill_exec_group(0, me));
        assert!(!kill_exec_group(u32::MAX, me));
        assert_eq!(pgrp_and_session(u32::MAX), None);
    }

    #[test]
    fn exec_ids_are_containerd_identifiers() {
        let a = format!("{EXEC_ID_PREFIX}{}", nonce());
        let b = format!("{EXEC_ID_PREFIX}{}", nonce());
        assert!(valid_identifier(&a), "{a}");
        assert!(a.len() <= 76);
        assert_ne!(a, b);
    }

    #[test]
    fn scratch_makes_a_private_fifo_and_removes_it() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let s = Scratch::create().unwrap();
        let dir = s.dir.clone();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(std::fs::metadata(s.fifo()).unwrap().file_type().is_fifo());
        drop(s);
        assert!(!dir.exists());
    }

    #[test]
    fn reader_keeps_the_first_bytes_and_drains_the_rest() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let s = Scratch::create().unwrap();
        let fifo = s.fifo();
        let cap = rt.block_on(async {
            let rx = pipe::OpenOptions::new().open_receiver(&fifo).unwrap();
            let cap = Arc::new(Mutex::new(Capture::default()));
            let reader = tokio::spawn(read_capped(rx, 10, cap.clone()));
            // 200 KiB: more than a pipe holds, so the reader must drain.
            let fifo = fifo.clone();
            let writer = std::thread::spawn(move || {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                f.write_all(b"0123456789abcdef").unwrap();
                f.write_all(&vec![b'x'; 200 << 10]).unwrap();
            });
            let o = Output { reader, cap, _scratch: s };
            let cap = o.finish(5_000).await;
            writer.join().unwrap();
            cap
        });
        assert_eq!(cap.output, b"0123456789");
        assert!(cap.truncated);
    }

    #[test]
    fn the_sweep_removes_only_dead_processes_exec_dirs() {
        let dir = std::env::temp_dir().join(format!("shoal-sweep-test-{}", nonce()));
        std::fs::create_dir(&dir).unwrap();
        // pid 2^31 - 2 cannot exist (pid_max is at most 2^22); ours is alive.
        let dead = dir.join(format!("{EXEC_DIR_PREFIX}2147483646-1-0"));
        let mine = dir.join(format!("{EXEC_DIR_PREFIX}{}-1-0", std::process::id()));
        let other = dir.join("shoal-exec-notapid");
        for d in [&dead, &mine, &other] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dead.join("output"), b"").unwrap();
        assert_eq!(sweep_stale_exec_dirs(&dir), 1);
        assert!(!dead.exists() && mine.exists() && other.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
