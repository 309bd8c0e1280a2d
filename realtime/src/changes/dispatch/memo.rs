//! Decisions remembered per claim group: rows tend to repeat the values a table's rules read (a
//! few owners, teams, statuses), and equal values give equal decisions for the same claims
//! ([`DecisionKey`]), so a group decides each combination once instead of once per change.
//!
//! Bounded: past [`CAPACITY`] entries the memo starts over, and a group whose changes rarely
//! repeat (fewer than one lookup in four hits over a window) stops remembering, so that
//! distinct rows cost no more than the decision itself.

use std::collections::HashMap;

use crate::policy::Visibility;
use crate::policy::table::DecisionKey;

/// Most decisions one claim group keeps.
const CAPACITY: usize = 4096;
/// Lookups per window over which the hit rate is judged.
const WINDOW: u32 = 1024;

#[derive(Debug)]
pub struct Memo {
    decided: HashMap<DecisionKey, Visibility>,
    lookups: u32,
    hits: u32,
    enabled: bool,
}

impl Default for Memo {
    fn default() -> Memo {
        Memo {
            decided: HashMap::new(),
            lookups: 0,
            hits: 0,
            enabled: true,
        }
    }
}

impl Memo {
    /// The remembered decision for `key`, or `decide()`'s (remembered for next time).
    pub fn decide(&mut self, key: &DecisionKey, decide: impl FnOnce() -> Visibility) -> Visibility {
        if !self.enabled {
            return decide();
        }
        self.lookups += 1;
        let visibility = match self.decided.get(key) {
            Some(v) => {
                self.hits += 1;
                v.clone()
            }
            None => {
                let v = decide();
                if self.decided.len() >= CAPACITY {
                    self.decided.clear();
                }
                self.decided.insert(key.clone(), v.clone());
                v
            }
        };
        if self.lookups >= WINDOW {
            if self.hits * 4 < self.lookups {
                self.enabled = false;
                self.decided = HashMap::new();
            }
            (self.lookups, self.hits) = (0, 0);
        }
        visibility
    }

    #[cfg(test)]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}
