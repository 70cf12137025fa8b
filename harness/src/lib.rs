//! promptloop's library: everything the `promptloop` binary does besides parsing arguments
//! and drawing progress. Data flows one way: task -> (router) -> engine -> scorer -> proposer ->
//! gate -> run log -> report.
//!
//! The modules, from the floor up (a module imports only modules on its floor or below):
//!
//! | floor | modules |
//! |---|---|
//! | 0 | [`stats`] (mean, medians), [`models`] (known model names, the cache dir), [`task`] (a task directory, checked) |
//! | 1 | [`fingerprint`] (SHA-256 of model and task files), [`score`] (per-field scoring, feedback), [`bounds`] (schema bounds from train) |
//! | 2 | [`overflow`] (documents longer than the context), [`eval`] (one eval pass), [`summary`] (an eval pass in numbers), [`llm`] (the optimizer model's clients), [`init`] (a task from a JSONL/CSV file), [`peer`] (`compare`'s llama-server client, the seed's workflow) |
//! | 3 | [`calibrate`] (probes, fits, the routing table), [`router`] (`--engine`: which engine, what context, per-example routing) |
//! | 4 | [`config`] (a run's configuration, its defaults and the values older logs ran with) |
//! | 5 | [`engine_setup`] (an engine set-up prepared for a task and loaded) |
//! | 6 | [`optimize`] (the loop, its proposers, gate, run log) |
//! | 7 | [`session`] (an optimize run started, resumed, run), [`report`] (HTML/Markdown of a run or a routing table), [`bench`] (benchmarks and baselines) |

pub mod bench;
pub mod bounds;
pub mod calibrate;
pub mod config;
pub mod engine_setup;
pub mod eval;
pub mod fingerprint;
pub mod init;
pub mod llm;
pub mod models;
pub mod optimize;
pub mod overflow;
pub mod peer;
pub mod report;
pub mod router;
pub mod score;
pub mod session;
pub mod stats;
pub mod summary;
pub mod task;
