//! Integration tests of the `promptloop` binary against the real SmolLM2-135M. One test binary
//! (modules below) keeps link time down. The model comes from `scripts/setup.sh`; a missing
//! model fails with the command that fetches it, it never skips.

mod bench;
mod calibrate;
mod cli;
mod fleet;
mod framing;
mod init;
mod optimize;
mod optimize_llm;
mod optimizer_http;
mod report;
mod support;
mod support_proxy;
