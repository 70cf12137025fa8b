//! promptloop's library: tasks and their validation, scorers, schema bounds, the eval runner,
//! and summaries.
//!
//! Data flows one way: task -> (router) -> engine -> scorer -> proposer -> run log -> report.
//! `report` renders a run log (or a routing table) as one self-contained HTML file.

pub mod bench;
pub mod bounds;
pub mod calibrate;
pub mod config;
pub mod eval;
pub mod fingerprint;
pub mod init;
pub mod llm;
pub mod models;
pub mod optimize;
pub mod overflow;
pub mod report;
pub mod rng;
pub mod router;
pub mod score;
pub mod session;
pub mod summary;
pub mod task;
