//! A set of a table's columns, by index in the table's column order: which columns a subscriber
//! may see. Small and cheap to compare and hash, so that subscribers can be grouped by it; tables
//! of up to 128 columns need no allocation (the delivery path makes several sets per change and
//! claims group).

/// Columns of one table (indexes into `Table::columns`). Every set made for one table has that
/// table's width, so sets of the same table compare equal exactly when they hold the same
/// columns.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ColumnSet {
    width: usize,
    words: Words,
}

/// One bit per column. Words past `width.div_ceil(64)` stay zero.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Words {
    Inline([u64; INLINE_WORDS]),
    Heap(Box<[u64]>),
}

const INLINE_WORDS: usize = 2;

impl ColumnSet {
    /// No column of a table with `width` columns.
    pub fn none(width: usize) -> ColumnSet {
        let n = width.div_ceil(64);
        let words = if n <= INLINE_WORDS {
            Words::Inline([0; INLINE_WORDS])
        } else {
            Words::Heap(vec![0; n].into_boxed_slice())
        };
        ColumnSet { width, words }
    }

    fn bits(&self) -> &[u64] {
        match &self.words {
            Words::Inline(w) => &w[..self.width.div_ceil(64)],
            Words::Heap(w) => w,
        }
    }

    fn bits_mut(&mut self) -> &mut [u64] {
        let n = self.width.div_ceil(64);
        match &mut self.words {
            Words::Inline(w) => &mut w[..n],
            Words::Heap(w) => w,
        }
    }

    /// Every column of a table with `width` columns.
    pub fn all(width: usize) -> ColumnSet {
        let mut set = ColumnSet::none(width);
        for i in 0..width {
            set.insert(i);
        }
        set
    }

    /// The given columns; indexes at or past `width` are ignored.
    pub fn from_indexes(width: usize, indexes: impl IntoIterator<Item = usize>) -> ColumnSet {
        let mut set = ColumnSet::none(width);
        for i in indexes {
            set.insert(i);
        }
        set
    }

    /// How many columns the table has (not how many are in the set: see [`ColumnSet::len`]).
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn contains(&self, index: usize) -> bool {
        index < self.width && self.bits()[index / 64] & (1 << (index % 64)) != 0
    }

    /// Adds a column; an index at or past the width is ignored.
    pub fn insert(&mut self, index: usize) {
        if index < self.width {
            self.bits_mut()[index / 64] |= 1 << (index % 64);
        }
    }

    /// Columns in either set (the width of `self`).
    pub fn union(&self, other: &ColumnSet) -> ColumnSet {
        let mut out = self.clone();
        for (a, b) in out.bits_mut().iter_mut().zip(other.bits()) {
            *a |= b;
        }
        out
    }

    /// Columns in both sets (the width of `self`).
    pub fn intersection(&self, other: &ColumnSet) -> ColumnSet {
        let mut out = self.clone();
        let theirs = other.bits();
        for (i, a) in out.bits_mut().iter_mut().enumerate() {
            *a &= theirs.get(i).copied().unwrap_or(0);
        }
        out
    }

    /// Whether every column of `self` is in `other`.
    pub fn is_subset(&self, other: &ColumnSet) -> bool {
        let theirs = other.bits();
        self.bits()
            .iter()
            .enumerate()
            .all(|(i, a)| a & !theirs.get(i).copied().unwrap_or(0) == 0)
    }

    pub fn is_empty(&self) -> bool {
        self.bits().iter().all(|b| *b == 0)
    }

    /// How many columns the set holds.
    pub fn len(&self) -> usize {
        self.bits().iter().map(|b| b.count_ones() as usize).sum()
    }

    /// The column indexes, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.width).filter(|i| self.contains(*i))
    }
}

impl std::fmt::Debug for ColumnSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnSet;

    /// The same operations on narrow (inline) and wide (allocated) tables.
    #[test]
    fn set_operations_hold_for_narrow_and_wide_tables() {
        for width in [3, 64, 65, 128, 129, 300] {
            let last = width - 1;
            let a = ColumnSet::from_indexes(width, [0, last]);
            let b = ColumnSet::from_indexes(width, [last, width + 5]);
            assert_eq!(a.iter().collect::<Vec<_>>(), [0, last], "width {width}");
            assert_eq!(b.len(), 1, "an index past the width is ignored");
            assert_eq!(a.union(&b), a);
            assert_eq!(a.intersection(&b), b);
            assert!(b.is_subset(&a) && !a.is_subset(&b));
            assert!(ColumnSet::none(width).is_empty());
            assert_eq!(ColumnSet::all(width).len(), width);
            assert!(!a.contains(width) && a.contains(last));
            assert_ne!(a, ColumnSet::from_indexes(width + 1, [0, last]), "another width");
        }
    }
}
