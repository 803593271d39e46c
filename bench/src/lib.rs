//! Benchmarks of the Trellis data plane.
//!
//! `make bench-proxy` runs the `trellis-bench` binary, which puts the same load (fixed request
//! rates, coordinated-omission corrected, from `oha`) through five setups side by side in one run:
//! straight to a small app, through a pair of `trellis-proxy` processes and through a pair of HAProxy
//! processes, each pair once in plain text and once with mutual TLS between its two proxies. It
//! reads each proxy's CPU time and memory from `/proc` around every run and writes a markdown report
//! and an SVG latency plot. Everything listens on loopback addresses only.
//!
//! The modules are split by concern: [`procstat`] reads `/proc`, [`oha`] runs the load generator and
//! reads its JSON, [`pki`] makes the TLS pairs' certificates, [`setups`] starts and stops the
//! processes of each setup, [`wakeup`] measures what the machine charges a process for a wake-up (read
//! next to the CPU and latency targets), [`report`] and [`chart`] turn the measurements into `proxy.md` and
//! `proxy.svg`.

pub mod chart;
pub mod controlplane;
pub mod machine;
pub mod oha;
pub mod pki;
pub mod procstat;
pub mod report;
pub mod setups;
pub mod wakeup;
