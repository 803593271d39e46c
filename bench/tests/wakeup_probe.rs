//! The wake-up probe run for real: the echo server and the pinger as processes over loopback.

use std::path::Path;

use trellis_bench::wakeup::{PLACEMENTS, probe_placement};

#[test]
fn the_wakeup_probe_measures_a_real_echo_server_and_pinger() {
    let echo = Path::new(env!("CARGO_BIN_EXE_trellis-bench-echo"));
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let unpinned = PLACEMENTS.iter().find(|p| p.echo_cpu.is_none()).expect("an unpinned placement");
    let run = probe_placement(echo, dir.path(), addr, *unpinned, 200).expect("the probe runs");
    assert_eq!(run.ping.messages, 200);
    // 200 messages at 1,000 per second: each one woke the echo server, which used CPU to answer.
    assert!(run.echo_us_per_message > 0.0, "{run:?}");
    assert!(run.ping.cpu_us_per_message > 0.0, "{run:?}");
    assert!(run.ping.p50_us > 0.0 && run.ping.p50_us <= run.ping.p99_us && run.ping.p99_us <= run.ping.p999_us);
}
