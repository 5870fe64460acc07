//! User-supplied text on pages. Client ids, versions, model names, reasons and payloads come
//! from devices: a right-to-left override (U+202E) in a client id would flip the text around
//! it, and zero-width or control characters make two different ids look the same. Such text
//! is HTML-escaped, every invisible or control character is shown as `⟨U+XXXX⟩`, and inline
//! text is isolated in `<bdi>` (HTML's bidirectional isolate), so it cannot reorder its
//! neighbours.

use std::fmt::Write as _;

/// Characters that render as nothing, or reorder text: Unicode format characters (Cf) that
/// occur in practice, plus C0/C1 controls. Checked by hand-kept ranges (no Unicode tables).
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1F}' | '\u{7F}'..='\u{9F}' | '\u{AD}' | '\u{34F}' | '\u{61C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// `s` as HTML text: escaped, invisible characters made visible (`keep_lines`: newlines and
/// tabs stay, for `<pre>` blocks).
pub fn visible_html(s: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            // The same entities as askama's own HTML escaper.
            '<' => out.push_str("&#60;"),
            '>' => out.push_str("&#62;"),
            '&' => out.push_str("&#38;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' | '\r' if keep_lines => out.push(c),
            c if is_invisible(c) => {
                let _ = write!(out, "<span class=\"invisible\" title=\"invisible character\">⟨U+{:04X}⟩</span>", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` with invisible characters replaced by `⟨U+XXXX⟩` as plain text (for places that take
/// no markup, such as `<title>`; still escaped by the template).
pub fn visible_plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_invisible(c) {
            let _ = write!(out, "⟨U+{:04X}⟩", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Template filters: `{{ x|user }}` for inline user text (isolated in `<bdi>`), `{{ x|user_block }}`
/// inside `<pre>` blocks (isolated by the block itself), `{{ x|visible }}` where no markup may go.
pub mod filters {
    use askama::filters::Safe;

    #[askama::filter_fn]
    pub fn visible<T: std::fmt::Display>(s: T, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(super::visible_plain(&s.to_string()))
    }

    #[askama::filter_fn]
    pub fn user<T: std::fmt::Display>(s: T, _: &dyn askama::Values) -> askama::Result<Safe<String>> {
        Ok(Safe(format!("<bdi>{}</bdi>", super::visible_html(&s.to_string(), false))))
    }

    #[askama::filter_fn]
    pub fn user_block<T: std::fmt::Display>(s: T, _: &dyn askama::Values) -> askama::Result<Safe<String>> {
        Ok(Safe(super::visible_html(&s.to_string(), true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_and_invisible_characters_are_shown_and_escaped() {
        assert_eq!(visible_html("phone\u{202E}gpj.exe", false), "phone<span class=\"invisible\" title=\"invisible character\">⟨U+202E⟩</span>gpj.exe");
        assert_eq!(visible_html("a\u{200B}b\u{0}c", false).matches("⟨U+").count(), 2);
        assert_eq!(visible_html("<script>&\"'", false), "&#60;script&#62;&#38;&#34;&#39;");
        assert_eq!(visible_html("line1\nline2\tx", true), "line1\nline2\tx");
        assert!(visible_html("line1\nline2", false).contains("⟨U+000A⟩"));
        assert_eq!(visible_html("Ünïcødé 日本 🙂", false), "Ünïcødé 日本 🙂");
    }
}
