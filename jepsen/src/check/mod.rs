//! Checkers: each reads the history (nothing else, so `recheck` works
//! offline) and gives a verdict.

pub mod holds;
pub mod linear;
pub mod ownership;
pub mod progress;
pub mod revisions;
pub mod set;
mod stale;
pub mod truth;
pub mod watch;

use serde::Serialize;
use serde_json::Value;

use crate::history::Op;

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Valid,
    Invalid,
    /// Could not decide (a time budget ran out, or the history lacks what
    /// the checker needs).
    Unknown,
}

#[derive(Serialize, Clone, Debug)]
pub struct Outcome {
    pub checker: &'static str,
    pub verdict: Verdict,
    /// What was checked and, when invalid, the first problems found.
    pub details: Value,
}

impl Outcome {
    pub fn new(checker: &'static str, problems: Vec<String>, details: Value) -> Self {
        let verdict = if problems.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid
        };
        let mut details = details;
        if let Value::Object(map) = &mut details {
            map.insert(
                "problems".into(),
                Value::from(problems.into_iter().take(20).collect::<Vec<_>>()),
            );
        }
        Self {
            checker,
            verdict,
            details,
        }
    }
}

/// Runs every checker.
pub fn all(ops: &[Op], budget: std::time::Duration) -> Vec<Outcome> {
    let truth = truth::GroundTruth::from_history(ops);
    vec![
        linear::check(ops, budget),
        revisions::check(ops, truth.as_ref()),
        set::check(ops),
        watch::check(ops, truth.as_ref()),
        ownership::check(ops, truth.as_ref()),
        truth::durability(ops, truth.as_ref()),
        progress::check(ops, truth.as_ref()),
    ]
}

/// The overall verdict: invalid if any is, else unknown if any is.
pub fn overall(outcomes: &[Outcome]) -> Verdict {
    if outcomes.iter().any(|o| o.verdict == Verdict::Invalid) {
        Verdict::Invalid
    } else if outcomes.iter().any(|o| o.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Valid
    }
}
