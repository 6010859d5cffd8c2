//! The page's files, compiled into the crate: served from memory, compressed once on first use,
//! with an `ETag` so a reload costs a `304`.

use std::io::Write as _;
use std::sync::OnceLock;

use sha2::Digest as _;

use crate::admin::AdminResponse;

/// The Content-Security-Policy of the page and its files: its own script and style only, data
/// from its own origin only, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
pub(crate) struct Asset {
    content_type: &'static str,
    body: &'static [u8],
    gzip: OnceLock<Vec<u8>>,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(content_type: &'static str, body: &'static str) -> Self {
        Self {
            content_type,
            body: body.as_bytes(),
            gzip: OnceLock::new(),
            etag: OnceLock::new(),
        }
    }

    /// The file as it is stored.
    #[cfg(test)]
    pub(crate) fn body(&self) -> &'static [u8] {
        self.body
    }

    /// The file gzip-compressed (made once).
    pub(crate) fn gzipped(&self) -> &[u8] {
        self.gzip.get_or_init(|| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(self.body);
            encoder.finish().unwrap_or_default()
        })
    }

    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let digest = sha2::Sha256::digest(self.body);
            format!("\"{}\"", hex::encode(&digest[..12]))
        })
    }

    /// The answer to a `GET` of this file: `304` when the client holds it (`If-None-Match`),
    /// gzip-compressed when it accepts that.
    pub(crate) fn respond(
        &self,
        if_none_match: Option<&str>,
        accept_encoding: Option<&str>,
    ) -> AdminResponse {
        let etag = self.etag();
        let fresh = if_none_match.is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
        let response = if fresh {
            AdminResponse::empty(304)
        } else if accept_encoding.is_some_and(accepts_gzip) {
            AdminResponse::new(200, self.content_type, self.gzipped())
                .with_header("content-encoding", "gzip")
        } else {
            AdminResponse::new(200, self.content_type, self.body)
        };
        response
            .with_header("etag", etag)
            .with_header("vary", "accept-encoding")
            // Revalidated every time: an upgrade of the service serves its own page at once.
            .with_header("cache-control", "no-cache")
            .with_header("content-security-policy", CONTENT_SECURITY_POLICY)
            .with_header("x-content-type-options", "nosniff")
            .with_header("x-frame-options", "DENY")
            .with_header("referrer-policy", "no-referrer")
    }
}

/// Whether an `Accept-Encoding` value takes gzip (and does not refuse it with `q=0`).
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|part| {
        let mut pieces = part.split(';').map(str::trim);
        let coding = pieces.next().unwrap_or("");
        let refused = pieces.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// `GET /qiflow/`.
pub(crate) static INDEX: Asset = Asset::new(
    "text/html; charset=utf-8",
    include_str!("assets/index.html"),
);
/// `GET /qiflow/app.js`.
pub(crate) static SCRIPT: Asset = Asset::new(
    "text/javascript; charset=utf-8",
    include_str!("assets/app.js"),
);
/// `GET /qiflow/app.css`.
pub(crate) static STYLE: Asset =
    Asset::new("text/css; charset=utf-8", include_str!("assets/app.css"));

/// The file a path under `/qiflow/` names (`app.js`, `app.css`), if any.
pub(crate) fn named(name: &str) -> Option<&'static Asset> {
    match name {
        "app.js" => Some(&SCRIPT),
        "app.css" => Some(&STYLE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_weighs_at_most_150_kb_compressed() {
        let total: usize = [&INDEX, &SCRIPT, &STYLE]
            .iter()
            .map(|a| a.gzipped().len())
            .sum();
        assert!(total <= 150 * 1024, "{total} bytes compressed");
        let mut decoder = flate2::read::GzDecoder::new(SCRIPT.gzipped());
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut decoder, &mut plain).unwrap_or_default();
        assert_eq!(plain, SCRIPT.body());
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_runs_no_inline_script() {
        let html = std::str::from_utf8(INDEX.body()).unwrap_or_default();
        assert!(html.contains("src=\"/qiflow/app.js\""), "{html}");
        assert!(html.contains("href=\"/qiflow/app.css\""), "{html}");
        for asset in [&INDEX, &SCRIPT, &STYLE] {
            let text = std::str::from_utf8(asset.body()).unwrap_or_default();
            // Absolute URLs: only XML namespace names (SVG's), which are never fetched.
            for scheme in ["http://", "https://"] {
                for (at, _) in text.match_indices(scheme) {
                    let url = &text[at..];
                    assert!(
                        url.starts_with("http://www.w3.org/"),
                        "{}: an absolute URL",
                        &url[..url.len().min(60)]
                    );
                }
            }
            for outside in ["//cdn", "@import", "eval(", "new Function"] {
                assert!(!text.contains(outside), "{outside} in an asset");
            }
        }
        assert!(
            !html.contains("<script>"),
            "an inline script would break the CSP"
        );
        assert!(
            !html.contains("style=\""),
            "an inline style would break the CSP"
        );
    }

    #[test]
    fn a_client_holding_the_file_gets_304_and_gzip_only_when_it_accepts_it() {
        let first = SCRIPT.respond(None, Some("gzip, deflate, br"));
        assert_eq!(first.status(), 200);
        assert_eq!(first.header("content-encoding"), Some("gzip"));
        let etag = first.header("etag").map(str::to_owned);
        assert_eq!(SCRIPT.respond(etag.as_deref(), None).status(), 304);
        let plain = SCRIPT.respond(Some("\"other\""), Some("gzip;q=0, br"));
        assert_eq!(plain.status(), 200);
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.body(), SCRIPT.body());
        assert_eq!(
            plain.header("content-security-policy"),
            Some(CONTENT_SECURITY_POLICY)
        );
    }
}
