//! The relation and type cache of one replication session.
//!
//! Owned by the replication task alone. A Relation message replaces its entry outright: it is
//! re-sent after DDL and replica-identity changes, and always before a relation's first change
//! in a session.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::change::{Column, ReplicaIdentity, Table};
use crate::replication::pgoutput::{Relation, TypeMessage};
use crate::replication::values::{self, PgType, ValueKind};

/// A table plus how to convert each of its columns.
#[derive(Clone, Debug)]
pub struct CachedTable {
    pub table: Arc<Table>,
    /// One per column, in column order.
    pub kinds: Arc<[ValueKind]>,
    /// Each column's `"name":` key, escaped once here rather than in every row image.
    pub keys: Arc<[Box<str>]>,
}

/// Maps keyed by OID: looked up once per change, so hashed by one multiplication rather than
/// SipHash (OIDs come from the server, not from clients who could aim for collisions).
type OidMap<V> = HashMap<u32, V, BuildHasherDefault<OidHasher>>;

#[derive(Debug, Default)]
pub struct RelationCache {
    tables: OidMap<CachedTable>,
    types: OidMap<PgType>,
}

/// Fibonacci hashing of a `u32`: spreads consecutive OIDs over the high bits the table uses.
#[derive(Default)]
struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u32` keys are hashed here; this keeps any other key correct, just slower.
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl RelationCache {
    /// Remembers a user type (OID ≥ 10000) so that columns of that type get its name and
    /// conversion. A later Type message for the same OID replaces it.
    pub fn apply_type(&mut self, message: &TypeMessage) {
        let pg_type = values::from_type_message(&message.namespace, &message.name);
        self.types.insert(message.oid, pg_type);
    }

    /// Replaces the entry for the relation and returns it.
    ///
    /// Returns `None` (and forgets any previous entry, which is stale now) for a replica identity
    /// byte Postgres does not send: changes of that relation then fail as unknown rather than
    /// being read under a guessed identity.
    pub fn apply_relation(&mut self, message: &Relation) -> Option<&CachedTable> {
        let Some(replica_identity) = replica_identity(message.replica_identity) else {
            self.tables.remove(&message.id);
            return None;
        };
        let mut kinds = Vec::with_capacity(message.columns.len());
        let columns: Vec<Column> = message
            .columns
            .iter()
            .map(|c| {
                let pg_type = self.column_type(c.type_oid);
                kinds.push(pg_type.kind);
                Column {
                    name: Arc::from(c.name.as_str()),
                    type_name: pg_type.name,
                    type_oid: c.type_oid,
                    key: c.flags & 1 != 0,
                }
            })
            .collect();
        // pgoutput sends an empty namespace for pg_catalog.
        let schema = if message.namespace.is_empty() {
            "pg_catalog"
        } else {
            message.namespace.as_str()
        };
        let table = Table {
            oid: message.id,
            schema: Arc::from(schema),
            name: Arc::from(message.name.as_str()),
            replica_identity,
            json: Default::default(),
            columns: columns.into(),
        };
        let keys = table.columns.iter().map(json_key).collect();
        let cached = CachedTable {
            table: Arc::new(table),
            kinds: kinds.into(),
            keys,
        };
        self.tables.insert(message.id, cached);
        self.tables.get(&message.id)
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

/// `"name":` for a column, as it starts each of its entries in a row image.
fn json_key(column: &Column) -> Box<str> {
    let mut key = String::with_capacity(column.name.len() + 3);
    values::write_string(&column.name, &mut key);
    key.push(':');
    key.into_boxed_str()
}

fn replica_identity(byte: u8) -> Option<ReplicaIdentity> {
    match byte {
        b'd' => Some(ReplicaIdentity::Default),
        b'n' => Some(ReplicaIdentity::Nothing),
        b'f' => Some(ReplicaIdentity::Full),
        b'i' => Some(ReplicaIdentity::Index),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::pgoutput::RelationColumn;

    fn column(flags: u8, name: &str, type_oid: u32) -> RelationColumn {
        RelationColumn {
            flags,
            name: name.into(),
            type_oid,
            type_modifier: -1,
        }
    }

    fn relation(identity: u8, columns: Vec<RelationColumn>) -> Relation {
        Relation {
            id: 16385,
            namespace: "public".into(),
            name: "items".into(),
            replica_identity: identity,
            columns,
        }
    }

    fn names(cached: &CachedTable) -> Vec<&str> {
        cached.table.columns.iter().map(|c| &*c.name).collect()
    }

    #[test]
    fn relation_becomes_a_table_with_key_flags() {
        let mut cache = RelationCache::default();
        let cached = cache
            .apply_relation(&relation(
                b'd',
                vec![column(1, "id", 23), column(0, "title", 25), column(1, "org", 20)],
            ))
            .expect("cached");
        assert_eq!(
            (&*cached.table.schema, &*cached.table.name, cached.table.oid),
            ("public", "items", 16385)
        );
        assert_eq!(cached.table.replica_identity, ReplicaIdentity::Default);
        assert_eq!(names(cached), ["id", "title", "org"]);
        let keys: Vec<bool> = cached.table.columns.iter().map(|c| c.key).collect();
        assert_eq!(keys, [true, false, true]);
        let oids: Vec<u32> = cached.table.columns.iter().map(|c| c.type_oid).collect();
        assert_eq!(oids, [23, 25, 20]);
        assert_eq!(cached.kinds.len(), 3);
        let keys: Vec<&str> = cached.keys.iter().map(|k| &**k).collect();
        assert_eq!(keys, [r#""id":"#, r#""title":"#, r#""org":"#]);
        assert!(cache.get(16385).is_some());
        assert!(cache.get(16386).is_none());
    }

    #[test]
    fn resent_relation_replaces_the_entry() {
        let mut cache = RelationCache::default();
        cache.apply_relation(&relation(
            b'd',
            vec![column(1, "id", 23), column(0, "title", 25), column(0, "gone", 25)],
        ));
        let before = cache.get(16385).expect("cached").table.clone();

        // ALTER TABLE: "title" renamed to "name", "gone" dropped, "extra" added; then
        // REPLICA IDENTITY FULL, which marks every column as key.
        let resent = relation(
            b'f',
            vec![column(1, "id", 23), column(1, "name", 25), column(1, "extra", 16)],
        );
        let after = cache.apply_relation(&resent).expect("cached").clone();
        assert_eq!(names(&after), ["id", "name", "extra"]);
        assert_eq!(after.table.replica_identity, ReplicaIdentity::Full);
        assert!(after.table.columns.iter().all(|c| c.key));
        assert_eq!(after.kinds.len(), 3);
        assert_eq!(cache.get(16385).expect("cached").table, after.table);
        // Changes already decoded keep the table as it was when they were made.
        assert_eq!(before.columns.len(), 3);
        assert_eq!(&*before.columns[1].name, "title");
        assert_eq!(before.replica_identity, ReplicaIdentity::Default);
    }

    #[test]
    fn type_message_makes_a_user_type_known() {
        let mut cache = RelationCache::default();
        let columns = vec![column(1, "id", 23), column(0, "feeling", 16390)];
        // Before the Type message the OID is unknown: named by its number, converted as text.
        let unknown = cache
            .apply_relation(&relation(b'd', columns.clone()))
            .expect("cached")
            .clone();
        assert_eq!(&*unknown.table.columns[1].type_name, "16390");
        assert_eq!(unknown.kinds[1], ValueKind::Text);

        cache.apply_type(&TypeMessage {
            oid: 16390,
            namespace: "public".into(),
            name: "mood".into(),
        });
        assert_eq!(
            cache.column_type(16390),
            values::from_type_message("public", "mood")
        );
        let known = cache.apply_relation(&relation(b'd', columns)).expect("cached");
        assert_eq!(&*known.table.columns[1].type_name, "mood");
        assert_eq!(known.kinds[1], values::from_type_message("public", "mood").kind);

        // A domain's Type message carries its base type: the column is named and converted as it.
        cache.apply_type(&TypeMessage {
            oid: 16426,
            namespace: String::new(),
            name: "int4".into(),
        });
        assert_eq!(cache.column_type(16426), values::from_type_message("", "int4"));
    }

    #[test]
    fn identity_bytes_map_and_unknown_ones_forget_the_entry() {
        let mut cache = RelationCache::default();
        for (byte, identity) in [
            (b'd', ReplicaIdentity::Default),
            (b'n', ReplicaIdentity::Nothing),
            (b'f', ReplicaIdentity::Full),
            (b'i', ReplicaIdentity::Index),
        ] {
            let cached = cache
                .apply_relation(&relation(byte, vec![column(1, "id", 23)]))
                .expect("cached");
            assert_eq!(cached.table.replica_identity, identity);
        }
        assert!(
            cache
                .apply_relation(&relation(b'x', vec![column(1, "id", 23)]))
                .is_none()
        );
        assert!(cache.get(16385).is_none(), "a stale entry must not survive");
    }

    #[test]
    fn row_keys_are_escaped_column_names() {
        let mut cache = RelationCache::default();
        let cached = cache
            .apply_relation(&relation(b'd', vec![column(1, "say \"hi\"\\", 23)]))
            .expect("cached");
        assert_eq!(&*cached.keys[0], r#""say \"hi\"\\":"#);
    }

    #[test]
    fn empty_namespace_is_pg_catalog() {
        let mut cache = RelationCache::default();
        let mut message = relation(b'd', vec![]);
        message.namespace = String::new();
        let cached = cache.apply_relation(&message).expect("cached");
        assert_eq!(&*cached.table.schema, "pg_catalog");
    }
}
