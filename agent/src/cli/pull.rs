//! `shoal image pull`, with Docker's output: `TAG: Pulling from REPO`, one
//! line per layer (on a terminal redrawn while it downloads: `Downloading
//! [=====>      ]  1.2MB/4.5MB`; at the end `Already exists` or `Pull
//! complete`), then `Digest:`, `Status:` and the image's name. Progress is
//! polled from the daemon (`Request::ImagePullStatus`) while the pull
//! request is in flight on another connection.

use super::{call, login, REPLY_MS_DEFAULT, REPLY_MS_IMAGES};
use anyhow::bail;
use shoal_shared::api::{PullLayer, PullLayerState, PullProgress, Reply, Request};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// How often a terminal's progress lines are redrawn.
const POLL_MS: u64 = 250;
/// Width of a progress bar, as Docker's.
const BAR_WIDTH: usize = 50;

/// `image pull REFERENCE`.
pub(crate) fn pull(host: &str, reference: String) -> anyhow::Result<()> {
    let parsed = shoal_image::Reference::parse(&reference).map_err(|e| anyhow::anyhow!("invalid reference {reference:?}: {e}"))?;
    let tag = parsed.digest().map(str::to_string).unwrap_or_else(|| parsed.manifest_ref().to_string());
    println!("{tag}: Pulling from {}", parsed.path());
    let auth = login::credentials_for_image(&reference);
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (host, reference) = (host.to_string(), reference.clone());
        std::thread::spawn(move || {
            let _ = tx.send(call(&host, Request::ImagePull { reference, auth }, REPLY_MS_IMAGES));
        });
    }
    let tty = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let done = loop {
        match rx.recv_timeout(Duration::from_millis(POLL_MS)) {
            Ok(r) => break r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if !tty {
                    continue;
                }
                if let Ok(Reply::PullProgress(Some(p))) =
                    call(host, Request::ImagePullStatus { reference: reference.clone() }, REPLY_MS_DEFAULT)
                {
                    drawn = redraw(&p.layers, drawn);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => bail!("the pull request ended without an answer"),
        }
    };
    let (name, progress, downloaded) = match done? {
        Reply::Pulled { name, progress, downloaded } => (name, progress, downloaded),
        // An older daemon: its answer names the image only.
        Reply::Loaded(names) => (names.into_iter().next().unwrap_or(reference.clone()), PullProgress::default(), true),
        r => return Err(super::unexpected(r)),
    };
    if tty {
        redraw(&progress.layers, drawn);
    } else {
        for l in &progress.layers {
            println!("{}", layer_line(l));
        }
    }
    if !progress.digest.is_empty() {
        println!("Digest: {}", progress.digest);
    }
    if downloaded {
        println!("Status: Downloaded newer image for {name}");
    } else {
        println!("Status: Image is up to date for {name}");
    }
    println!("{name}");
    Ok(())
}

/// Replaces the `drawn` lines last printed with one per layer; returns how
/// many it printed.
fn redraw(layers: &[PullLayer], drawn: usize) -> usize {
    let mut out = String::new();
    if drawn > 0 {
        out += &format!("\x1b[{drawn}A");
    }
    for l in layers {
        out += &format!("\x1b[2K{}\n", layer_line(l));
    }
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    layers.len()
}

/// A whole pull in one line, Docker's shape: `Downloading [====>   ] 1.2MB/4.5MB`
/// over the layers still to come (`Extracting` once all are down).
pub(crate) fn pull_summary(p: &PullProgress) -> Option<String> {
    let fetched: Vec<&PullLayer> = p.layers.iter().filter(|l| l.state != PullLayerState::AlreadyExists).collect();
    if fetched.is_empty() {
        return None;
    }
    let (done, total) = fetched.iter().fold((0u64, 0u64), |(d, t), l| (d.saturating_add(l.done_bytes), t.saturating_add(l.size_bytes)));
    let word = if fetched.iter().all(|l| l.state == PullLayerState::Complete) { "Extracting" } else { "Downloading" };
    Some(format!("{word} {} {}/{}", bar(done, total), human_size(done), human_size(total)))
}

/// One layer's line, Docker's words.
fn layer_line(l: &PullLayer) -> String {
    let id: String = l.digest.trim_start_matches("sha256:").chars().take(12).collect();
    match l.state {
        PullLayerState::Waiting => format!("{id}: Pulling fs layer"),
        PullLayerState::Downloading => {
            format!("{id}: Downloading {}  {}/{}", bar(l.done_bytes, l.size_bytes), human_size(l.done_bytes), human_size(l.size_bytes))
        }
        PullLayerState::AlreadyExists => format!("{id}: Already exists"),
        PullLayerState::Complete => format!("{id}: Pull complete"),
    }
}

/// Docker's progress bar (its jsonmessage): `percent / 2` of 50 `=`, a
/// `>`, then spaces to 51 characters inside the brackets; a full bar is
/// `[==================================================>]`.
pub(crate) fn bar(done: u64, total: u64) -> String {
    let filled = if total == 0 { 0 } else { ((u128::from(done.min(total)) * 100 / u128::from(total)) / 2) as usize };
    let filled = filled.min(BAR_WIDTH);
    format!("[{}>{}]", "=".repeat(filled), " ".repeat(BAR_WIDTH - filled))
}

/// Docker's sizes: decimal units, about four significant digits (`1.2MB`, `45MB`).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    let s = if u == 0 {
        format!("{bytes}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_shaped_lines() {
        assert_eq!(bar(0, 100), format!("[>{}]", " ".repeat(50)));
        assert_eq!(bar(50, 100), format!("[{}>{}]", "=".repeat(25), " ".repeat(25)));
        assert_eq!(bar(100, 100), format!("[{}>]", "=".repeat(50)));
        assert_eq!(bar(5, 0), format!("[>{}]", " ".repeat(50)));
        // Docker's integer steps: 1 of 9 is 11 % -> 5 bars.
        assert_eq!(bar(1, 9), format!("[=====>{}]", " ".repeat(45)));
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_200_000), "1.2MB");
        assert_eq!(human_size(45_000_000), "45MB");
        assert_eq!(human_size(12_345_678), "12.35MB");
        assert_eq!(human_size(3_000), "3kB");
        let l = |state, done| PullLayer { digest: format!("sha256:{}", "ab".repeat(32)), size_bytes: 4_500_000, done_bytes: done, state };
        assert_eq!(layer_line(&l(PullLayerState::Waiting, 0)), "abababababab: Pulling fs layer");
        assert_eq!(layer_line(&l(PullLayerState::AlreadyExists, 0)), "abababababab: Already exists");
        assert_eq!(layer_line(&l(PullLayerState::Complete, 0)), "abababababab: Pull complete");
        let d = layer_line(&l(PullLayerState::Downloading, 1_200_000));
        assert!(d.starts_with("abababababab: Downloading [=============>") && d.ends_with("]  1.2MB/4.5MB"), "{d}");
        // A whole pull in one line (service create's progress): layers already here do not count.
        let p = |layers| PullProgress { digest: String::new(), layers };
        let s = pull_summary(&p(vec![
            l(PullLayerState::AlreadyExists, 0),
            l(PullLayerState::Complete, 4_500_000),
            l(PullLayerState::Downloading, 1_200_000),
        ]))
        .unwrap();
        assert_eq!(s, format!("Downloading [{}>{}] 5.7MB/9MB", "=".repeat(31), " ".repeat(19)));
        let done = pull_summary(&p(vec![l(PullLayerState::Complete, 4_500_000)])).unwrap();
        assert!(done.starts_with("Extracting [=====") && done.ends_with("] 4.5MB/4.5MB"), "{done}");
        assert_eq!(pull_summary(&p(vec![l(PullLayerState::AlreadyExists, 0)])), None, "nothing to download");
    }
}
