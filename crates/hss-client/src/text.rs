//! Bounds on text a server sends: error codes, messages, request ids, names and reasons are
//! cut to a known length and stripped of control characters where they are decoded, so nothing
//! a server says can grow a status, an Event or a log line without limit, or forge a line.

/// Longest error code kept (HSS's look like `HSS.0001` or `APIGW.0308`).
pub const CODE: usize = 64;
/// Longest request id kept (HSS's are 32 hex digits).
pub const REQUEST_ID: usize = 128;
/// Longest message or failure reason kept.
pub const MESSAGE: usize = 512;
/// Longest name or id kept (a Kubernetes name is at most 253).
pub const NAME: usize = 253;

/// `text` with control characters (newlines included) replaced by spaces and cut to at most
/// `max` characters, the cut marked with `…`. Pure.
pub fn bounded(text: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (n, c) in text.chars().enumerate() {
        if n + 1 > max {
            out.pop();
            out.push('…');
            return out;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// [`bounded`] over an optional value.
pub fn bounded_opt(text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| bounded(t, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_cut_and_cannot_break_lines() {
        // (input, max, output, reason)
        let cases = [
            ("HSS.0001", CODE, "HSS.0001", "a real code is kept as is"),
            ("", 5, "", "empty"),
            ("abcde", 5, "abcde", "exactly the bound"),
            ("abcdef", 5, "abcd…", "one over: cut and marked"),
            (
                "line\nforged: level=ERROR",
                64,
                "line forged: level=ERROR",
                "no newline",
            ),
            ("扫描任务失败", 4, "扫描任…", "characters, not bytes"),
            (
                "a\u{0}b\u{1b}[31m",
                64,
                "a b [31m",
                "NUL and escape sequences",
            ),
        ];
        for (input, max, output, why) in cases {
            assert_eq!(bounded(input, max), output, "{why}");
            assert!(bounded(input, max).chars().count() <= max, "{why}");
        }
        let huge = "x".repeat(5_000_000);
        assert_eq!(bounded(&huge, MESSAGE).chars().count(), MESSAGE);
        assert_eq!(bounded_opt(None, 3), None);
        assert_eq!(bounded("abc", 0), "");
    }
}
