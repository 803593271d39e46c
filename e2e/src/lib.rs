//! End-to-end tests of Trellis as users run it: the local-mode suite that CI runs (real processes,
//! sockets and TLS on one machine) and the kind/minikube suite behind `make e2e-kind`. The suites
//! arrive with the control plane and demo; this crate holds no code yet.
