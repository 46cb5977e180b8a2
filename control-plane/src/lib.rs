//! Skiff's control plane: the store, the API layer every write goes through, the HTTPS
//! API server that kubectl and agents talk to, the scheduler and the controllers.

pub mod api;
pub mod apiserver;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod controllers;
pub mod events;
pub mod health;
pub mod scheduler;
pub mod store;
