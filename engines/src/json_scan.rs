//! Incremental detection of the end of a JSON value, so constrained decoding can stop the
//! moment the top-level object or array closes instead of waiting for an end token.

/// Feeds output bytes and reports when the first top-level object/array is complete.
#[derive(Debug, Default, Clone)]
#[allow(clippy::struct_excessive_bools)] // a scanner's state flags, not configuration
pub struct JsonScanner {
    depth: u32,
    started: bool,
    in_string: bool,
    escaped: bool,
    complete: bool,
}

impl JsonScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more output; returns whether the value is now complete.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if self.complete {
                break;
            }
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' if self.started => self.in_string = true,
                b'{' | b'[' => {
                    self.started = true;
                    self.depth += 1;
                }
                b'}' | b']' if self.started => {
                    self.depth = self.depth.saturating_sub(1);
                    self.complete = self.depth == 0;
                }
                _ => {}
            }
        }
        self.complete
    }
}

#[cfg(test)]
mod tests {
    use super::JsonScanner;

    #[test]
    fn completes_on_closing_brace_only_outside_strings() {
        let mut s = JsonScanner::new();
        assert!(!s.feed(br#"{"a": "x}y\"}", "b": [1, {"c": 2}"#));
        assert!(!s.feed(b"]"));
        assert!(s.feed(b"}"));
        assert!(s.feed(b" trailing"));
    }

    #[test]
    fn split_escape_across_pieces() {
        let mut s = JsonScanner::new();
        assert!(!s.feed(br#"{"a": "\"#));
        assert!(!s.feed(br#""}"#));
        assert!(s.feed(br#""}"#));
    }
}
