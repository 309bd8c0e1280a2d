//! The static table of built-in types (OID < 10000): their `pg_type.typname` and how their
//! values convert. pgoutput never sends Type messages for these OIDs, so this table is the only
//! source for them.
//!
//! Generated from a PostgreSQL 15 catalog with the query below and committed as source; built-in
//! OIDs are fixed across versions, so the table only grows when Postgres adds types.
//!
//! ```sql
//! SELECT format('    (%s, "%s", %s),', t.oid, t.typname, CASE
//!   WHEN t.oid = 16 THEN 'Bool'
//!   WHEN t.oid IN (20, 21, 23) THEN 'Integer'
//!   WHEN t.oid IN (700, 701) THEN 'Float'
//!   WHEN t.oid = 1700 THEN 'Numeric'
//!   WHEN t.oid IN (114, 3802) THEN 'Json'
//!   WHEN t.oid = 1114 THEN 'Timestamp'
//!   WHEN t.oid = 1184 THEN 'Timestamptz'
//!   WHEN t.oid = 1082 THEN 'Date'
//!   WHEN t.typsubscript = 'array_subscript_handler'::regproc AND t.typname NOT LIKE '\_%'
//!     THEN format('Vector(%s)', t.typelem)
//!   WHEN t.typsubscript = 'array_subscript_handler'::regproc
//!     THEN format('Array(%s, b''%s'')', t.typelem, coalesce(e.typdelim, ','))
//!   ELSE 'Text' END)
//! FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
//! WHERE t.oid < 10000 AND t.typtype <> 'p'
//! ORDER BY t.oid;
//! ```
//!
//! The kinds follow `to_jsonb`'s own categories: only `int2`/`int4`/`int8`, `float4`/`float8`
//! and `numeric` become numbers (`oid` and the `reg*` types are strings), and only "true" array
//! types (subscripted by `array_subscript_handler`, which includes `int2vector` and `oidvector`)
//! become arrays. An array's delimiter is its element type's `typdelim`. Pseudo-types are left
//! out: no column has one. The catalogs' own row types are strings here, not objects.

use super::ValueKind;

/// How a table entry converts; element types are referred to by OID.
#[derive(Clone, Copy)]
enum Def {
    Bool,
    Integer,
    Float,
    Numeric,
    Json,
    Timestamp,
    Timestamptz,
    Date,
    Text,
    /// A true array type: element OID and delimiter.
    Array(u32, u8),
    /// `int2vector` / `oidvector`: space-separated, no braces.
    Vector(u32),
}

use Def::*;

/// Sorted by OID (binary search).
static TYPES: &[(u32, &str, Def)] = &[
    (16, "bool", Bool),
    (17, "bytea", Text),
    (18, "char", Text),
    (19, "name", Text),
    (20, "int8", Integer),
    (21, "int2", Integer),
    (22, "int2vector", Vector(21)),
    (23, "int4", Integer),
    (24, "regproc", Text),
    (25, "text", Text),
    (26, "oid", Text),
    (27, "tid", Text),
    (28, "xid", Text),
    (29, "cid", Text),
    (30, "oidvector", Vector(26)),
    (71, "pg_type", Text),
    (75, "pg_attribute", Text),
    (81, "pg_proc", Text),
    (83, "pg_class", Text),
    (114, "json", Json),
    (142, "xml", Text),
    (143, "_xml", Array(142, b',')),
    (194, "pg_node_tree", Text),
    (199, "_json", Array(114, b',')),
    (210, "_pg_type", Array(71, b',')),
    (270, "_pg_attribute", Array(75, b',')),
    (271, "_xid8", Array(5069, b',')),
    (272, "_pg_proc", Array(81, b',')),
    (273, "_pg_class", Array(83, b',')),
    (600, "point", Text),
    (601, "lseg", Text),
    (602, "path", Text),
    (603, "box", Text),
    (604, "polygon", Text),
    (628, "line", Text),
    (629, "_line", Array(628, b',')),
    (650, "cidr", Text),
    (651, "_cidr", Array(650, b',')),
    (700, "float4", Float),
    (701, "float8", Float),
    (718, "circle", Text),
    (719, "_circle", Array(718, b',')),
    (774, "macaddr8", Text),
    (775, "_macaddr8", Array(774, b',')),
    (790, "money", Text),
    (791, "_money", Array(790, b',')),
    (829, "macaddr", Text),
    (869, "inet", Text),
    (1000, "_bool", Array(16, b',')),
    (1001, "_bytea", Array(17, b',')),
    (1002, "_char", Array(18, b',')),
    (1003, "_name", Array(19, b',')),
    (1005, "_int2", Array(21, b',')),
    (1006, "_int2vector", Array(22, b',')),
    (1007, "_int4", Array(23, b',')),
    (1008, "_regproc", Array(24, b',')),
    (1009, "_text", Array(25, b',')),
    (1010, "_tid", Array(27, b',')),
    (1011, "_xid", Array(28, b',')),
    (1012, "_cid", Array(29, b',')),
    (1013, "_oidvector", Array(30, b',')),
    (1014, "_bpchar", Array(1042, b',')),
    (1015, "_varchar", Array(1043, b',')),
    (1016, "_int8", Array(20, b',')),
    (1017, "_point", Array(600, b',')),
    (1018, "_lseg", Array(601, b',')),
    (1019, "_path", Array(602, b',')),
    (1020, "_box", Array(603, b';')),
    (1021, "_float4", Array(700, b',')),
    (1022, "_float8", Array(701, b',')),
    (1027, "_polygon", Array(604, b',')),
    (1028, "_oid", Array(26, b',')),
    (1033, "aclitem", Text),
    (1034, "_aclitem", Array(1033, b',')),
    (1040, "_macaddr", Array(829, b',')),
    (1041, "_inet", Array(869, b',')),
    (1042, "bpchar", Text),
    (1043, "varchar", Text),
    (1082, "date", Date),
    (1083, "time", Text),
    (1114, "timestamp", Timestamp),
    (1115, "_timestamp", Array(1114, b',')),
    (1182, "_date", Array(1082, b',')),
    (1183, "_time", Array(1083, b',')),
    (1184, "timestamptz", Timestamptz),
    (1185, "_timestamptz", Array(1184, b',')),
    (1186, "interval", Text),
    (1187, "_interval", Array(1186, b',')),
    (1231, "_numeric", Array(1700, b',')),
    (1248, "pg_database", Text),
    (1263, "_cstring", Array(2275, b',')),
    (1266, "timetz", Text),
    (1270, "_timetz", Array(1266, b',')),
    (1560, "bit", Text),
    (1561, "_bit", Array(1560, b',')),
    (1562, "varbit", Text),
    (1563, "_varbit", Array(1562, b',')),
    (1700, "numeric", Numeric),
    (1790, "refcursor", Text),
    (2201, "_refcursor", Array(1790, b',')),
    (2202, "regprocedure", Text),
    (2203, "regoper", Text),
    (2204, "regoperator", Text),
    (2205, "regclass", Text),
    (2206, "regtype", Text),
    (2207, "_regprocedure", Array(2202, b',')),
    (2208, "_regoper", Array(2203, b',')),
    (2209, "_regoperator", Array(2204, b',')),
    (2210, "_regclass", Array(2205, b',')),
    (2211, "_regtype", Array(2206, b',')),
    (2842, "pg_authid", Text),
    (2843, "pg_auth_members", Text),
    (2949, "_txid_snapshot", Array(2970, b',')),
    (2950, "uuid", Text),
    (2951, "_uuid", Array(2950, b',')),
    (2970, "txid_snapshot", Text),
    (3220, "pg_lsn", Text),
    (3221, "_pg_lsn", Array(3220, b',')),
    (3361, "pg_ndistinct", Text),
    (3402, "pg_dependencies", Text),
    (3614, "tsvector", Text),
    (3615, "tsquery", Text),
    (3642, "gtsvector", Text),
    (3643, "_tsvector", Array(3614, b',')),
    (3644, "_gtsvector", Array(3642, b',')),
    (3645, "_tsquery", Array(3615, b',')),
    (3734, "regconfig", Text),
    (3735, "_regconfig", Array(3734, b',')),
    (3769, "regdictionary", Text),
    (3770, "_regdictionary", Array(3769, b',')),
    (3802, "jsonb", Json),
    (3807, "_jsonb", Array(3802, b',')),
    (3904, "int4range", Text),
    (3905, "_int4range", Array(3904, b',')),
    (3906, "numrange", Text),
    (3907, "_numrange", Array(3906, b',')),
    (3908, "tsrange", Text),
    (3909, "_tsrange", Array(3908, b',')),
    (3910, "tstzrange", Text),
    (3911, "_tstzrange", Array(3910, b',')),
    (3912, "daterange", Text),
    (3913, "_daterange", Array(3912, b',')),
    (3926, "int8range", Text),
    (3927, "_int8range", Array(3926, b',')),
    (4066, "pg_shseclabel", Text),
    (4072, "jsonpath", Text),
    (4073, "_jsonpath", Array(4072, b',')),
    (4089, "regnamespace", Text),
    (4090, "_regnamespace", Array(4089, b',')),
    (4096, "regrole", Text),
    (4097, "_regrole", Array(4096, b',')),
    (4191, "regcollation", Text),
    (4192, "_regcollation", Array(4191, b',')),
    (4451, "int4multirange", Text),
    (4532, "nummultirange", Text),
    (4533, "tsmultirange", Text),
    (4534, "tstzmultirange", Text),
    (4535, "datemultirange", Text),
    (4536, "int8multirange", Text),
    (4600, "pg_brin_bloom_summary", Text),
    (4601, "pg_brin_minmax_multi_summary", Text),
    (5017, "pg_mcv_list", Text),
    (5038, "pg_snapshot", Text),
    (5039, "_pg_snapshot", Array(5038, b',')),
    (5069, "xid8", Text),
    (6101, "pg_subscription", Text),
    (6150, "_int4multirange", Array(4451, b',')),
    (6151, "_nummultirange", Array(4532, b',')),
    (6152, "_tsmultirange", Array(4533, b',')),
    (6153, "_tstzmultirange", Array(4534, b',')),
    (6155, "_datemultirange", Array(4535, b',')),
    (6157, "_int8multirange", Array(4536, b',')),
];

/// The type with this OID, if it is built in.
pub(super) fn by_oid(oid: u32) -> Option<(&'static str, ValueKind)> {
    let index = TYPES.binary_search_by_key(&oid, |entry| entry.0).ok()?;
    let (_, name, def) = TYPES[index];
    Some((name, kind(def)))
}

/// The built-in type with this `typname` (Type messages name types, they do not number them).
pub(super) fn by_name(name: &str) -> Option<ValueKind> {
    TYPES
        .iter()
        .find(|entry| entry.1 == name)
        .map(|entry| kind(entry.2))
}

fn kind(def: Def) -> ValueKind {
    match def {
        Bool => ValueKind::Bool,
        Integer => ValueKind::Integer,
        Float => ValueKind::Float,
        Numeric => ValueKind::Numeric,
        Json => ValueKind::Json,
        Timestamp => ValueKind::Timestamp,
        Timestamptz => ValueKind::Timestamptz,
        Date => ValueKind::Date,
        Text => ValueKind::Text,
        Array(element, delimiter) => ValueKind::Array {
            element: Box::new(element_kind(element)),
            delimiter,
        },
        Vector(element) => ValueKind::Vector {
            element: Box::new(element_kind(element)),
        },
    }
}

/// Element types are scalars or vectors (never arrays), so this recursion ends; an element that
/// is not in the table (the pseudo-type `cstring`) converts as text.
fn element_kind(oid: u32) -> ValueKind {
    match TYPES.binary_search_by_key(&oid, |entry| entry.0) {
        Ok(index) => match TYPES[index].2 {
            Array(..) => ValueKind::Text,
            def => kind(def),
        },
        Err(_) => ValueKind::Text,
    }
}
