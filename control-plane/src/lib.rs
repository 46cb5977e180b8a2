//! Skiff's control plane: the store, the API layer every write goes through, and the HTTPS
//! API server that kubectl and agents talk to.

pub mod api;
pub mod apiserver;
pub mod scheduler;
pub mod store;
