//! The HTTP request that opened a connection, kept for hubs that ask for it (ASP.NET's
//! `Context.GetHttpContext()`).

/// Headers and query string of the request that opened a connection.
///
/// Kept as the text it came in (one allocation each), and taken apart only when a hub asks: every
/// connection keeps one, few hubs read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `name: value` lines, names in lower case.
    headers: Box<str>,
    /// The raw query string, without `?`.
    query: Box<str>,
}

/// Query parameters that belong to the transport, not to the application.
const TRANSPORT_PARAMETERS: &[&str] = &["id", "access_token"];

impl Request {
    /// Keeps `headers` (names and values that are valid text) and the raw `query`.
    pub fn new<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>, query: &str) -> Self {
        let mut text = String::new();
        for (name, value) in headers {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            // Header values cannot hold line breaks, so lines delimit them.
            if value.contains(['\r', '\n']) {
                continue;
            }
            text.push_str(&name.to_ascii_lowercase());
            text.push_str(": ");
            text.push_str(value);
            text.push('\n');
        }
        Self {
            headers: text.into(),
            query: query.into(),
        }
    }

    /// The headers, names in lower case, in the order they came.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.headers
            .lines()
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }

    /// The query string's parameters, decoded, but for the transport's own.
    pub fn query(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .filter(|(name, _)| !TRANSPORT_PARAMETERS.contains(&name.as_ref()))
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect()
    }

    /// The cookies of every `cookie` header, in order.
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.headers
            .lines()
            .filter_map(|line| line.strip_prefix("cookie: "))
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Request;

    #[test]
    fn headers_query_and_cookies_come_apart() {
        let request = Request::new(
            [
                ("User-Agent", b"test/1".as_slice()),
                ("Cookie", b"a=1; b = two".as_slice()),
                ("X-Bad", b"\xff".as_slice()),
            ],
            "id=abc&room=caf%C3%A9&access_token=t&x",
        );
        assert_eq!(
            request.headers(),
            [
                ("user-agent".to_owned(), "test/1".to_owned()),
                ("cookie".to_owned(), "a=1; b = two".to_owned())
            ]
        );
        assert_eq!(
            request.query(),
            [
                ("room".to_owned(), "café".to_owned()),
                ("x".to_owned(), String::new())
            ]
        );
        assert_eq!(
            request.cookies(),
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "two".to_owned())
            ]
        );
    }
}
