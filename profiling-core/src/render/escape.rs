//! Escaping text for markup: the one helper for everything written into SVG, XML or HTML
//! text and attribute values.

use std::borrow::Cow;

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by character references, safe inside an
/// element and inside a single- or double-quoted attribute of HTML, SVG or XML. Borrowed
/// when nothing needs escaping.
pub fn markup(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five_markup_characters() {
        assert_eq!(
            markup(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert!(matches!(markup("plain µs text"), Cow::Borrowed("plain µs text")));
        // `&` is escaped once, first: no double escaping of the references it makes.
        assert_eq!(markup("&lt;"), "&amp;lt;");
    }
}
