//! `floor`: what the kernel itself costs to deliver the frames a scenario delivers. Minimal
//! writer threads (no async runtime, no framing, no hub) write frames of the scenario's size to
//! as many loopback TCP sockets (TCP_NODELAY, as the host's) at the scenario's pace, one
//! `write()` per frame, while a reader drains them. The writers' CPU per frame is the floor a
//! host's CPU per delivery is compared with; measured in the same run, because absolute figures
//! drift with the machine's load while ratios hold.
//!
//! Writers wake once a millisecond and write every frame due since their last wake-up, as a host
//! writes a room's frames when a message comes; CPU is read the way host CPU is (user + system
//! ticks in `/proc`), for the writer threads alone.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::Args;
use crate::client::table;
use crate::wire::Protocol;

/// The load a floor run reproduces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// Receiving sockets.
    pub(crate) sockets: usize,
    /// Frames a second over all sockets.
    pub(crate) frames_per_s: f64,
    /// Bytes per frame (WebSocket header included).
    pub(crate) frame_bytes: usize,
    pub(crate) duration: Duration,
}

/// What one floor run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloorStats {
    /// The pace asked for, in frames a second.
    pub(crate) asked_per_s: f64,
    pub(crate) frames: u64,
    pub(crate) frames_per_s: f64,
    /// Writer CPU per frame, in µs.
    pub(crate) cpu_per_frame_us: f64,
}

impl FloorStats {
    /// Rows naming the floor and `host_us` (host CPU per delivery, µs) as a multiple of it.
    pub(crate) fn rows(&self, host_us: f64) -> [(&'static str, String); 2] {
        [
            (
                "floor CPU per delivery",
                if self.frames_per_s < self.asked_per_s * 0.95 {
                    format!(
                        "{:.2} µs (one write per frame; the writers kept up {:.0} of the {:.0} frames/s)",
                        self.cpu_per_frame_us, self.frames_per_s, self.asked_per_s
                    )
                } else {
                    format!(
                        "{:.2} µs (one write per frame, {:.0} frames/s)",
                        self.cpu_per_frame_us, self.frames_per_s
                    )
                },
            ),
            (
                "host / floor",
                format!(
                    "{:.2}×",
                    host_us / self.cpu_per_frame_us.max(f64::MIN_POSITIVE)
                ),
            ),
        ]
    }
}

/// Bytes of the frame a host writes for a client invocation of `target` with `args`, whose last
/// argument is the sender's clock 5 s into a run: the message and a 2-byte WebSocket header.
pub(crate) fn frame_bytes(protocol: Protocol, target: &str, args: &[&str]) -> usize {
    let args: Vec<&str> = args.iter().copied().chain(["5000000000"]).collect();
    2 + protocol.invocation(None, target, &args).len()
}

/// The floor after a scenario's load, at its pace, unless `--no-floor` leaves it out.
pub(crate) async fn after_load(args: &Args, pace: Pace) -> anyhow::Result<Option<FloorStats>> {
    if args.no_floor {
        return Ok(None);
    }
    measure(pace).await.map(Some)
}

/// Runs the floor at `pace` and returns what it measured, without printing.
pub(crate) async fn measure(pace: Pace) -> anyhow::Result<FloorStats> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let drained = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    let mut writing = Vec::new();
    for _ in 0..pace.sockets {
        let reading = TcpStream::connect(address)?;
        let (written, _) = listener.accept()?;
        written.set_nodelay(true)?;
        writing.push(written);
        reading.set_nonblocking(true)?;
        let mut reading = tokio::net::TcpStream::from_std(reading)?;
        let drained = drained.clone();
        readers.push(tokio::spawn(async move {
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = reading.read(&mut buffer).await {
                drained.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    // One writer per core, each with its share of the sockets and of the pace.
    let writers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(pace.sockets.max(1));
    let mut shares: Vec<Vec<TcpStream>> = (0..writers).map(|_| Vec::new()).collect();
    for (i, socket) in writing.into_iter().enumerate() {
        shares[i % writers].push(socket);
    }
    let frame = Arc::new(frame(pace.frame_bytes));
    let frame_len = frame.len() as u64;
    let started = Instant::now();
    let threads: Vec<_> = shares
        .into_iter()
        .map(|sockets| {
            let rate = pace.frames_per_s * sockets.len() as f64 / pace.sockets.max(1) as f64;
            let frame = frame.clone();
            std::thread::spawn(move || write_at(sockets, &frame, rate, started, pace.duration))
        })
        .collect();
    let (mut frames, mut cpu) = (0u64, 0.0);
    for thread in threads {
        let (n, seconds) = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("a floor writer panicked"))??;
        frames += n;
        cpu += seconds;
    }
    let elapsed = started.elapsed();
    // The writers closed their sockets: the readers end once they have read everything.
    for reader in readers {
        reader.await?;
    }
    let expected = frames * frame_len;
    let got = drained.load(Ordering::Relaxed);
    anyhow::ensure!(
        got == expected,
        "the floor's readers got {got} of {expected} bytes"
    );
    Ok(FloorStats {
        asked_per_s: pace.frames_per_s,
        frames,
        frames_per_s: frames as f64 / elapsed.as_secs_f64(),
        cpu_per_frame_us: cpu / frames.max(1) as f64 * 1e6,
    })
}

/// The standalone scenario: the rooms load's shape (`-c` sockets, each receiving
/// `--client-rate` × `--room-size` frames a second), printed as a table.
pub(crate) async fn floor(pace: Pace) -> anyhow::Result<FloorStats> {
    let stats = measure(pace).await?;
    table(
        &format!(
            "floor: {} loopback sockets, {:.0} frames/s of {} bytes, one write() each",
            pace.sockets, pace.frames_per_s, pace.frame_bytes
        ),
        &[
            (
                "frames written",
                format!(
                    "{} in {:.1} s ({:.0}/s)",
                    stats.frames,
                    pace.duration.as_secs_f64(),
                    stats.frames_per_s
                ),
            ),
            (
                "writer CPU per frame",
                format!("{:.2} µs", stats.cpu_per_frame_us),
            ),
        ],
    );
    Ok(stats)
}

/// A frame of `bytes` bytes (what they say does not matter to the kernel, only how many).
fn frame(bytes: usize) -> Vec<u8> {
    vec![b'x'; bytes.max(1)]
}

/// Writes `frame` round-robin to `sockets` at `rate` frames a second until `duration` has
/// passed since `started`; returns the frames written and this thread's CPU seconds.
fn write_at(
    mut sockets: Vec<TcpStream>,
    frame: &[u8],
    rate: f64,
    started: Instant,
    duration: Duration,
) -> anyhow::Result<(u64, f64)> {
    let cpu_before = thread_cpu_seconds()?;
    let mut written = 0u64;
    let mut next = 0usize;
    while !sockets.is_empty() {
        let elapsed = started.elapsed().min(duration);
        let due = (elapsed.as_secs_f64() * rate) as u64;
        while written < due {
            sockets[next].write_all(frame)?;
            next = (next + 1) % sockets.len();
            written += 1;
        }
        if elapsed >= duration {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu = thread_cpu_seconds()? - cpu_before;
    for socket in &sockets {
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }
    Ok((written, cpu))
}

/// User + system CPU seconds of the calling thread, as `/proc` counts a process's.
fn thread_cpu_seconds() -> anyhow::Result<f64> {
    crate::procs::cpu_seconds("/proc/thread-self/stat")
        .ok_or_else(|| anyhow::anyhow!("cannot read this thread's CPU time"))
}
