//! One recording's task: the tap's frames into a 16-bit PCM WAV file or an
//! Ogg Opus file (mono, or stereo with the inbound track left and the
//! outbound right, cut and paired as raw streams are), and a metadata JSON
//! beside it when it ends: who and what was recorded, when, its pauses and
//! key presses.
//! Files are written by this task, never by a media worker; a write error
//! (a full disk) ends the recording with an event, and the call goes on.

use super::format::{Format, Meta, Outgoing, Wire};
use super::{Owner, Registry};
use crate::media::tap::{Out, Tap};
use crate::media::{ogg::OggOpus, wav};
use serde_json::{json, Value};
use std::io::SeekFrom;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};

/// The header is brought up to date this often (bytes of audio), so that
/// a file cut short by a crash still says nearly how long it is.
const HEADER_EVERY: u64 = 1 << 16;

/// `wav` or `ogg`, by the file's extension.
pub fn format_of(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("ogg") => "ogg",
        _ => "wav",
    }
}

/// What turns PCM into the file's bytes.
enum Encoding {
    Wav,
    Ogg(Box<OggOpus>),
}

impl Encoding {
    fn new(path: &Path, meta: &Meta, channels: u16) -> Result<(Encoding, Vec<u8>), String> {
        Ok(match format_of(path) {
            "ogg" => {
                let serial = meta
                    .stream_id
                    .bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
                let mut o = OggOpus::new(meta.rate, channels.into(), serial)?;
                let head = o.headers();
                (Encoding::Ogg(Box::new(o)), head)
            }
            _ => (Encoding::Wav, wav::header(meta.rate, channels, 0).to_vec()),
        })
    }

    /// The bytes for `pcm` (16-bit little-endian), with `so_far` written before.
    fn audio(&mut self, pcm: &[u8], so_far: u64, path: &Path) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Wav if so_far + pcm.len() as u64 > u64::from(u32::MAX) - wav::HEADER_LEN as u64 => {
                Err(format!("{} reached the 4 GiB a WAV file can hold", path.display()))
            }
            Encoding::Wav => Ok(pcm.to_vec()),
            Encoding::Ogg(o) => o.push(
                &pcm.chunks_exact(2)
                    .map(|s| i16::from_le_bytes([s[0], s[1]]))
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

/// How often the tap's frames are taken.
const POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a recording wrote.
#[derive(Default)]
struct Written {
    bytes: u64,
    dtmf: Vec<Value>,
    pauses: Vec<Value>,
}

pub(super) async fn run(
    reg: &Registry,
    id: &str,
    owner: &Owner,
    tap: Arc<Tap>,
    meta: Meta,
    (file, metadata): (&Path, &Path),
) {
    let started = SystemTime::now();
    let mut w = Written::default();
    let result = record(&tap, meta.clone(), file, &mut w).await;
    tap.close();
    let channels = if meta.stereo { 2 } else { 1 };
    let seconds = w.bytes as f64 / (meta.rate as f64 * 2.0 * channels as f64);
    let unix = |t: SystemTime| crate::store::record::unix_seconds(t);
    let mut info = json!({
        "recording_id": id,
        "file": file,
        "format": format_of(file),
        "sample_rate": meta.rate,
        "channels": channels,
        "tracks": meta.tracks,
        "party": meta.party,
        "started": unix(started),
        "stopped": unix(SystemTime::now()),
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "pauses": w.pauses,
        "dtmf": w.dtmf,
        "details": meta.custom,
    });
    match owner {
        Owner::Call(c) => info["call_id"] = json!(c),
        Owner::Conference(c) => info["conference"] = json!(c),
    }
    if let Err(e) = &result {
        info["error"] = json!(e);
    }
    let written = tokio::fs::write(metadata, serde_json::to_vec_pretty(&info).unwrap_or_default()).await;
    let mut event = json!({ "recording_id": id, "file": file, "metadata": metadata, "seconds": info["seconds"] });
    match owner {
        Owner::Call(c) => event["call_id"] = json!(c),
        Owner::Conference(c) => event["conference"] = json!(c),
    }
    let outcome = match (&result, &written) {
        (Ok(()), Ok(())) => "completed",
        _ => "failed",
    };
    reg.metrics.recording_results.with_label_values(&[outcome]).inc();
    match result.and(written.map_err(|e| format!("metadata {}: {e}", metadata.display()))) {
        Ok(()) => event["event"] = json!("recording_stopped"),
        Err(reason) => {
            tracing::error!(recording = id, %reason, "recording failed");
            event["event"] = json!("recording_failed");
            event["reason"] = json!(reason);
        }
    }
    reg.report(owner, event);
}

/// Writes the file until the tap closes; an error says what failed.
async fn record(tap: &Tap, meta: Meta, path: &Path, w: &mut Written) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| fail("cannot make the directory of", e))?;
    }
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|e| fail("cannot create", e))?;
    let mut file = BufWriter::new(file);
    let (rate, channels) = (meta.rate, if meta.stereo { 2 } else { 1 });
    let (mut enc, head) = Encoding::new(path, &meta, channels)?;
    file.write_all(&head).await.map_err(|e| fail("cannot write", e))?;
    let mut out = Outgoing::new(Format::Raw, meta);
    let mut paused_at: Option<f64> = None;
    let mut marked = 0u64;
    let now = || crate::store::record::unix_seconds(SystemTime::now());
    // A file needs no frame at once: taken every 100 ms (the ring holds half
    // a second of both tracks), a recording wakes its task 10 times a
    // second, not 100.
    let mut pace = tokio::time::interval(POLL);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        pace.tick().await;
        match (tap.is_paused(), paused_at) {
            (true, None) => paused_at = Some(now()),
            (false, Some(from)) => {
                w.pauses.push(json!({"from": from, "to": now()}));
                paused_at = None;
            }
            _ => {}
        }
        while let Some(o) = tap.pop() {
            match o {
                Out::Audio(f) => {
                    for m in out.audio(&f) {
                        let Wire::Binary(b) = m else { continue };
                        let bytes = enc.audio(&b, w.bytes, path)?;
                        file.write_all(&bytes).await.map_err(|e| fail("cannot write", e))?;
                        w.bytes += b.len() as u64;
                    }
                }
                Out::Dtmf(d) => {
                    let at = w.bytes as f64 / (rate as f64 * 2.0 * channels as f64);
                    w.dtmf
                        .push(json!({"digit": d.to_string(), "at_seconds": (at * 1000.0).round() / 1000.0}));
                }
                Out::Played(_) => {}
            }
        }
        let closed = tap.is_closed();
        if let (true, Encoding::Ogg(o)) = (closed, &mut enc) {
            let last = o.finish()?;
            file.write_all(&last).await.map_err(|e| fail("cannot write", e))?;
        }
        let wav = matches!(enc, Encoding::Wav);
        if wav && (closed || w.bytes - marked >= HEADER_EVERY) {
            marked = w.bytes;
            let header = wav::header(rate, channels, w.bytes as u32);
            rewrite_header(&mut file, &header)
                .await
                .map_err(|e| fail("cannot write", e))?;
        }
        if closed {
            if let Some(from) = paused_at {
                w.pauses.push(json!({"from": from, "to": now()}));
            }
            return file.shutdown().await.map_err(|e| fail("cannot close", e));
        }
    }
}

async fn rewrite_header(file: &mut BufWriter<tokio::fs::File>, header: &[u8; wav::HEADER_LEN]) -> std::io::Result<()> {
    file.flush().await?;
    let f = file.get_mut();
    f.seek(SeekFrom::Start(0)).await?;
    f.write_all(header).await?;
    f.seek(SeekFrom::End(0)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::tap::{Framer, Track};

    fn meta() -> Meta {
        Meta {
            stream_id: "R1".into(),
            call_id: "c".into(),
            party: None,
            tracks: vec![Track::Inbound],
            custom: Default::default(),
            rate: 8000,
            stereo: false,
        }
    }

    /// A full disk (Linux's /dev/full answers every write with ENOSPC) is
    /// an error that says so, not a stall.
    #[tokio::test]
    async fn a_full_disk_is_an_error_that_says_so() {
        let tap = Arc::new(Tap::default());
        // A phone's frames keep coming (the error shows on a later write).
        let t = tap.clone();
        std::thread::spawn(move || {
            let mut f = Framer::new(Track::Inbound);
            for _ in 0..1000 {
                f.push(&[0.1; 160], 8000, std::time::Instant::now(), &t);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let mut w = Written::default();
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            record(&tap, meta(), Path::new("/dev/full"), &mut w),
        )
        .await
        .expect("no stall");
        let e = r.expect_err("a full disk fails the recording");
        assert!(e.contains("No space left on device"), "{e}");
    }
}
