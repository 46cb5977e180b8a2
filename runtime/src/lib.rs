//! The CRI-shaped container runtime for Skiff nodes.
//!
//! The `ContainerRuntime` trait, the wasmtime backend and the fake backend arrive with the
//! runtime issue; this crate holds the place the workspace layout reserves for them.
