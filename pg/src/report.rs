//! Errors written for people: an error and its causes on one line, each
//! said once.
//!
//! Many errors write their cause into their own message *and* hand it out
//! as their `source()` (sqlx's do, and `MigrateError` on top of them), so
//! printing the chain the usual way (`{:#}` of anyhow) repeats each cause
//! once per level: `relation "events" already exists: relation "events"
//! already exists`. [`describe`] leaves out a cause that the text so far
//! already says. Every `error:` line of the `strata` command and of the
//! projection workers goes through it.
//!
//! ```
//! use std::io;
//!
//! #[derive(Debug)]
//! struct Create(io::Error);
//! impl std::fmt::Display for Create {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         write!(f, "cannot create afile: {}", self.0)
//!     }
//! }
//! impl std::error::Error for Create {
//!     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
//!         Some(&self.0)
//!     }
//! }
//!
//! let error = Create(io::Error::new(io::ErrorKind::AlreadyExists, "File exists"));
//! assert_eq!(strata_pg::report::describe(&error), "cannot create afile: File exists");
//! ```

use std::error::Error;

/// `error` and each of its causes, joined by `: `, leaving out a cause
/// whose message the text before it already contains.
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let message = error.to_string();
        if !message.is_empty() && !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = error.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error with a message and maybe a cause.
    #[derive(Debug)]
    struct E(String, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn chain(messages: &[&str]) -> E {
        messages
            .iter()
            .rev()
            .fold(None, |cause, m| {
                Some(E((*m).to_owned(), cause.map(Box::new)))
            })
            .unwrap()
    }

    #[test]
    fn causes_already_said_are_left_out() {
        let error = chain(&[
            "cannot migrate",
            "while executing migration 1: error returned from database: relation \"events\" already exists",
            "error returned from database: relation \"events\" already exists",
            "relation \"events\" already exists",
        ]);
        assert_eq!(
            describe(&error),
            "cannot migrate: while executing migration 1: error returned from database: \
             relation \"events\" already exists"
        );
    }

    #[test]
    fn causes_not_said_are_joined() {
        let error = chain(&[
            "cannot listen on 1.2.3.4:80",
            "Cannot assign requested address",
        ]);
        assert_eq!(
            describe(&error),
            "cannot listen on 1.2.3.4:80: Cannot assign requested address"
        );
        assert_eq!(describe(&chain(&["alone"])), "alone");
    }
}
