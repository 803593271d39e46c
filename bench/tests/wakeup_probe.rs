//! The wake-up probe run for real: the echo server and the pinger as processes over loopback.

use std::path::Path;

use trellis_bench::wakeup::{SAME_CPU, UNPINNED, probe_placement};

#[test]
fn the_wakeup_probe_measures_a_real_echo_server_and_pinger_pinned_or_not() {
    let echo = Path::new(env!("CARGO_BIN_EXE_trellis-bench-echo"));
    let dir = tempfile::tempdir().expect("tempdir");
    // Pinned (through `taskset`, which must exec the echo server for its pid to be read) and not.
    for placement in [SAME_CPU, UNPINNED] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let run = probe_placement(echo, dir.path(), addr, placement, 200).expect("the probe runs");
        assert_eq!(run.ping.messages, 200);
        // Each of the 200 messages woke the echo server, which was charged CPU to answer it.
        assert!(run.echo_us_per_message > 0.0, "{run:?}");
        assert!(run.ping.cpu_us_per_message > 0.0, "{run:?}");
        assert!(run.ping.p50_us > 0.0, "{run:?}");
    }
}
