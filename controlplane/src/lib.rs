//! `trellisd`, the Trellis control plane (like istiod): sources (Kubernetes watches or a folder of YAML)
//! feed one index; a pure translate function turns (index, proxy identity) into a `ProxyConfig`
//! (`trellis_api::proxy_config`); push streams each proxy its slice, versioned and acknowledged; the mesh
//! CA issues workload certificates. Built by issue "[M1 3/6] Control plane"; this crate holds no code yet.
