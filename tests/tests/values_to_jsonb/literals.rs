//! Input literals for the differential test: one proptest strategy per type producing text that
//! the type's input function accepts (cast from `text` in SQL), plus fixed edge cases.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::BoxedStrategy;

type Literal = BoxedStrategy<String>;

/// Every built-in type checked, with its values; arrays of each are checked too.
pub fn builtin_types() -> Vec<(&'static str, Literal, Vec<&'static str>)> {
    vec![
        (
            "bool",
            select(vec!["t", "f", "true", "no", "on"])
                .prop_map(String::from)
                .boxed(),
            vec![],
        ),
        ("int2", int(i16::MIN.into(), i16::MAX.into()), vec!["-32768", "0"]),
        (
            "int4",
            int(i32::MIN.into(), i32::MAX.into()),
            vec!["-2147483648", "2147483647"],
        ),
        (
            "int8",
            int(i64::MIN, i64::MAX),
            vec!["-9223372036854775808", "9223372036854775807"],
        ),
        ("oid", int(0, u32::MAX.into()), vec!["4294967295"]),
        (
            "float4",
            float4(),
            vec![
                "NaN",
                "Infinity",
                "-Infinity",
                "-0",
                "1e-45",
                "3.4028235e38",
                "0.1",
            ],
        ),
        ("float8", float8(), FLOAT8_EDGES.to_vec()),
        ("numeric", numeric(), NUMERIC_EDGES.to_vec()),
        (
            "text",
            text(),
            vec!["", "NULL", "\"quoted\"", "back\\slash", "line\nbreak\ttab\u{1}"],
        ),
        ("varchar", text(), vec![]),
        ("bpchar", text(), vec!["  padded  "]),
        ("character(5)", text(), vec!["a", "", "abcdefgh"]),
        ("name", text(), vec![]),
        ("\"char\"", text(), vec!["a", "", "é"]),
        ("refcursor", text(), vec![]),
        ("json", json_text(), JSON_EDGES.to_vec()),
        ("jsonb", json_text(), JSON_EDGES.to_vec()),
        (
            "uuid",
            uuid(),
            vec![
                "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}",
                "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            ],
        ),
        (
            "date",
            date(),
            vec![
                "infinity",
                "-infinity",
                "4713-01-01 BC",
                "0001-01-01 BC",
                "5874897-12-31",
            ],
        ),
        ("time", time(), vec!["24:00:00", "00:00:00", "23:59:59.999999"]),
        (
            "timetz",
            timetz(),
            vec!["24:00:00+15:59", "00:00:00-15:59", "12:00:00+05:30:15"],
        ),
        ("timestamp", timestamp(), TIMESTAMP_EDGES.to_vec()),
        ("timestamptz", timestamptz(), TIMESTAMPTZ_EDGES.to_vec()),
        ("interval", interval(), INTERVAL_EDGES.to_vec()),
        ("bytea", bytea(), vec!["", "\\x00ff", "plain"]),
        (
            "money",
            money(),
            vec!["-92233720368547758.08", "92233720368547758.07"],
        ),
        ("inet", inet(), vec!["::", "::ffff:1.2.3.4", "10.0.0.1/8"]),
        ("cidr", cidr(), vec!["10/8", "::/0"]),
        ("macaddr", hex_bytes(6, ":"), vec!["08002b010203"]),
        ("macaddr8", hex_bytes(8, ":"), vec!["08:00:2b:01:02:03"]),
        ("bit(5)", bits(5, 5), vec!["00000"]),
        ("varbit", bits(0, 20), vec![""]),
        (
            "tsvector",
            tsvector(),
            vec!["", "'it''s' 'a':1A,2B 'back\\\\slash'"],
        ),
        ("tsquery", tsquery(), vec!["'a' & !'b' | 'c' <-> 'd':*"]),
        (
            "xml",
            xml(),
            vec!["<a/>", "plain text", "<a x=\"1\">&amp;&lt;</a>"],
        ),
        ("point", point(), vec!["(NaN,Infinity)", "(1e300,-1e-300)"]),
        ("line", line(), vec![]),
        (
            "lseg",
            points(2, 2).prop_map(|p| format!("[{p}]")).boxed(),
            vec![],
        ),
        ("box", points(2, 2), vec!["(1,1),(0,0)"]),
        ("path", path(), vec![]),
        (
            "polygon",
            points(1, 5).prop_map(|p| format!("({p})")).boxed(),
            vec![],
        ),
        ("circle", circle(), vec!["<(0,0),0>"]),
        (
            "int4range",
            range(int(-1000, 1000)),
            vec!["empty", "(,)", "[1,1]", "(,5]"],
        ),
        ("int8range", range(int(i64::MIN + 1, i64::MAX - 1)), vec!["[3,)"]),
        (
            "numrange",
            range(numeric_finite()),
            vec!["[1.50,2.500)", "(-Infinity,Infinity)"],
        ),
        (
            "tsrange",
            range(timestamp().prop_map(|t| format!("\"{t}\"")).boxed()),
            vec!["[-infinity,infinity]"],
        ),
        (
            "tstzrange",
            range(timestamptz().prop_map(|t| format!("\"{t}\"")).boxed()),
            vec![],
        ),
        (
            "daterange",
            range(date().prop_map(|d| format!("\"{d}\"")).boxed()),
            vec!["[2020-01-01,2020-01-01]"],
        ),
        ("int4multirange", multirange(int(-1000, 1000)), vec!["{}"]),
        ("datemultirange", multirange(date()), vec![]),
        (
            "pg_lsn",
            (any::<u32>(), any::<u32>())
                .prop_map(|(h, l)| format!("{h:X}/{l:X}"))
                .boxed(),
            vec![],
        ),
        (
            "int2vector",
            spaced(int(i16::MIN.into(), i16::MAX.into())),
            vec![""],
        ),
        ("oidvector", spaced(int(0, u32::MAX.into())), vec![""]),
        ("xid", int(0, u32::MAX.into()), vec![]),
        ("xid8", any::<u64>().prop_map(|v| v.to_string()).boxed(), vec![]),
        ("cid", int(0, u32::MAX.into()), vec![]),
        (
            "tid",
            (any::<u32>(), any::<u16>())
                .prop_map(|(b, o)| format!("({b},{o})"))
                .boxed(),
            vec![],
        ),
        (
            "regtype",
            pick(&[
                "int4",
                "text",
                "timestamp with time zone",
                "double precision[]",
                "mood",
            ]),
            vec![],
        ),
        ("regclass", pick(&["pg_class", "pg_catalog.pg_type"]), vec![]),
        ("regnamespace", pick(&["pg_catalog", "public"]), vec![]),
        ("regrole", pick(&["postgres"]), vec![]),
        ("regconfig", pick(&["english", "simple"]), vec![]),
        ("regproc", pick(&["now", "pg_catalog.textlen", "-"]), vec![]),
        (
            "jsonpath",
            pick(&["$.a[*] ? (@ > 1)", "strict $.\"k\"", "$"]),
            vec![],
        ),
        ("pg_snapshot", snapshot(), vec![]),
        ("txid_snapshot", snapshot(), vec![]),
        (
            "aclitem",
            pick(&["postgres=arwdDxt/postgres", "=r/postgres"]),
            vec![],
        ),
    ]
}

const FLOAT8_EDGES: &[&str] = &[
    "NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "1e308",
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "5e-324",
    "0.1",
    "123456789012345680000",
];

const NUMERIC_EDGES: &[&str] = &[
    "NaN",
    "Infinity",
    "-Infinity",
    "1.50",
    "0.000",
    "-0.0",
    "12345678901234567890.000100",
    "1e-30",
    "-1.5E+40",
];

const JSON_EDGES: &[&str] = &[
    "{\"a\":1,\"a\":2}",
    "\"\\ud83d\\ude00 \\u00e9 \\n \\/\"",
    "  {\"é😀\" : [ ] , \"\" : {}}  ",
    "[1e400, -0, 1.0E+2, 0.000, -1.5e-10]",
    "{\"a\": {\"b\": [null, true, false, \"x\\\"y\"]}}",
    "\"\"",
    "12345678901234567890123456789",
];

const TIMESTAMP_EDGES: &[&str] = &[
    "infinity",
    "-infinity",
    "4713-01-01 00:00:00 BC",
    "0001-12-31 23:59:59.999999 BC",
    "294276-12-31 23:59:59.999999",
    "2024-02-29 23:59:59.5",
];

const TIMESTAMPTZ_EDGES: &[&str] = &[
    "infinity",
    "-infinity",
    "4713-01-01 12:00:00+00 BC",
    "0001-01-01 00:00:00+01",
    "1900-01-01 00:00:00 Europe/Amsterdam",
    "294276-12-31 23:59:59.999999+00",
    "2024-01-02 01:04:05.123456-05:30",
];

const INTERVAL_EDGES: &[&str] = &[
    "0",
    "-1 day +02:03:04",
    "@ 1 hour ago",
    "P1Y2M3DT4H5M6.5S",
    "178000000 years",
    "-178000000 years",
    "1 mon -1 day 00:00:00.000001",
];

pub const MOOD_LABELS: &[&str] = &["sad", "ok", "happy 😀", "with \"quote\", comma", "NULL", ""];

pub const ARRAY_EDGES: &[&str] = &[
    "{}",
    "[0:1]={1,2}",
    "[-5:-4][2:3]={{1,2},{3,4}}",
    "{{{1,2}},{{3,4}}}",
    "{NULL}",
    "{{NULL,NULL},{1,2}}",
    "{{{{{{1}}}}}}",
    "{ 1 , 2 }",
];

pub const TEXT_ARRAY_EDGES: &[&str] = &[
    r#"{"a b","c\"d",NULL,"NULL",""}"#,
    r#"{"\\"," x ","{}",",",null,"null"}"#,
    r#"{{"a","b"},{"c",NULL}}"#,
    "{ a , b c }",
    "{\"é😀\",\"\t\n\"}",
    "[2:2]={x}",
];

fn pick(options: &[&'static str]) -> Literal {
    select(options.to_vec()).prop_map(String::from).boxed()
}

pub fn int(lo: i64, hi: i64) -> Literal {
    prop_oneof![1 => select(vec![lo, hi, 0.clamp(lo, hi)]), 6 => lo..=hi]
        .prop_map(|v| v.to_string())
        .boxed()
}

fn float_text(v: f64, e: String) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        e
    }
}

fn float8() -> Literal {
    prop_oneof![
        any::<f64>(),
        (-1_000_000i32..1_000_000, 0u32..4).prop_map(|(m, s)| f64::from(m) / 10f64.powi(s as i32)),
    ]
    .prop_map(|v| float_text(v, format!("{v:e}")))
    .boxed()
}

fn float4() -> Literal {
    prop_oneof![
        any::<f32>(),
        (-10_000i16..10_000).prop_map(|m| f32::from(m) / 100.0)
    ]
    .prop_map(|v| float_text(f64::from(v), format!("{v:e}")))
    .boxed()
}

fn float8_finite() -> Literal {
    prop_oneof![
        (-1_000_000i32..1_000_000).prop_map(|m| f64::from(m) / 1000.0),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    ]
    .prop_map(|v| format!("{v:e}"))
    .boxed()
}

fn numeric_finite() -> Literal {
    prop::string::string_regex(r"-?[0-9]{1,25}(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,2})?")
        .expect("regex")
        .boxed()
}

fn numeric() -> Literal {
    prop_oneof![8 => numeric_finite(), 1 => pick(&["NaN", "Infinity", "-Infinity"])].boxed()
}

/// Any text (no NUL, which Postgres text cannot hold), biased towards characters that need
/// quoting or escaping somewhere.
pub fn text() -> Literal {
    let special = select(vec![
        '"', '\\', ' ', '{', '}', ',', '(', ')', '\n', '\t', '\r', 'é', '😀', 'N', 'U', 'L', '\u{1}',
        '\u{1f}', '\u{7f}', '\u{2028}', ';', '\'', '[', ']', '=', ':',
    ]);
    let ch = prop_oneof![2 => special, 3 => any::<char>().prop_filter("no NUL", |c| *c != '\0')];
    prop_oneof![
        1 => pick(&["NULL", "null", "", " ", "  padded  "]),
        6 => vec(ch, 0..12).prop_map(String::from_iter),
    ]
    .boxed()
}

fn json_string() -> Literal {
    text()
        .prop_map(|s| serde_json::to_string(&s).expect("string"))
        .boxed()
}

/// JSON documents with varied whitespace, escapes, numbers and nesting.
fn json_text() -> Literal {
    let number = prop::string::string_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,10})?([eE][+-]?[0-9]{1,3})?")
        .expect("regex");
    let leaf = prop_oneof![pick(&["null", "true", "false"]), number.boxed(), json_string()];
    let space = pick(&["", " ", "\n  ", "\t"]);
    leaf.prop_recursive(4, 40, 6, move |inner| {
        let space = space.clone();
        prop_oneof![
            (vec(inner.clone(), 0..6), space.clone())
                .prop_map(|(items, s)| format!("[{s}{}]", items.join(","))),
            (vec((json_string(), inner), 0..6), space).prop_map(|(members, s)| {
                let members: Vec<String> = members.into_iter().map(|(k, v)| format!("{k}{s}:{v}")).collect();
                format!("{{{s}{}{s}}}", members.join(&format!(",{s}")))
            }),
        ]
    })
    .boxed()
}

fn uuid() -> Literal {
    (any::<[u8; 16]>(), any::<bool>())
        .prop_map(|(b, upper)| {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            let s = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            if upper { s.to_uppercase() } else { s }
        })
        .boxed()
}

/// Year (≤ 0 is BC, ISO style `0001 BC` = year 0), month, day: always a valid date.
fn ymd(max_year: i32) -> impl Strategy<Value = (i32, u32, u32)> {
    (
        prop_oneof![1 => -4712..=0, 6 => 1..=9999, 1 => 10_000..=max_year],
        1u32..=12,
        1u32..=28,
    )
}

fn date_text((y, m, d): (i32, u32, u32)) -> (String, &'static str) {
    if y <= 0 {
        (format!("{:04}-{m:02}-{d:02}", 1 - y), " BC")
    } else {
        (format!("{y:04}-{m:02}-{d:02}"), "")
    }
}

fn date() -> Literal {
    ymd(5_874_896)
        .prop_map(|ymd| {
            let (date, era) = date_text(ymd);
            format!("{date}{era}")
        })
        .boxed()
}

fn clock() -> impl Strategy<Value = String> {
    (
        0u32..24,
        0u32..60,
        0u32..60,
        prop::option::of(prop::string::string_regex("[0-9]{1,6}").expect("regex")),
    )
        .prop_map(|(h, m, s, frac)| match frac {
            Some(f) => format!("{h:02}:{m:02}:{s:02}.{f}"),
            None => format!("{h:02}:{m:02}:{s:02}"),
        })
}

fn offset() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&["+00", "Z", "+05:30", "-08", "+14:59", "-00:30"]),
        (any::<bool>(), 0u32..15, select(vec![0u32, 15, 30, 45]))
            .prop_map(|(neg, h, m)| format!("{}{h:02}:{m:02}", if neg { '-' } else { '+' })),
    ]
}

fn time() -> Literal {
    clock().boxed()
}

fn timetz() -> Literal {
    (clock(), offset()).prop_map(|(c, o)| format!("{c}{o}")).boxed()
}

fn timestamp() -> Literal {
    (ymd(294_275), clock())
        .prop_map(|(ymd, clock)| {
            let (date, era) = date_text(ymd);
            format!("{date} {clock}{era}")
        })
        .boxed()
}

fn timestamptz() -> Literal {
    (ymd(294_275), clock(), offset())
        .prop_map(|(ymd, clock, offset)| {
            let (date, era) = date_text(ymd);
            format!("{date} {clock}{offset}{era}")
        })
        .boxed()
}

fn interval() -> Literal {
    (
        -5000i32..5000,
        -100i32..100,
        -1000i32..1000,
        -100i64..100,
        0u32..60,
        0u32..1_000_000,
    )
        .prop_map(|(y, mo, d, h, mi, us)| format!("{y} years {mo} mons {d} days {h}:{mi:02}:00.{us:06}"))
        .boxed()
}

fn bytea() -> Literal {
    vec(any::<u8>(), 0..16)
        .prop_map(|b| format!("\\x{}", hex(&b, "")))
        .boxed()
}

fn hex(bytes: &[u8], separator: &str) -> String {
    bytes
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(separator)
}

fn hex_bytes(n: usize, separator: &'static str) -> Literal {
    vec(any::<u8>(), n).prop_map(move |b| hex(&b, separator)).boxed()
}

fn money() -> Literal {
    (-1_000_000_000_000i64..1_000_000_000_000, 0u32..100)
        .prop_map(|(units, cents)| format!("{units}.{cents:02}"))
        .boxed()
}

fn inet() -> Literal {
    prop_oneof![
        (any::<[u8; 4]>(), prop::option::of(0u8..=32)).prop_map(|(a, p)| {
            let addr = format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
            p.map_or(addr.clone(), |p| format!("{addr}/{p}"))
        }),
        (any::<[u16; 8]>(), prop::option::of(0u8..=128)).prop_map(|(a, p)| {
            let addr = a.iter().map(|x| format!("{x:x}")).collect::<Vec<_>>().join(":");
            p.map_or(addr.clone(), |p| format!("{addr}/{p}"))
        }),
    ]
    .boxed()
}

fn cidr() -> Literal {
    (any::<u32>(), 0u32..=32)
        .prop_map(|(a, p)| {
            let masked = if p == 0 { 0 } else { a & (u32::MAX << (32 - p)) };
            let b = masked.to_be_bytes();
            format!("{}.{}.{}.{}/{p}", b[0], b[1], b[2], b[3])
        })
        .boxed()
}

fn bits(min: usize, max: usize) -> Literal {
    vec(any::<bool>(), min..=max)
        .prop_map(|b| b.iter().map(|x| if *x { '1' } else { '0' }).collect())
        .boxed()
}

fn tsvector() -> Literal {
    let word = prop::string::string_regex("[a-zé]{1,6}").expect("regex");
    let lexeme =
        (word, vec((1u16..200, select(vec!["", "A", "B", "C"])), 0..3)).prop_map(|(w, positions)| {
            let positions: Vec<String> = positions
                .iter()
                .map(|(p, weight)| format!("{p}{weight}"))
                .collect();
            if positions.is_empty() {
                format!("'{w}'")
            } else {
                format!("'{w}':{}", positions.join(","))
            }
        });
    vec(lexeme, 0..5).prop_map(|l| l.join(" ")).boxed()
}

fn tsquery() -> Literal {
    let word = prop::string::string_regex("[a-z]{1,5}")
        .expect("regex")
        .prop_map(|w| format!("'{w}'"));
    word.prop_recursive(3, 10, 2, |inner| {
        prop_oneof![
            (inner.clone(), select(vec![" & ", " | ", " <-> "]), inner.clone())
                .prop_map(|(a, op, b)| format!("({a}{op}{b})")),
            inner.prop_map(|a| format!("!{a}")),
        ]
    })
    .boxed()
}

fn xml() -> Literal {
    text()
        .prop_map(|s| {
            let clean: String = s
                .chars()
                // XML 1.0 allows no other controls and not the non-characters U+FFFE/U+FFFF.
                .filter(|c| {
                    (!c.is_control() || matches!(c, '\n' | '\t')) && !matches!(c, '\u{fffe}' | '\u{ffff}')
                })
                .flat_map(|c| match c {
                    '&' => "&amp;".chars().collect::<Vec<_>>(),
                    '<' => "&lt;".chars().collect(),
                    '>' => "&gt;".chars().collect(),
                    '"' => "&quot;".chars().collect(),
                    c => vec![c],
                })
                .collect();
            format!("<t a=\"{clean}\">{clean}</t>")
        })
        .boxed()
}

fn point() -> Literal {
    (float8_finite(), float8_finite())
        .prop_map(|(x, y)| format!("({x},{y})"))
        .boxed()
}

fn points(min: usize, max: usize) -> Literal {
    vec(point(), min..=max).prop_map(|p| p.join(",")).boxed()
}

fn line() -> Literal {
    // Postgres treats |A| and |B| below 1e-6 as zero and rejects the line, so A is kept large.
    (1i32..1000, any::<bool>(), float8_finite(), float8_finite())
        .prop_map(|(a, negative, b, c)| format!("{{{}{a},{b},{c}}}", if negative { "-" } else { "" }))
        .boxed()
}

fn path() -> Literal {
    (points(1, 4), any::<bool>())
        .prop_map(|(p, closed)| {
            if closed {
                format!("({p})")
            } else {
                format!("[{p}]")
            }
        })
        .boxed()
}

fn circle() -> Literal {
    (point(), 0u32..1000)
        .prop_map(|(c, r)| format!("<{c},{r}>"))
        .boxed()
}

/// Ranges of the bound literals; bounds are sorted by Postgres or rejected, so pairs are
/// ordered by a probe: we emit `[lo,hi]` with `lo == hi` or an infinite side when unsure.
fn range(bound: Literal) -> Literal {
    (bound, select(vec!["[", "("]), select(vec!["]", ")"]), 0u8..4)
        .prop_map(|(b, open, close, shape)| match shape {
            0 => format!("[{b},{b}]"),
            1 => format!("{open}{b},)"),
            2 => format!("(,{b}{close}"),
            _ => "empty".to_owned(),
        })
        .boxed()
}

fn multirange(bound: Literal) -> Literal {
    vec(range(bound), 0..4)
        .prop_map(|r| format!("{{{}}}", r.join(",")))
        .boxed()
}

fn spaced(element: Literal) -> Literal {
    vec(element, 0..5).prop_map(|e| e.join(" ")).boxed()
}

fn snapshot() -> Literal {
    (1u64..1000, 0u64..50, vec(0u64..50, 0..4))
        .prop_map(|(xmin, span, mut xip)| {
            xip.sort_unstable();
            xip.dedup();
            let xip: Vec<String> = xip
                .iter()
                .filter(|x| **x < span)
                .map(|x| (xmin + x).to_string())
                .collect();
            format!("{xmin}:{}:{}", xmin + span, xip.join(","))
        })
        .boxed()
}

pub fn mood_literal() -> Literal {
    pick(MOOD_LABELS)
}

/// Array literals of up to three dimensions, every element quoted, some NULL, some with
/// explicit lower bounds.
pub fn array_literal(element: Literal, delimiter: char) -> Literal {
    let shape = prop_oneof![3 => (0usize..6).prop_map(|n| vec![n]), 1 => vec(1usize..4, 2..=3)];
    (shape, prop::option::weighted(0.2, -3i32..3))
        .prop_flat_map(move |(shape, lower)| {
            let count: usize = shape.iter().product();
            (
                Just(shape),
                Just(lower),
                vec(prop::option::weighted(0.85, element.clone()), count),
            )
        })
        .prop_map(move |(shape, lower, items)| {
            let items: Vec<String> = items
                .into_iter()
                .map(|item| match item {
                    Some(v) => format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")),
                    None => "NULL".to_owned(),
                })
                .collect();
            let body = nest(&shape, &items, delimiter);
            match lower {
                Some(lo) if !items.is_empty() => {
                    let bounds: String = shape
                        .iter()
                        .map(|n| format!("[{lo}:{}]", lo + *n as i32 - 1))
                        .collect();
                    format!("{bounds}={body}")
                }
                _ => body,
            }
        })
        .boxed()
}

fn nest(shape: &[usize], items: &[String], delimiter: char) -> String {
    match shape {
        [] | [_] => format!("{{{}}}", items.join(&delimiter.to_string())),
        [_, rest @ ..] => {
            let chunk = rest.iter().product::<usize>().max(1);
            let parts: Vec<String> = items.chunks(chunk).map(|c| nest(rest, c, delimiter)).collect();
            format!("{{{}}}", parts.join(&delimiter.to_string()))
        }
    }
}

/// Composite literal: every non-NULL field quoted with record_in's rules.
fn row(fields: Vec<Option<String>>) -> String {
    let fields: Vec<String> = fields
        .into_iter()
        .map(|f| {
            f.map_or(String::new(), |v| {
                format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\"\""))
            })
        })
        .collect();
    format!("({})", fields.join(","))
}

/// Literals of `pair (a int4, b text, c numeric[], d jsonb, e timestamptz, f mood,
/// g inner_row (x bool, y int8[]), h float8)`.
pub fn pair_literal() -> Literal {
    let opt = |s: Literal| prop::option::weighted(0.8, s);
    let inner = (
        opt(pick(&["t", "f"])),
        opt(array_literal(int(i64::MIN, i64::MAX), ',')),
    )
        .prop_map(|(x, y)| row(vec![x, y]))
        .boxed();
    (
        opt(int(i32::MIN.into(), i32::MAX.into())),
        opt(text()),
        opt(array_literal(numeric(), ',')),
        opt(json_text()),
        opt(timestamptz()),
        opt(mood_literal()),
        opt(inner),
        opt(float8()),
    )
        .prop_map(|(a, b, c, d, e, f, g, h)| row(vec![a, b, c, d, e, f, g, h]))
        .boxed()
}
