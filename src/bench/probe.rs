//! A latency probe for loaded servers: one keep-alive connection sending a
//! request every millisecond from a thread at real-time priority
//! (`SCHED_FIFO`) on the load generator's core.
//!
//! Why: wrk measures the latency of its own requests, and once its core is
//! nearly saturated (95 % and more against a fast server on loopback) a
//! response waits in wrk's event loop before wrk reads it, so its p99 is
//! mostly wrk's queue and swings from run to run. A real-time thread runs
//! as soon as its socket is readable, ahead of wrk, so what it measures is
//! the server: how long a request waits behind the load the server is
//! under, plus the transfer. Its requests are a small fraction of the load
//! (1,000/s against tens of thousands).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Time between the probe's requests.
const INTERVAL: Duration = Duration::from_millis(1);
/// The real-time priority: the lowest, above every normal thread.
const PRIORITY: i32 = 1;

/// What the probe measured.
#[derive(Debug, Clone)]
pub(crate) struct ProbeFigures {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

/// A probe running until [`Probe::finish`].
pub(crate) struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<ProbeFigures>>,
}

impl Probe {
    /// Starts probing `path` (with `Host: host`) at `addr`, from `core`.
    /// Fails at once when the thread cannot have real-time priority
    /// (it needs root or `CAP_SYS_NICE`): without it the probe would
    /// queue behind the load generator like wrk.
    pub(crate) fn start(addr: SocketAddr, path: &str, core: usize) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: cascade-probe\r\n\r\n");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("latency-probe".to_owned())
                .spawn(move || {
                    let setup = pin_realtime(core);
                    let failed = setup.as_ref().err().map(|e| format!("{e:#}"));
                    let _ = ready_tx.send(failed);
                    setup?;
                    run(addr, request.as_bytes(), &stop)
                })
                .context("starting the latency probe")?
        };
        match ready_rx.recv() {
            Ok(None) => Ok(Self { stop, thread }),
            Ok(Some(error)) => {
                let _ = thread.join();
                bail!("{error}")
            }
            Err(_) => bail!("the latency probe exited before it started"),
        }
    }

    /// Stops the probe and returns its figures.
    pub(crate) fn finish(self) -> anyhow::Result<ProbeFigures> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => bail!("the latency probe panicked"),
        }
    }
}

/// Pins the calling thread to `core` and gives it `SCHED_FIFO`.
fn pin_realtime(core: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // inside it for any core below CPU_SETSIZE, which is checked.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core >= libc::CPU_SETSIZE as usize {
            bail!("core {core} is out of range");
        }
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "pinning the latency probe to core {core}: {}",
                std::io::Error::last_os_error()
            );
        }
        let param = libc::sched_param {
            sched_priority: PRIORITY,
        };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            bail!(
                "the latency probe needs real-time priority (SCHED_FIFO: root or CAP_SYS_NICE): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

fn run(addr: SocketAddr, request: &[u8], stop: &AtomicBool) -> anyhow::Result<ProbeFigures> {
    let mut stream = TcpStream::connect(addr).context("the probe's connection")?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut latencies = Vec::with_capacity(16_384);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += INTERVAL;
        let started = Instant::now();
        stream
            .write_all(request)
            .context("sending a probe request")?;
        read_response(&mut stream, &mut buffer)?;
        latencies.push(started.elapsed());
        // Behind schedule (a slow response): start again from now rather
        // than firing a burst to catch up.
        next = next.max(Instant::now());
    }
    if latencies.is_empty() {
        bail!("the latency probe sent no request");
    }
    latencies.sort_unstable();
    let at = |share: f64| latencies[((latencies.len() - 1) as f64 * share).round() as usize];
    Ok(ProbeFigures {
        p50: at(0.5),
        p99: at(0.99),
    })
}

/// Reads one response with a `Content-Length` body; fails on any status
/// other than 200.
fn read_response(stream: &mut impl Read, buffer: &mut [u8]) -> anyhow::Result<()> {
    let mut filled = 0;
    let head_end = loop {
        if filled == buffer.len() {
            bail!("a response head larger than {} bytes", buffer.len());
        }
        let read = stream.read(&mut buffer[filled..])?;
        if read == 0 {
            bail!("the server closed the probe's connection");
        }
        filled += read;
        if let Some(at) = find(&buffer[..filled], b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = std::str::from_utf8(&buffer[..head_end]).context("a response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("the probe got {}", head.lines().next().unwrap_or_default());
    }
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("a response without Content-Length")?;
    let mut left = (head_end + length).saturating_sub(filled);
    if filled > head_end + length {
        bail!("the server sent more than one response");
    }
    while left > 0 {
        let want = left.min(buffer.len());
        let read = stream.read(&mut buffer[..want])?;
        if read == 0 {
            bail!("the server closed the probe's connection mid-body");
        }
        left -= read;
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes a few at a time, as a socket does when a
    /// response arrives in pieces.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn reads_a_response_head_and_its_body_split_across_reads() {
        let mut buffer = vec![0u8; 64];
        let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789";
        for step in [1, 7, 64] {
            let mut stream = Trickle { bytes: whole, step };
            read_response(&mut stream, &mut buffer).unwrap();
            assert!(stream.bytes.is_empty(), "step {step}: body not read whole");
        }
        let mut refused = Trickle {
            bytes: b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            step: 5,
        };
        let error = read_response(&mut refused, &mut buffer).unwrap_err();
        assert!(error.to_string().contains("404"), "{error}");
        let mut cut = Trickle {
            bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234",
            step: 7,
        };
        let error = read_response(&mut cut, &mut buffer).unwrap_err();
        assert!(error.to_string().contains("mid-body"), "{error}");
    }
}
