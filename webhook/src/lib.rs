//! Sidecar injection: a pure `inject` function that adds the `trellis-proxy` sidecar and the
//! `trellis-init` iptables container to a pod of a labelled namespace, and the admission webhook
//! handler that applies it as a JSON patch. Built by issue "[M1 6/6] Sidecar injection"; no code yet.
