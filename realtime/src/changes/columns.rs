//! [`ColumnSet`]: a set of column positions of one table, as a bitmask. Owned by whoever builds
//! it (column privileges, policy column lists, a binding's `select` plus key columns); read by
//! the payload encoder to decide which columns a subscriber group sees.

use crate::change::Table;

/// A set of column indexes (positions in `Table::columns`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ColumnSet {
    words: Box<[u64]>,
}

impl ColumnSet {
    /// No columns.
    pub fn empty() -> ColumnSet {
        ColumnSet::default()
    }

    /// Columns `0..n`.
    pub fn all(n: usize) -> ColumnSet {
        let mut set = ColumnSet {
            words: vec![0; n.div_ceil(64)].into_boxed_slice(),
        };
        for i in 0..n {
            set.insert(i);
        }
        set
    }

    /// Every column of `table`.
    pub fn all_of(table: &Table) -> ColumnSet {
        ColumnSet::all(table.columns.len())
    }

    /// The key (replica identity) columns of `table`.
    pub fn keys_of(table: &Table) -> ColumnSet {
        table
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn insert(&mut self, i: usize) {
        let word = i / 64;
        if word >= self.words.len() {
            let mut words = self.words.to_vec();
            words.resize(word + 1, 0);
            self.words = words.into_boxed_slice();
        }
        self.words[word] |= 1 << (i % 64);
    }

    pub fn contains(&self, i: usize) -> bool {
        self.words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Columns in both sets.
    pub fn intersection(&self, other: &ColumnSet) -> ColumnSet {
        ColumnSet {
            words: self
                .words
                .iter()
                .zip(other.words.iter())
                .map(|(a, b)| a & b)
                .collect(),
        }
    }

    /// Columns in either set.
    pub fn union(&self, other: &ColumnSet) -> ColumnSet {
        let n = self.words.len().max(other.words.len());
        ColumnSet {
            words: (0..n)
                .map(|i| self.words.get(i).unwrap_or(&0) | other.words.get(i).unwrap_or(&0))
                .collect(),
        }
    }

    /// Whether every column `0..n` is in the set (so a full row image can be reused as is).
    pub fn covers(&self, n: usize) -> bool {
        (0..n).all(|i| self.contains(i))
    }

    /// The members, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        })
    }
}

impl FromIterator<usize> for ColumnSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> ColumnSet {
        let mut set = ColumnSet::empty();
        for i in iter {
            set.insert(i);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_hold_positions_beyond_one_word() {
        let set: ColumnSet = [0, 3, 64, 130].into_iter().collect();
        assert!(set.contains(0) && set.contains(64) && set.contains(130));
        assert!(!set.contains(1) && !set.contains(63) && !set.contains(500));
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 3, 64, 130]);
        assert_eq!(set.len(), 4);
        let other: ColumnSet = [3, 130, 131].into_iter().collect();
        assert_eq!(set.intersection(&other).iter().collect::<Vec<_>>(), [3, 130]);
        assert_eq!(set.union(&other).len(), 5);
        assert!(ColumnSet::all(70).covers(70));
        assert!(!set.covers(2));
        assert!(ColumnSet::empty().is_empty());
    }
}
