//! JSON strings written straight into an answer's buffer, for answers built by
//! hand (a bulk get writes a hundred keys and values into one buffer).
//!
//! The output is byte for byte what `serde_json` writes for the same string; the
//! difference is speed on the common value, ASCII with nothing to escape. Bytes
//! are checked 16 at a time in blocks the compiler vectorizes, and such a value
//! is copied whole, without a separate UTF-8 check; `serde_json` looks each byte
//! up in a table, and `String::from_utf8_lossy` decodes each one.

/// The bytes checked at a time.
const BLOCK: usize = 16;

/// Appends `text` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    while let Some(at) = next_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..at]);
        escape(out, bytes[at]);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends a value as a JSON string of text: as it is when it is UTF-8, else with
/// each invalid sequence replaced by U+FFFD (as `String::from_utf8_lossy` does).
pub fn write_text(out: &mut Vec<u8>, value: &[u8]) {
    if all_blocks(value, plain) {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value);
        out.push(b'"');
        return;
    }
    match std::str::from_utf8(value) {
        Ok(text) => write_str(out, text),
        Err(_) => write_str(out, &String::from_utf8_lossy(value)),
    }
}

/// Whether JSON needs `byte` escaped in a string: a quote, a backslash, or a
/// control character. Bytes of multi-byte UTF-8 characters never are.
/// (Non-short-circuit operators, so that a block of them vectorizes.)
fn needs_escape(byte: u8) -> bool {
    (byte < 0x20) | (byte == b'"') | (byte == b'\\')
}

/// Whether `byte` is ASCII that JSON takes as it is.
fn plain(byte: u8) -> bool {
    (byte < 0x80) & !needs_escape(byte)
}

/// Whether every byte passes `test`, checked a block at a time.
fn all_blocks(bytes: &[u8], test: fn(u8) -> bool) -> bool {
    let (blocks, tail) = bytes.as_chunks::<BLOCK>();
    blocks
        .iter()
        .all(|block| block.iter().fold(true, |all, &b| all & test(b)))
        && tail.iter().all(|&b| test(b))
}

/// The first byte at or after `from` that needs escaping.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = &bytes[from..];
    // Whole blocks without one are skipped; the block holding the first escape
    // (or the tail) is then searched byte by byte.
    let (blocks, _) = rest.as_chunks::<BLOCK>();
    let clean = BLOCK
        * blocks
            .iter()
            .take_while(|block| block.iter().fold(true, |all, &b| all & !needs_escape(b)))
            .count();
    rest[clean..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|at| from + clean + at)
}

/// Appends the escape of one byte that needs it, as `serde_json` writes it.
fn escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        0x08 => b'b',
        0x0c => b'f',
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn written(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_as_serde_json_does() {
        assert_eq!(written(""), r#""""#);
        assert_eq!(written("plain"), r#""plain""#);
        assert_eq!(written("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            written("\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}é"),
            "\"\\n\\r\\t\\b\\f\\u0000\\u001f\u{7f}é\""
        );
        // An escape in each position of a block, and past the last whole block.
        for at in 0..40 {
            let mut text = "x".repeat(40);
            text.replace_range(at..=at, "\"");
            assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_replaced() {
        let mut out = Vec::new();
        write_text(&mut out, b"ok\xff\"");
        assert_eq!(out, "\"ok\u{fffd}\\\"\"".as_bytes());
    }

    proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(text in any::<String>()) {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn any_bytes_are_written_as_their_lossy_text(
            value in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut out = Vec::new();
            write_text(&mut out, &value);
            let expected = serde_json::to_vec(&String::from_utf8_lossy(&value)).unwrap();
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn mostly_ascii_values_are_written_as_their_text(text in "[ -~\n\"\\\\é]{0,100}") {
            let mut out = Vec::new();
            write_text(&mut out, text.as_bytes());
            prop_assert_eq!(out, serde_json::to_vec(&text).unwrap());
        }

        #[test]
        fn mostly_ascii_strings_are_written_as_serde_json_writes_them(
            text in "[ -~\n\"\\\\]{0,100}",
        ) {
            prop_assert_eq!(written(&text), serde_json::to_string(&text).unwrap());
        }
    }
}
