//! The small HTML pages a person meets (login links, OIDC results): one
//! skeleton and one escaping rule for every crate that serves one.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// A page titled `title` (escaped here) with `body` (HTML the caller built,
/// escaping what it took from elsewhere with [`escape`]); never cached.
pub fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let title = escape(title);
    let page = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ironscale: {title}</title></head>\
         <body><h1>{title}</h1>{body}</body></html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `s` safe in HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain"), "plain");
    }
}
