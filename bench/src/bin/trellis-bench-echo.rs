//! `trellis-bench-echo`: the wake-up probe of `make bench-proxy`. Two plain processes ping-pong a
//! message over loopback TCP at a fixed rate with blocking sockets and no runtime, so that what they
//! use per message is the machine's own cost of waking a process and moving a message (see
//! `trellis_bench::wakeup`): `serve` echoes every byte back, `ping` sends a message at each tick,
//! waits for its echo and prints one JSON line with the round-trip percentiles and its own CPU time.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use trellis_bench::procstat;
use trellis_bench::wakeup::PingOutcome;

/// What the echo server reads at most at once.
const ECHO_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Parser)]
#[command(name = "trellis-bench-echo", version, about)]
struct Args {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Echo every connection's bytes back, one connection at a time, on the main thread.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send `--count` messages of `--size` bytes at `--rate` per second, each after the previous
    /// one's echo came back.
    Ping {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        rate: u32,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        size: usize,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Mode::Serve { listen } => serve(listen),
        Mode::Ping { to, rate, count, size } => {
            let outcome = ping(to, rate, count, size)?;
            println!("{}", serde_json::to_string(&outcome).context("writing the outcome")?);
            Ok(())
        }
    }
}

fn serve(addr: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let mut buf = vec![0u8; ECHO_BUFFER_BYTES];
    for stream in listener.incoming() {
        let mut stream = stream.with_context(|| format!("accepting on {addr}"))?;
        stream.set_nodelay(true).with_context(|| format!("setting TCP_NODELAY on a connection to {addr}"))?;
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

fn ping(to: SocketAddr, rate: u32, count: usize, size: usize) -> Result<PingOutcome> {
    anyhow::ensure!(rate > 0 && count > 0 && size > 0, "--rate, --count and --size must be above 0");
    let mut stream = TcpStream::connect(to).with_context(|| format!("connecting to {to}"))?;
    stream.set_nodelay(true).with_context(|| format!("setting TCP_NODELAY on the connection to {to}"))?;
    let message = vec![b'x'; size];
    let mut echo = vec![0u8; size];
    let gap = Duration::from_secs(1) / rate;
    let mut round_trips = Vec::with_capacity(count);
    let cpu_before = procstat::task_cpu_ns("thread-self")?;
    let mut next = Instant::now() + gap;
    for _ in 0..count {
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        next += gap;
        let sent = Instant::now();
        stream.write_all(&message).with_context(|| format!("sending to {to}"))?;
        stream.read_exact(&mut echo).with_context(|| format!("reading the echo from {to}"))?;
        round_trips.push(sent.elapsed());
    }
    let cpu_ns = procstat::task_cpu_ns("thread-self")? - cpu_before;
    Ok(PingOutcome::from_round_trips(&mut round_trips, cpu_ns))
}
