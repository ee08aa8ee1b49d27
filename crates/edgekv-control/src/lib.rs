//! The control plane of edgekv: which builds exist, how a deployment moves a new
//! build from a few percent of traffic to all of it, and the route tables that
//! result.
//!
//! This crate is the control plane's logic and its persistent state; it does no
//! network IO (the gRPC service and the edges' streams build on it). It never
//! depends on the KV data plane: control keeps working while the data plane is
//! down, which is exactly when it is needed.
//!
//! # Layout
//! - [`model`]: builds, deployments, steps and phases.
//! - [`precheck`]: why a deployment is refused before it starts.
//! - [`rollout`]: how a deployment advances, and the route table it implies.
//! - [`health`]: the analysis of the edges' health reports: healthy,
//!   inconclusive (promotion waits) or a breach (roll back now).
//! - [`state`]: the control plane's state, persisted atomically to one file.
//! - [`probe`]: `Health` probes of builds, made with an environment's credential.
//! - [`controller`]: [`Controller`], the operations on that state, each persisted
//!   before it is answered.
//! - [`service`]: the `Control` gRPC service over it.
//! - [`server`]: the listener and the driver that advances deployments.

pub mod controller;
pub mod dashboard;
pub mod health;
pub mod http;
pub mod metrics;
pub mod model;
pub mod precheck;
pub mod probe;
pub mod rollout;
pub mod server;
pub mod service;
pub mod state;
pub mod view;

pub use controller::{ControlError, Controller};
pub use server::{ControlConfig, RunningControl};
