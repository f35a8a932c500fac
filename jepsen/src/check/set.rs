//! (3) The tombstone set, a grow-only set: after every fault healed, the
//! final list holds every acknowledged put (none lost) and nothing that was
//! never put (no phantom). Puts with an unknown outcome may be either way.
//!
//! History: `put` (key = the tombstone key, value `{"group": g}`), and a
//! final ok `list` (key = group, value `{"keys": [...]}`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{Outcome, Verdict};
use crate::history::{pairs, Kind, Op};

pub fn check(ops: &[Op]) -> Outcome {
    let finals: BTreeMap<&str, BTreeSet<&str>> = ops
        .iter()
        .filter(|o| o.f == "list" && o.process == "final" && o.kind == Kind::Ok)
        .filter_map(|o| {
            let keys = o.value["keys"]
                .as_array()?
                .iter()
                .filter_map(|k| k.as_str())
                .collect();
            Some((o.key.as_deref()?, keys))
        })
        .collect();
    if finals.is_empty() {
        return super::truth::unknown("tombstone-set");
    }
    let mut acknowledged: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut attempted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in pairs(ops, |o| o.f == "put") {
        let (Some(group), Some(key)) = (p.invoke.value["group"].as_str(), p.invoke.key.as_deref())
        else {
            continue;
        };
        if p.kind() == Kind::Fail {
            continue;
        }
        attempted.entry(group).or_default().insert(key);
        if p.kind() == Kind::Ok {
            acknowledged.entry(group).or_default().insert(key);
        }
    }
    let mut problems = Vec::new();
    let mut lost = 0;
    let mut phantom = 0;
    for (group, keys) in &acknowledged {
        let Some(present) = finals.get(group) else {
            problems.push(format!("no final list of group {group}"));
            continue;
        };
        for k in keys.difference(present) {
            lost += 1;
            problems.push(format!(
                "lost: acknowledged tombstone {k} of {group} is not in the final list"
            ));
        }
    }
    for (group, present) in &finals {
        let tried = attempted.get(group).cloned().unwrap_or_default();
        for k in present.difference(&tried) {
            phantom += 1;
            problems.push(format!(
                "phantom: {k} is in {group}'s final list but was never put"
            ));
        }
    }
    let mut outcome = Outcome::new(
        "tombstone-set",
        problems,
        json!({
            "acknowledged": acknowledged.values().map(BTreeSet::len).sum::<usize>(),
            "attempted": attempted.values().map(BTreeSet::len).sum::<usize>(),
            "lost": lost,
            "phantom": phantom,
        }),
    );
    if acknowledged.is_empty() && outcome.verdict == Verdict::Valid {
        outcome.verdict = Verdict::Unknown;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(process: &str, key: &str, kind: Kind, time: u64) -> Op {
        Op::new(process, kind, "put")
            .key(key)
            .value(json!({"group": "g"}))
            .at(time)
    }

    fn final_list(keys: &[&str]) -> Op {
        Op::new("final", Kind::Ok, "list")
            .key("g")
            .value(json!({"keys": keys}))
    }

    #[test]
    fn a_lost_write_and_a_phantom_are_invalid() {
        let base = vec![
            put("t1", "a", Kind::Invoke, 0),
            put("t1", "a", Kind::Ok, 1),
            put("t2", "b", Kind::Invoke, 2),
            put("t2", "b", Kind::Info, 3),
        ];
        let mut good = base.clone();
        good.push(final_list(&["a"]));
        assert_eq!(
            check(&good).verdict,
            Verdict::Valid,
            "b's outcome is unknown"
        );
        let mut good = base.clone();
        good.push(final_list(&["a", "b"]));
        assert_eq!(check(&good).verdict, Verdict::Valid);
        let mut lost = base.clone();
        lost.push(final_list(&["b"]));
        assert_eq!(check(&lost).verdict, Verdict::Invalid);
        let mut phantom = base;
        phantom.push(final_list(&["a", "zzz"]));
        assert_eq!(check(&phantom).verdict, Verdict::Invalid);
    }
}
