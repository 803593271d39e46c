//! The control-plane bench (`make bench-controlplane`): the real `trellisd` serving a generated folder
//! of YAML to a thousand simulated proxies over the real push API, measuring how long a change takes to
//! reach every affected proxy, how many bytes it costs each, and trellisd's memory and CPU.
//!
//! [`mesh`] generates the folder and says which proxies a change should reach, [`client`] is the
//! simulated proxy, [`report`] turns the measurements into `bench/results/controlplane.md`. The driver
//! is `src/bin/bench-controlplane.rs`.

pub mod client;
pub mod mesh;
pub mod report;
