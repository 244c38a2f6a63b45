use crate::__bindings::hubhost::hub::types as wit;

/// The HTTP request that opened the caller's connection (ASP.NET's
/// `Context.GetHttpContext().Request`): its headers, query string and cookies. For WebSockets it
/// is the upgrade request; for Server-Sent Events and long polling, the request that started the
/// connection. Get it with [`crate::Context::request`].
///
/// ```no_run
/// use hubhost_sdk::prelude::*;
/// # pub struct H;
/// # #[hub] impl H {
/// fn client_info(ctx: &Context) -> String {
///     let request = ctx.request();
///     let agent = request.header("x-signalr-user-agent").unwrap_or("unknown client");
///     let room = request.query("room").unwrap_or("lobby");
///     format!("{agent} in {room}")
/// }
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    headers: Vec<(String, String)>,
    query: Vec<(String, String)>,
    cookies: Vec<(String, String)>,
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

impl Request {
    pub(crate) fn from_wit(request: wit::HttpRequest) -> Self {
        Self {
            headers: request.headers,
            query: request.query,
            cookies: request.cookies,
        }
    }

    /// The first value of a header; names match whatever their case.
    ///
    /// ```
    /// # let request = hubhost_sdk::Request::default();
    /// let agent = request.header("User-Agent");
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, &name.to_ascii_lowercase())
    }

    /// Every header as (lower-case name, value), in the order they came; a repeated header
    /// appears once per value.
    ///
    /// ```
    /// # let request = hubhost_sdk::Request::default();
    /// for (name, value) in request.headers() {
    ///     println!("{name}: {value}");
    /// }
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of a query string parameter, decoded. The transport's own (`id`,
    /// `access_token`) are not there.
    ///
    /// ```
    /// # let request = hubhost_sdk::Request::default();
    /// let room = request.query("room").unwrap_or("lobby");
    /// ```
    pub fn query(&self, name: &str) -> Option<&str> {
        first(&self.query, name)
    }

    /// Every query string parameter as (name, value), in order.
    ///
    /// ```
    /// # let request = hubhost_sdk::Request::default();
    /// let count = request.query_pairs().len();
    /// ```
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }

    /// A cookie's value.
    ///
    /// ```
    /// # let request = hubhost_sdk::Request::default();
    /// let theme = request.cookie("theme");
    /// ```
    pub fn cookie(&self, name: &str) -> Option<&str> {
        first(&self.cookies, name)
    }

    /// Every cookie as (name, value), in order.
    ///
    /// ```
    /// # let request = hubhost_sdk::Request::default();
    /// let count = request.cookies().len();
    /// ```
    pub fn cookies(&self) -> &[(String, String)] {
        &self.cookies
    }
}
