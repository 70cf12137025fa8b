//! Compatibility values for older run logs, in one place: a field that a log's header lacks
//! (it was written before the field existed) takes the value that run ran with, which is not
//! always today's default. `Default` is what the command line runs; this is what old logs ran.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serializer};

use super::{DemoExcerpt, EngineSetup, ProposerKind, Racing, Schedule, SearchOptions};

/// The search options of a log that lacks some: proposer `demos`, demos showing the document's
/// head, no racing (what runs did before these had other values).
pub fn search_options() -> SearchOptions {
    SearchOptions {
        proposer: Schedule(vec![ProposerKind::Demos]),
        demo_excerpt: DemoExcerpt::Head,
        racing: Racing::Off,
        ..SearchOptions::default()
    }
}

/// The engine set-up of a log that lacks some: no prefix cache, no fast-forward, no drafts
/// (a resumed run keeps its engine key).
pub fn engine_setup() -> EngineSetup {
    EngineSetup { prefix_cache: None, fast_forward: false, speculative: false, ..EngineSetup::default() }
}

/// Serde as the value's text (`Display` / `FromStr`), as logs of format 2 stored it.
pub(super) mod as_text {
    use super::{fmt, Deserialize, Deserializer, FromStr, Serializer};

    pub fn serialize<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
