//! SQL `LIKE` patterns: `%` matches any run of characters, `_` exactly one, `\` makes the next
//! character literal. Compiled once at bind time; matching walks the subject in place with the
//! single-backtrack wildcard algorithm (no allocation, no exponential blow-up).

use super::FilterError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    One,
    Many,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LikePattern {
    tokens: Box<[Token]>,
}

impl LikePattern {
    /// Compiles `pattern`; with `fold`, literals are lower-cased (ILIKE lower-cases the subject
    /// too before matching).
    pub(crate) fn compile(pattern: &str, fold: bool) -> Result<LikePattern, FilterError> {
        LikePattern::build(pattern, fold, true)
    }

    /// A pattern without an escape character (`LIKE ... ESCAPE ''`): `\` is literal.
    pub(crate) fn compile_unescaped(pattern: &str) -> LikePattern {
        LikePattern::build(pattern, false, false).unwrap_or(LikePattern { tokens: Box::new([]) })
    }

    fn build(pattern: &str, fold: bool, escape: bool) -> Result<LikePattern, FilterError> {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '%' => Token::Many,
                '_' => Token::One,
                '\\' if escape => Token::Literal(chars.next().ok_or(FilterError::LikeEscape)?),
                c => Token::Literal(c),
            };
            match token {
                Token::Many if tokens.last() == Some(&Token::Many) => {}
                Token::Literal(c) if fold => tokens.extend(c.to_lowercase().map(Token::Literal)),
                token => tokens.push(token),
            }
        }
        Ok(LikePattern {
            tokens: tokens.into_boxed_slice(),
        })
    }

    pub(crate) fn matches(&self, subject: &str) -> bool {
        let p = &self.tokens;
        let (mut si, mut pi) = (0usize, 0usize);
        // The last `%` seen and the subject position it currently absorbs up to.
        let mut star: Option<(usize, usize)> = None;
        while si < subject.len() {
            let Some(c) = subject[si..].chars().next() else {
                return false;
            };
            match p.get(pi) {
                Some(Token::Many) => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                Some(Token::One) => {
                    si += c.len_utf8();
                    pi += 1;
                    continue;
                }
                Some(Token::Literal(l)) if *l == c => {
                    si += c.len_utf8();
                    pi += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((star_pi, star_si)) => {
                    let Some(absorbed) = subject[star_si..].chars().next() else {
                        return false;
                    };
                    let next = star_si + absorbed.len_utf8();
                    star = Some((star_pi, next));
                    pi = star_pi + 1;
                    si = next;
                }
                None => return false,
            }
        }
        p[pi..].iter().all(|t| *t == Token::Many)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(subject: &str, pattern: &str) -> bool {
        LikePattern::compile(pattern, false)
            .expect(pattern)
            .matches(subject)
    }

    #[test]
    fn wildcards_match_as_sql_like() {
        assert!(like("hello", "hello"));
        assert!(!like("hello", "hell"));
        assert!(like("hello", "h%"));
        assert!(like("hello", "%llo"));
        assert!(like("hello", "%l%"));
        assert!(like("hello", "h_llo"));
        assert!(!like("hllo", "h_llo"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("", ""));
        assert!(like("ééé", "_é_"));
        assert!(like("aXbXc", "a%b%c"));
        assert!(!like("aXbXd", "a%b%c"));
        assert!(like("mississippi", "%iss%ppi"));
        assert!(like("abcabd", "%abd"));
        assert!(!like("Hello", "hello"));
    }

    #[test]
    fn backslash_makes_wildcards_literal() {
        assert!(like("50%", r"50\%"));
        assert!(!like("500", r"50\%"));
        assert!(like("a_b", r"a\_b"));
        assert!(!like("axb", r"a\_b"));
        assert!(like(r"a\b", r"a\\b"));
        assert_eq!(LikePattern::compile(r"abc\", false), Err(FilterError::LikeEscape));
    }

    #[test]
    fn long_subjects_do_not_blow_up() {
        let subject = "a".repeat(20_000);
        let pattern = format!("{}b", "%a".repeat(50));
        assert!(!like(&subject, &pattern));
        assert!(like(&subject, &"%a".repeat(50)));
    }

    #[test]
    fn folded_patterns_lower_case_literals() {
        let p = LikePattern::compile("HeL%", true).expect("compiles");
        assert!(p.matches("hello"));
        assert!(!p.matches("Hello"), "the caller lower-cases the subject");
    }
}
