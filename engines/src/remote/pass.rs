//! One pass over the fleet: every request answered exactly once. A dispatcher loop on the
//! engine's own tokio runtime owns the [`Fleet`] bookkeeping; each request runs as a task on one
//! endpoint (`/apply-template`, `/tokenize`, `/completion`). A task that fails for the
//! endpoint's sake (transport error, 5xx, garbage) puts its request back in the queue, to run
//! elsewhere or after the endpoint's backoff; one the server turns down for its own sake (4xx,
//! too long) is answered with that error. When every endpoint is out, the requests left are
//! answered with an error naming them all.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Client;
use tokio::task::JoinSet;

use super::fleet::{slot_for, Fleet, Pick};
use super::transport::{Failure, Target};
use super::{native, openai};
use crate::{EngineError, Request, Response, ServerApi};

/// Runs `requests` over the fleet; results in request order.
pub async fn run(
    client: &Client,
    fleet: &Mutex<Fleet>,
    targets: &[Target],
    requests: &[Request],
    keys: &[Option<u64>],
    batch_id: u64,
) -> Vec<Result<Response, EngineError>> {
    let n = requests.len();
    let mut answers: Vec<Option<Result<Response, EngineError>>> = (0..n).map(|_| None).collect();
    // Longest first (by prompt characters): the long ones start early and the short ones fill
    // in, so the endpoints finish the pass together.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(requests[i].messages.iter().map(|m| m.content.len()).sum::<usize>()));
    let mut queue: VecDeque<usize> = order.into();
    let mut attempts = vec![0usize; n];
    // Each endpoint can fail a request at most MAX_FAILURES times before it is out.
    let max_attempts = super::fleet::MAX_FAILURES as usize * targets.len() + 1;
    let mut tasks = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, (usize, usize)> = HashMap::new();
    loop {
        let mut waiting = VecDeque::new();
        let mut all_down = false;
        while let Some(i) = queue.pop_front() {
            let pick = lock(fleet).pick(keys[i], Instant::now());
            match pick {
                Pick::Endpoint(e) => {
                    let target = targets[e].clone();
                    let slot = keys[i].map(|k| slot_for(k, target.slots));
                    let (client, req) = (client.clone(), requests[i].clone());
                    let handle = tasks.spawn(async move { call(&client, &target, &req, slot, batch_id).await });
                    running.insert(handle.id(), (e, i));
                }
                Pick::Wait => waiting.push_back(i),
                Pick::AllDown => {
                    all_down = true;
                    waiting.push_back(i);
                }
            }
        }
        queue = waiting;
        if tasks.is_empty() {
            if queue.is_empty() {
                break;
            }
            if all_down {
                let report = lock(fleet).down_report();
                for i in queue.drain(..) {
                    answers[i] = Some(Err(EngineError::NoServer(report.clone())));
                }
                break;
            }
        }
        let ready = lock(fleet).next_ready(Instant::now());
        let joined = if tasks.is_empty() {
            // Waiting on a backoff, or on windows another pass holds.
            let until = ready.unwrap_or_else(|| Instant::now() + Duration::from_millis(20));
            tokio::time::sleep_until(until.into()).await;
            None
        } else if let Some(at) = ready.filter(|_| !queue.is_empty()) {
            tokio::select! {
                j = tasks.join_next_with_id() => j,
                () = tokio::time::sleep_until(at.into()) => None,
            }
        } else {
            tasks.join_next_with_id().await
        };
        let Some(joined) = joined else { continue };
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => (e.id(), Err(Failure::Endpoint(format!("request task failed: {e}")))),
        };
        let Some((e, i)) = running.remove(&id) else { continue };
        match outcome {
            Ok(resp) => {
                lock(fleet).succeeded(e);
                answers[i] = Some(Ok(resp));
            }
            Err(Failure::Request(err)) => {
                lock(fleet).released(e);
                answers[i] = Some(Err(err));
            }
            Err(Failure::Endpoint(reason)) => {
                let url = &targets[e].url;
                let out = lock(fleet).failed(e, &reason, Instant::now());
                attempts[i] += 1;
                if out {
                    tracing::warn!(endpoint = %url, %reason, "llama-server taken out of the fleet; its requests run elsewhere");
                } else {
                    tracing::warn!(endpoint = %url, %reason, "llama-server failed a request; backing off");
                }
                if attempts[i] >= max_attempts {
                    answers[i] = Some(Err(EngineError::Server { url: url.clone(), reason }));
                } else {
                    queue.push_front(i);
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(EngineError::Decode("the fleet left a request unanswered".into()))))
        .collect()
}

/// Locks the fleet; a poisoned lock (a panic elsewhere while holding it) still holds valid
/// bookkeeping, so it is used as is.
pub fn lock(fleet: &Mutex<Fleet>) -> std::sync::MutexGuard<'_, Fleet> {
    fleet.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One request on one endpoint, in the endpoint's dialect.
async fn call(client: &Client, t: &Target, req: &Request, slot: Option<usize>, batch_id: u64) -> Result<Response, Failure> {
    match t.api {
        ServerApi::Native => native::call(client, t, req, slot, batch_id).await,
        ServerApi::OpenAi => openai::call(client, t, req, batch_id).await,
    }
}
