//! One message parsed for display: the headers people read, the text part, the HTML part sanitised
//! with ammonia (no scripts, event handlers, styles, forms or `javascript:` URLs survive; remote
//! images are dropped until the user asks for them), and the attachments.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mail_parser::{HeaderName, MessageParser, MimeHeaders};
use serde::Serialize;

use crate::mail::header_text;

/// Largest message the viewer parses (bigger ones still download whole as raw source).
pub const MAX_VIEW_SIZE: u64 = 64 * 1024 * 1024;

#[derive(Debug, Serialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Serialize)]
pub struct Attachment {
    /// Position among the message's attachments: the id in URLs.
    pub index: usize,
    pub filename: String,
    pub content_type: String,
    pub size: usize,
}

#[derive(Debug, Serialize)]
pub struct View {
    pub id: String,
    pub folder: String,
    pub seen: bool,
    pub subject: String,
    pub from: String,
    pub to: String,
    pub date: String,
    pub headers: Vec<Header>,
    pub text: Option<String>,
    /// Sanitised; present when the message has an HTML part.
    pub html: Option<String>,
    /// The HTML part refers to images on the network (shown only with `images=1`).
    pub has_remote_images: bool,
    pub attachments: Vec<Attachment>,
}

/// The headers shown above a message, in this order.
const SHOWN: [HeaderName<'static>; 6] =
    [HeaderName::From, HeaderName::To, HeaderName::Cc, HeaderName::ReplyTo, HeaderName::Date, HeaderName::Subject];

/// Parses `raw` for display; `images`: keep remote images in the HTML part.
pub fn view(raw: &[u8], id: &str, folder: &str, seen: bool, images: bool) -> View {
    let parser = MessageParser::default();
    let Some(m) = parser.parse(raw) else {
        let text = Some(String::from_utf8_lossy(raw).into_owned());
        return View {
            id: id.into(),
            folder: folder.into(),
            seen,
            subject: String::new(),
            from: String::new(),
            to: String::new(),
            date: String::new(),
            headers: Vec::new(),
            text,
            html: None,
            has_remote_images: false,
            attachments: Vec::new(),
        };
    };
    let text_of = |name: HeaderName| m.header(name).map(header_text).unwrap_or_default();
    let headers = SHOWN
        .iter()
        .filter_map(|h| m.header(h.clone()).map(|v| Header { name: h.as_str().to_owned(), value: header_text(v) }))
        .collect();
    // An HTML part proper (a text-only message's "HTML body" is its text converted by the parser).
    let html_part = m.html_part(0).filter(|p| p.is_text_html()).and_then(|_| m.body_html(0));
    let (html, has_remote_images) = match html_part {
        Some(h) => {
            let (clean, remote) = sanitize(&h, images);
            (Some(clean), remote)
        }
        None => (None, false),
    };
    View {
        id: id.into(),
        folder: folder.into(),
        seen,
        subject: text_of(HeaderName::Subject),
        from: text_of(HeaderName::From),
        to: text_of(HeaderName::To),
        date: m.date().map(|d| d.to_rfc3339()).unwrap_or_default(),
        headers,
        text: m.body_text(0).map(|t| t.into_owned()),
        html,
        has_remote_images,
        attachments: attachments(&m),
    }
}

fn attachments(m: &mail_parser::Message<'_>) -> Vec<Attachment> {
    m.attachments()
        .enumerate()
        .map(|(index, part)| Attachment {
            index,
            filename: part.attachment_name().map_or_else(|| format!("attachment-{}", index + 1), str::to_owned),
            content_type: part
                .content_type()
                .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("octet-stream")))
                .unwrap_or_else(|| "application/octet-stream".into()),
            size: part.contents().len(),
        })
        .collect()
}

/// The body and file name of attachment `index`.
pub fn attachment(raw: &[u8], index: usize) -> Option<(Vec<u8>, String)> {
    let m = MessageParser::default().parse(raw)?;
    let part = m.attachments().nth(index)?;
    let name = part.attachment_name().map_or_else(|| format!("attachment-{}", index + 1), str::to_owned);
    Some((part.contents().to_vec(), name))
}

/// True for a URL that would fetch from the network (anything but `data:` and `cid:`).
fn is_remote(url: &str) -> bool {
    let u = url.trim_start().to_ascii_lowercase();
    !(u.starts_with("data:") || u.starts_with("cid:") || u.starts_with('#'))
}

/// ammonia's safe subset; remote image sources dropped unless `images`. Returns the HTML and whether
/// it referred to remote images.
pub fn sanitize(html: &str, images: bool) -> (String, bool) {
    let remote = Arc::new(AtomicBool::new(false));
    let seen = remote.clone();
    let mut builder = ammonia::Builder::default();
    builder.link_rel(Some("noopener noreferrer nofollow")).add_url_schemes(["data", "cid"]);
    builder.attribute_filter(move |element, attribute, value| {
        // `data:` only as an inline image; elsewhere (a link) it could carry a document.
        let is_data = value.trim_start().get(..5).is_some_and(|p| p.eq_ignore_ascii_case("data:"));
        if is_data && !(element == "img" && attribute == "src" && value.trim_start()[5..].starts_with("image/")) {
            return None;
        }
        let is_source = matches!(attribute, "src" | "srcset" | "background" | "poster");
        if is_source && element != "a" && is_remote(value) {
            seen.store(true, Ordering::Relaxed);
            if !images {
                return None;
            }
        }
        Some(value.into())
    });
    let clean = builder.clean(html).to_string();
    (clean, remote.load(Ordering::Relaxed))
}

/// `Content-Disposition` for a download: always `attachment`, an ASCII fallback name and the real name
/// percent-encoded as RFC 6266 / RFC 8187 say, so no name can inject a header or a path.
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._- ".contains(c) { c } else { '_' })
        .take(100)
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes().take(400) {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_drops_scripts_handlers_and_remote_images() {
        let dirty = r#"<p onclick="x()">hi<script>alert(1)</script><a href="javascript:alert(1)">l</a>
            <img src="http://127.0.0.1:9/canary.png"><img src="data:image/png;base64,AAAA"><a href="data:text/html,x">d</a><style>*{}</style></p>"#;
        let (clean, remote) = sanitize(dirty, false);
        assert!(remote);
        for bad in ["script", "onclick", "javascript:", "127.0.0.1", "<style", "data:text"] {
            assert!(!clean.contains(bad), "{bad} survived: {clean}");
        }
        assert!(clean.contains("data:image/png"), "inline images stay: {clean}");
        let (with_images, _) = sanitize(dirty, true);
        assert!(with_images.contains("http://127.0.0.1:9/canary.png"));
    }

    #[test]
    fn html_only_messages_show_their_html_and_text_only_ones_none() {
        let html_only = b"Subject: h\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>there</b><script>x()</script></p>\r\n";
        let v = view(html_only, "1", "INBOX", false, false);
        let html = v.html.expect("the HTML part is shown");
        assert!(html.contains("<b>there</b>") && !html.contains("script"), "{html}");
        let text_only = b"Subject: t\r\n\r\n<b>not html</b>\r\n";
        let v = view(text_only, "2", "INBOX", false, false);
        assert!(v.html.is_none(), "a text part is never rendered as HTML");
        assert_eq!(v.text.as_deref().map(str::trim), Some("<b>not html</b>"));
    }

    #[test]
    fn disposition_is_safe_for_any_name() {
        let d = content_disposition("../evil\"\r\nX: y é.txt");
        assert!(d.starts_with("attachment; filename=\""));
        assert!(!d.contains('\r') && !d.contains('\n') && !d.contains("/"));
        assert!(d.contains("filename*=UTF-8''..%2Fevil%22%0D%0AX%3A%20y%20%C3%A9.txt"), "{d}");
    }
}
