//! SQL statements made safe to log: every literal replaced, so no value a query carried reaches
//! a log line, an alert or a label.

/// The longest normalized statement kept (bytes; cut at a character boundary, `…` appended).
pub const MAX_STATEMENT: usize = 1024;

/// `statement` with its literals replaced by `?`: quoted strings (`'…'` with `''` inside, `E'…'`,
/// `$tag$…$tag$`), numbers that are not part of a name, and `TRUE`/`FALSE` stay as keywords.
/// Placeholders (`$1`, `?`) and identifiers (`"quoted"` too) are kept; runs of white space
/// become one space. Comments are dropped (they may carry values). Capped at [`MAX_STATEMENT`].
pub fn normalize(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len().min(MAX_STATEMENT) + 4);
    let bytes = statement.as_bytes();
    let mut i = 0;
    let mut space = false;
    let push_space = |out: &mut String, space: &mut bool| {
        if *space && !out.is_empty() {
            out.push(' ');
        }
        *space = false;
    };
    while i < bytes.len() {
        if out.len() >= MAX_STATEMENT {
            out.push('…');
            return out;
        }
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                space = true;
                i += 1;
            }
            // `-- comment` to the end of the line.
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                space = true;
            }
            // `/* comment */`.
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(bytes.len());
                space = true;
            }
            // A string: `'…'`, with `''` for a quote inside (and `E'…'` with `\'`).
            b'\'' => {
                let escapes = i > 0 && matches!(bytes[i - 1], b'E' | b'e');
                if escapes {
                    // The `E` was pushed as a word character: take it back.
                    out.pop();
                }
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if escapes => i += 2,
                        b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                        b'\'' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                push_space(&mut out, &mut space);
                out.push('?');
            }
            // A dollar-quoted string (`$$…$$`, `$tag$…$tag$`), or a placeholder (`$1`).
            b'$' => {
                let tag_end = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(end)
                        if bytes[end] == b'$'
                            && !bytes[i + 1..end].first().is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &statement[i..=end];
                        let body = end + 1;
                        let close = statement[body..].find(tag).map(|p| body + p + tag.len());
                        i = close.unwrap_or(bytes.len());
                        push_space(&mut out, &mut space);
                        out.push('?');
                    }
                    _ => {
                        push_space(&mut out, &mut space);
                        out.push('$');
                        i += 1;
                        while i < bytes.len() && bytes[i].is_ascii_digit() {
                            out.push(bytes[i] as char);
                            i += 1;
                        }
                    }
                }
            }
            // A quoted identifier: kept.
            b'"' => {
                let end = statement[i + 1..]
                    .find('"')
                    .map_or(bytes.len(), |p| i + 1 + p + 1);
                push_space(&mut out, &mut space);
                out.push_str(&statement[i..end]);
                i = end;
            }
            // A number not inside a name: `42`, `3.14`, `1e9`, `0x1F`.
            b'0'..=b'9' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'.'
                        || ((bytes[i] == b'-' || bytes[i] == b'+')
                            && matches!(bytes[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                push_space(&mut out, &mut space);
                out.push('?');
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                // A word (a keyword or a name, digits inside it kept).
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                push_space(&mut out, &mut space);
                out.push_str(&statement[start..i]);
            }
            _ => {
                push_space(&mut out, &mut space);
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

/// The operation of `statement`: its first keyword, upper-cased (`SELECT`, `INSERT`, `WITH`),
/// or `"other"` when it starts with none.
pub fn operation_of(statement: &str) -> String {
    operation_in(statement, &mut [0; OPERATION_LEN]).to_owned()
}

/// The longest operation [`operation_of`] reads: longer first words are cut here.
const OPERATION_LEN: usize = 16;

/// [`operation_of`] into `buf`, without allocating (the path of every `Dependency::query`).
pub(crate) fn operation_in<'b>(statement: &str, buf: &'b mut [u8; OPERATION_LEN]) -> &'b str {
    let mut n = 0;
    for b in statement.trim_start().bytes().take(OPERATION_LEN) {
        if !b.is_ascii_alphabetic() {
            break;
        }
        buf[n] = b.to_ascii_uppercase();
        n += 1;
    }
    if n == 0 {
        return "other";
    }
    // Only ASCII letters were written.
    std::str::from_utf8(&buf[..n]).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_replaced_and_the_shape_kept() {
        let cases = [
            (
                "SELECT * FROM users WHERE email = 'a@b.c' AND id = 42",
                "SELECT * FROM users WHERE email = ? AND id = ?",
            ),
            (
                "select  name,\n\tage from t where x in (1, 2.5, -3e10)",
                "select name, age from t where x in (?, ?, -?)",
            ),
            (
                "UPDATE t SET note = 'it''s' WHERE id = $1",
                "UPDATE t SET note = ? WHERE id = $1",
            ),
            (
                "SELECT E'a\\'b' , $$dollar 'q'$$, $tag$x$tag$",
                "SELECT ? , ?, ?",
            ),
            (
                "SELECT \"Col 1\" FROM t2 -- secret 'x'\nLIMIT 10",
                "SELECT \"Col 1\" FROM t2 LIMIT ?",
            ),
            ("SELECT /* token=abc */ v1 FROM t_9", "SELECT v1 FROM t_9"),
            ("SELECT pg_sleep(0.25)", "SELECT pg_sleep(?)"),
            ("SELECT 0x1F, 'unterminated", "SELECT ?, ?"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize(input), expected, "{input:?}");
        }
    }

    #[test]
    fn no_canary_survives() {
        let canary = "CANARY-7f3a9";
        for q in [
            format!("SELECT 1 WHERE a = '{canary}'"),
            format!("SELECT $x${canary}$x$"),
            format!("SELECT E'{canary}\\''"),
            format!("SELECT 1 /* {canary} */"),
            format!("SELECT 1 -- {canary}"),
        ] {
            let n = normalize(&q);
            assert!(!n.contains("CANARY"), "{q:?} -> {n:?}");
        }
    }

    #[test]
    fn long_statements_are_capped() {
        let q = format!("SELECT {}", "col, ".repeat(1000));
        let n = normalize(&q);
        assert!(n.len() <= MAX_STATEMENT + '…'.len_utf8() + 8, "{}", n.len());
        assert!(n.ends_with('…'));
    }

    #[test]
    fn operations_are_the_first_keyword() {
        assert_eq!(operation_of("  select 1"), "SELECT");
        assert_eq!(operation_of("WITH x AS (SELECT 1) SELECT * FROM x"), "WITH");
        assert_eq!(operation_of("(SELECT 1)"), "other");
    }
}
