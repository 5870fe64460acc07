//! Redaction while serializing a borrowed [`Json`] tree (issue 15): the same key and value
//! rules as [`Redactor::redact_value`], applied as the text is written, so a tree is never
//! copied or changed to be redacted. `write_redacted(v)` gives the bytes that
//! `redact_value(v)` followed by `serde_json::to_string` gives (tested below and by the `rows`
//! fuzz target's comparison).

use super::{OnRedacted, PathRef, REDACTED, Redactor};
use crate::pipeline::json::{Json, write_str, written};

/// The path being written, kept inline for the depths records have.
type Path<'t> = smallvec::SmallVec<[PathRef<'t>; 8]>;

impl Redactor {
    /// Appends `v`'s JSON text with every sensitive key's value replaced by [`REDACTED`] and
    /// the credentials in every other string cut out. Returns how many values changed.
    pub(crate) fn write_redacted(&self, v: &Json<'_>, out: &mut String) -> usize {
        self.write_at(v, out, &mut Path::new(), &mut None)
    }

    /// [`Self::write_redacted`], calling `on_redacted` with the path of every value that
    /// changed (in document order).
    pub(crate) fn write_redacted_recording(&self, v: &Json<'_>, out: &mut String, on_redacted: &mut OnRedacted<'_>) -> usize {
        self.write_at(v, out, &mut Path::new(), &mut Some(on_redacted))
    }

    /// `v` written redacted into a new string.
    pub(crate) fn redacted_text(&self, v: &Json<'_>) -> String {
        written(|out| {
            self.write_redacted(v, out);
        })
    }

    fn write_at<'t>(&self, v: &'t Json<'_>, out: &mut String, path: &mut Path<'t>, on: &mut Option<&mut OnRedacted<'_>>) -> usize {
        match v {
            Json::Object(entries) => {
                let mut count = 0;
                out.push('{');
                for (i, (k, child)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    k.write_quoted(out);
                    out.push(':');
                    let step = PathRef::Key(k.as_str());
                    if self.is_sensitive(k.as_str()) {
                        write_str(REDACTED, out);
                        count += 1;
                        report(path, step, on);
                    } else {
                        count += self.write_child(child, step, out, path, on);
                    }
                }
                out.push('}');
                count
            }
            Json::Array(items) => {
                let mut count = 0;
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    count += self.write_child(item, PathRef::Index(i), out, path, on);
                }
                out.push(']');
                count
            }
            Json::String(t) => match self.scrub(t.as_str(), 0) {
                Some(scrubbed) => {
                    write_str(&scrubbed, out);
                    if let Some(on) = on.as_deref_mut() {
                        on(path);
                    }
                    1
                }
                None => {
                    t.write_quoted(out);
                    0
                }
            },
            other => {
                other.write(out);
                0
            }
        }
    }

    fn write_child<'t>(&self, child: &'t Json<'_>, step: PathRef<'t>, out: &mut String, path: &mut Path<'t>, on: &mut Option<&mut OnRedacted<'_>>) -> usize {
        // Paths are only kept when they are reported.
        if on.is_none() {
            return self.write_at(child, out, path, on);
        }
        path.push(step);
        let count = self.write_at(child, out, path, on);
        path.pop();
        count
    }
}

fn report<'t>(path: &mut Path<'t>, step: PathRef<'t>, on: &mut Option<&mut OnRedacted<'_>>) {
    if let Some(on) = on.as_deref_mut() {
        path.push(step);
        on(path);
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The tree writer and the in-place walk agree: the same text, count and paths.
    fn agree(r: &Redactor, text: &str) {
        let Ok(mut value) = serde_json::from_str::<Value>(text) else { return };
        let arena = crate::pipeline::json::Bump::new();
        let tree = Json::parse(text.as_bytes(), &arena).unwrap();
        let mut walked = Vec::new();
        let count = r.redact_value_recording(&mut value, &mut |p| walked.push(super::super::json_pointer(p)));
        let mut written = Vec::new();
        let mut out = String::new();
        let n = r.write_redacted_recording(&tree, &mut out, &mut |p| written.push(super::super::json_pointer(p)));
        assert_eq!(out, serde_json::to_string(&value).unwrap(), "{text}");
        assert_eq!(n, count, "{text}");
        walked.sort();
        written.sort();
        assert_eq!(written, walked, "{text}");
    }

    #[test]
    fn writes_what_the_walk_leaves() {
        let r = Redactor::default();
        for text in [
            r#"{"password":{"deep":[1,2]},"note":"Authorization: Bearer abcdef123456","n":1.50,"list":[{"api_key":"k"},"x"]}"#,
            r#"{"a":{"b":{"token":null}},"url":"https://u:pw@example.test/?access_token=zzz&x=1","s":"line\nbreak \"q\""}"#,
            r#"["Bearer abcdefghijkl", {"secret": "s"}, "plain"]"#,
            r#""password=hunter2""#,
            r#"{"json":"{\"password\":\"p\"}"}"#,
            "12",
        ] {
            agree(&r, text);
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_walk_on_generated_documents(
            keys in prop::collection::vec("(password|token|title|a|api_key|notes)", 1..6),
            values in prop::collection::vec("(Bearer [a-z0-9]{12}|plain|x=1&token=abc|\\{\"secret\":\"q\"\\}|[a-z \\n\"]{0,8})", 1..6),
        ) {
            let inner: Vec<String> = keys.iter().zip(values.iter().cycle()).map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap())).collect();
            let text = format!("{{\"outer\":{{{}}},\"list\":[{}]}}", inner.join(","), values.iter().map(|v| serde_json::to_string(v).unwrap()).collect::<Vec<_>>().join(","));
            agree(&Redactor::default(), &text);
        }
    }
}
