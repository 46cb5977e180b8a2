//! The Skiff node agent (the kubelet of Skiff).
//!
//! Node registration, pod sync and the service gateway arrive with the agent issue; this crate
//! holds the place the workspace layout reserves for them.
