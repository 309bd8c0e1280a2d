//! The relation and type cache of one replication session.
//!
//! Owned by the replication task alone. A Relation message replaces its entry outright: it is
//! re-sent after DDL and replica-identity changes, and always before a relation's first change
//! in a session.

use std::collections::HashMap;
use std::sync::Arc;

use crate::change::Table;
use crate::replication::pgoutput::{Relation, TypeMessage};
use crate::replication::values::{PgType, ValueKind};

/// A table plus how to convert each of its columns.
#[derive(Clone, Debug)]
pub struct CachedTable {
    pub table: Arc<Table>,
    /// One per column, in column order.
    pub kinds: Arc<[ValueKind]>,
}

#[derive(Debug, Default)]
pub struct RelationCache {
    tables: HashMap<u32, CachedTable>,
    types: HashMap<u32, PgType>,
}

impl RelationCache {
    pub fn apply_type(&mut self, _message: &TypeMessage) {}

    /// Replaces the entry for the relation and returns it.
    pub fn apply_relation(&mut self, _message: &Relation) -> Option<&CachedTable> {
        None
    }

    pub fn get(&self, relation_id: u32) -> Option<&CachedTable> {
        self.tables.get(&relation_id)
    }

    /// The type of a column: built in, or as a Type message described it, else text.
    pub fn column_type(&self, oid: u32) -> PgType {
        crate::replication::values::builtin(oid)
            .or_else(|| self.types.get(&oid).cloned())
            .unwrap_or_else(|| PgType {
                name: Arc::from(oid.to_string()),
                kind: ValueKind::Text,
            })
    }
}
