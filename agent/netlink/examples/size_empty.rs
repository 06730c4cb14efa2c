//! Size baseline for `size`: the same std pieces (a thread, a channel,
//! files, formatting) without this crate.

fn main() -> Result<(), std::io::Error> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/run/shoal-size/x".into());
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || tx.send(std::fs::write(&path, "1")));
    let r = rx.recv_timeout(std::time::Duration::from_millis(5_000)).map_err(std::io::Error::other)?;
    println!("{r:?}");
    Ok(())
}
