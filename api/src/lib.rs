//! Skiff's API types and pure helpers: Kubernetes kinds (re-exported from `k8s-openapi`), label
//! and field selectors, quantities and validation helpers. No I/O lives here.

pub mod age;
pub mod cron;
pub mod fields;
pub mod labels;
pub mod module;
pub mod policy;
pub mod quantity;
pub mod signature;
pub mod validation;

pub use k8s_openapi;
