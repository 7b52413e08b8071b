//! Reading one cookie out of a request's `Cookie` header lines.

use http::HeaderMap;
use http::header::COOKIE;

/// The value of cookie `name` in `headers`, if the request carries it.
///
/// Looks through every `Cookie` line (HTTP/2 gateways may split them) and
/// takes the first pair named `name`. Surrounding double quotes are dropped, as
/// RFC 6265 4.1.1 allows them around a value. Lines that are not valid UTF-8 are
/// skipped: cookie names are ASCII tokens, so such a line cannot hold a match
/// we could have been asked for.
pub(crate) fn find<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    for line in headers.get_all(COOKIE) {
        let Ok(line) = line.to_str() else { continue };
        for pair in line.split(';') {
            let Some((n, v)) = pair.split_once('=') else {
                continue;
            };
            if n.trim() == name {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(v);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(COOKIE, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn finds_the_named_cookie() {
        let h = headers(&["a=1; session=abc; b=2"]);
        assert_eq!(find(&h, "session"), Some("abc"));
        assert_eq!(find(&h, "a"), Some("1"));
        assert_eq!(find(&h, "sess"), None);
        assert_eq!(find(&h, "c"), None);
    }

    #[test]
    fn looks_through_every_line_and_strips_quotes() {
        let h = headers(&["a=1", "session=\"q\""]);
        assert_eq!(find(&h, "session"), Some("q"));
        assert_eq!(find(&headers(&["x=a=b"]), "x"), Some("a=b"));
        assert_eq!(find(&headers(&["flag; x=1"]), "x"), Some("1"));
        assert_eq!(find(&HeaderMap::new(), "x"), None);
    }
}
