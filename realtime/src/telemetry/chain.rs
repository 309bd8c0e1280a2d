//! An error with its causes, for log lines and status texts.
//!
//! The crate's errors say what failed at their own level and carry the cause as their
//! `source()`, never also in their message; a reporter walks the chain once. `Display` of such
//! an error alone would drop the cause, so every place that logs or shows an error prints
//! [`chain`] of it instead (anyhow's `{:#}` does the same walk in `main.rs`).

use std::error::Error;
use std::fmt;

/// `error`, then each of its sources, joined by `": "`.
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> Chain<'a> {
    Chain(error)
}

/// The [`Display`](fmt::Display) adapter [`chain`] returns.
#[derive(Clone, Copy, Debug)]
pub struct Chain<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            // Errors from other crates (sqlx, hyper, io) may already end their message with
            // their cause's text; printing it again would say it twice.
            if !text.is_empty() && !shown.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            next = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot connect to {target}")]
        Connect { target: String, source: std::io::Error },
        #[error("the stream ended")]
        Ended,
        /// A message that prints its cause, as some dependencies' errors do.
        #[error("error communicating with database: {0}")]
        Repeats(#[source] std::io::Error),
        #[error("cannot prepare the schema")]
        Nested(#[source] Box<Outer>),
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn prints_each_cause_once_in_order() {
        let error = Outer::Connect {
            target: "127.0.0.1:1".into(),
            source: refused(),
        };
        assert_eq!(
            chain(&error).to_string(),
            "cannot connect to 127.0.0.1:1: connection refused"
        );
        let nested = Outer::Nested(Box::new(error));
        assert_eq!(
            chain(&nested).to_string(),
            "cannot prepare the schema: cannot connect to 127.0.0.1:1: connection refused"
        );
    }

    #[test]
    fn an_error_without_a_source_prints_as_itself() {
        assert_eq!(chain(&Outer::Ended).to_string(), "the stream ended");
    }

    #[test]
    fn a_cause_already_at_the_end_of_the_message_is_not_repeated() {
        let error = Outer::Repeats(refused());
        assert_eq!(
            chain(&error).to_string(),
            "error communicating with database: connection refused"
        );
    }
}
