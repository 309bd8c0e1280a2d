//! A set of a table's columns, by index in the table's column order: which columns a subscriber
//! may see. Small and cheap to compare and hash, so that subscribers can be grouped by it.

/// Columns of one table (indexes into `Table::columns`). Every set made for one table has that
/// table's width, so sets of the same table compare equal exactly when they hold the same
/// columns.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ColumnSet {
    width: usize,
    bits: Box<[u64]>,
}

impl ColumnSet {
    /// No column of a table with `width` columns.
    pub fn none(width: usize) -> ColumnSet {
        ColumnSet {
            width,
            bits: vec![0; width.div_ceil(64)].into_boxed_slice(),
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
        index < self.width && self.bits[index / 64] & (1 << (index % 64)) != 0
    }

    /// Adds a column; an index at or past the width is ignored.
    pub fn insert(&mut self, index: usize) {
        if index < self.width {
            self.bits[index / 64] |= 1 << (index % 64);
        }
    }

    /// Columns in either set (the width of `self`).
    pub fn union(&self, other: &ColumnSet) -> ColumnSet {
        let mut out = self.clone();
        for (a, b) in out.bits.iter_mut().zip(other.bits.iter()) {
            *a |= b;
        }
        out
    }

    /// Columns in both sets (the width of `self`).
    pub fn intersection(&self, other: &ColumnSet) -> ColumnSet {
        let mut out = self.clone();
        for (i, a) in out.bits.iter_mut().enumerate() {
            *a &= other.bits.get(i).copied().unwrap_or(0);
        }
        out
    }

    /// Whether every column of `self` is in `other`.
    pub fn is_subset(&self, other: &ColumnSet) -> bool {
        self.bits
            .iter()
            .enumerate()
            .all(|(i, a)| a & !other.bits.get(i).copied().unwrap_or(0) == 0)
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|b| *b == 0)
    }

    /// How many columns the set holds.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|b| b.count_ones() as usize).sum()
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
