//! Topic patterns of channel rules: literal text, `{name}` parameters and a final `*`.
//!
//! - `{name}` matches one or more characters other than `:` and binds them to `name`;
//! - `*` (last only) matches the rest of the topic, possibly empty;
//! - everything else matches itself exactly (case-sensitive).
//!
//! So `room:{room_id}` matches `room:42` (room_id = "42") but not `room:42:x`, and
//! `org:{org}:*` matches `org:acme:` and `org:acme:team:red`. Pure; never panics.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param(String),
    Rest,
}

/// A parsed topic pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
    pieces: Vec<Piece>,
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The longest pattern and the most parameters accepted; bounds matching work.
const MAX_PATTERN_LEN: usize = 1024;
const MAX_PARAMS: usize = 16;

impl TopicPattern {
    pub fn parse(text: &str) -> Result<TopicPattern, String> {
        if text.is_empty() {
            return Err("the topic pattern is empty (use \"*\" for every topic)".to_owned());
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "the topic pattern is longer than {MAX_PATTERN_LEN} bytes"
            ));
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' => {
                    let close = text[i..].find('}').ok_or(format!("unclosed {{ at byte {i}"))?;
                    let name = &text[i + 1..i + close];
                    if !is_name(name) {
                        return Err(format!(
                            "{{{name}}}: parameter names are lower-case letters, digits and _, starting with a letter or _"
                        ));
                    }
                    if matches!(pieces.last(), Some(Piece::Param(_))) && literal.is_empty() {
                        return Err(format!(
                            "{{{name}}} follows another parameter directly; separate them with text such as ':'"
                        ));
                    }
                    if pieces.iter().any(|p| *p == Piece::Param(name.to_owned())) {
                        return Err(format!("the parameter {{{name}}} appears twice"));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Param(name.to_owned()));
                    while chars.peek().is_some_and(|(j, _)| *j <= i + close) {
                        chars.next();
                    }
                }
                '}' => return Err(format!("unmatched }} at byte {i}")),
                '*' => {
                    if chars.peek().is_some() {
                        return Err("* may only end the pattern".to_owned());
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Rest);
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if pieces.iter().filter(|p| matches!(p, Piece::Param(_))).count() > MAX_PARAMS {
            return Err(format!("a pattern may have at most {MAX_PARAMS} parameters"));
        }
        Ok(TopicPattern {
            text: text.to_owned(),
            pieces,
        })
    }

    /// The parameter names, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Param(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Matches `topic`, returning the parameter bindings in pattern order.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Vec<(&str, &'t str)>> {
        let mut bindings = Vec::new();
        match_pieces(&self.pieces, topic, &mut bindings).then_some(bindings)
    }
}

fn is_name(name: &str) -> bool {
    name.starts_with(|c: char| c == '_' || c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Backtracking over parameter lengths. A parameter cannot contain ':' and two parameters are
/// never adjacent, so each parameter's candidates lie within one segment and the search stays
/// small.
fn match_pieces<'p, 't>(pieces: &'p [Piece], topic: &'t str, out: &mut Vec<(&'p str, &'t str)>) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return topic.is_empty();
    };
    match first {
        Piece::Literal(lit) => topic
            .strip_prefix(lit.as_str())
            .is_some_and(|t| match_pieces(rest, t, out)),
        Piece::Rest => true,
        Piece::Param(name) => {
            let segment_end = topic.find(':').unwrap_or(topic.len());
            // Shortest first, so `{a}-{b}` binds `a` to the text before the first '-'.
            for (end, _) in topic[..segment_end]
                .char_indices()
                .skip(1)
                .chain([(segment_end, ' ')])
            {
                if end == 0 {
                    continue;
                }
                out.push((name.as_str(), &topic[..end]));
                if match_pieces(rest, &topic[end..], out) {
                    return true;
                }
                out.pop();
            }
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pattern: &str, topic: &str) -> Option<Vec<(String, String)>> {
        let p = TopicPattern::parse(pattern).unwrap();
        p.matches(topic)
            .map(|b| b.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }

    fn bound(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn literals_params_and_rest() {
        assert_eq!(m("lobby", "lobby"), bound(&[]));
        assert_eq!(m("lobby", "lobby2"), None);
        assert_eq!(m("room:{room_id}", "room:42"), bound(&[("room_id", "42")]));
        assert_eq!(m("room:{room_id}", "room:"), None, "a parameter is never empty");
        assert_eq!(
            m("room:{room_id}", "room:42:x"),
            None,
            "a parameter never spans ':'"
        );
        assert_eq!(m("org:{org}:*", "org:acme:team:red"), bound(&[("org", "acme")]));
        assert_eq!(m("org:{org}:*", "org:acme:"), bound(&[("org", "acme")]));
        assert_eq!(m("org:{org}:*", "org:acme"), None);
        assert_eq!(m("*", "anything:at:all"), bound(&[]));
        assert_eq!(
            m("dm-{a}-{b}", "dm-ann-bob"),
            bound(&[("a", "ann"), ("b", "bob")])
        );
        assert_eq!(m("user:{id}:inbox", "user:7:inbox"), bound(&[("id", "7")]));
        assert_eq!(m("Room:{id}", "room:7"), None, "case-sensitive");
        assert_eq!(m("room:{id}", "room:é"), bound(&[("id", "é")]));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in [
            "",
            "room:{",
            "room:}",
            "room:{}",
            "room:{Id}",
            "a*b",
            "{a}{b}",
            "{a}:{a}",
            "room:{1x}",
        ] {
            assert!(TopicPattern::parse(p).is_err(), "{p}");
        }
        let many: String = (0..=MAX_PARAMS).map(|i| format!("{{p{i}}}:")).collect();
        assert!(TopicPattern::parse(&many).is_err());
        let p = TopicPattern::parse("org:{org}:team:{team}").unwrap();
        assert_eq!(p.params().collect::<Vec<_>>(), ["org", "team"]);
    }

    proptest! {
        #[test]
        fn patterns_and_matching_never_panic(pattern in "[a-z{}:*\\-é]{0,24}", topic in "[a-z:\\-é]{0,40}") {
            let bindings = TopicPattern::parse(&pattern).ok().and_then(|p| {
                p.matches(&topic).map(|b| b.into_iter().map(|(_, v)| v.to_owned()).collect::<Vec<_>>())
            });
            for v in bindings.unwrap_or_default() {
                prop_assert!(!v.is_empty() && !v.contains(':'));
            }
        }
    }
}
