//! Query-string parameters.

use std::borrow::Cow;

/// The parameters of a query string, percent-decoded.
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Parses a query string (without the `?`).
    pub fn parse(query: &'a str) -> Self {
        Query {
            pairs: form_urlencoded::parse(query.as_bytes()).collect(),
        }
    }

    /// The first value of a parameter, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
            .filter(|v| !v.is_empty())
    }
}
