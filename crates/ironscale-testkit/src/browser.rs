//! A headless user agent for login flows: a cookie jar (cookies match by host and path, never by
//! port, as in real browsers), no automatic redirects (each hop is followed here and recorded),
//! and form posts for the test provider's login and consent pages.
//!
//! Blocking (the harness is synchronous): do not use it from inside an async runtime (wrap it in
//! `spawn_blocking` there).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::Url;

use crate::error::{Context, Error, Result};
use crate::lab::Host;

/// Redirects [`Browser::get`] follows before giving up.
pub const MAX_REDIRECTS: usize = 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds an HTTP client whose sockets live in network namespace `ns` (`None`: the caller's):
/// the client's worker thread is started from a thread that entered the namespace, and the
/// threads it starts later inherit it.
pub(crate) fn http_client(ns: Option<&str>, jar: Option<Arc<Jar>>) -> Result<Client> {
    let build = move || -> Result<Client> {
        let mut b = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(REQUEST_TIMEOUT);
        if let Some(jar) = jar {
            b = b.cookie_provider(jar);
        }
        b.build().context("cannot build HTTP client")
    };
    let Some(ns) = ns else {
        return build();
    };
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<Client> {
        let f = std::fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter network namespace {path}"))?;
        build()
    })
    .join()
    .map_err(|_| Error::msg("HTTP client thread panicked"))?
}

/// A response at the end of a navigation.
#[derive(Clone, Debug)]
pub struct Page {
    /// Status of the last response received.
    pub status: u16,
    /// The last URL: the one that answered, or, when [`Page::stopped`], the redirect target the
    /// browser did not request.
    pub url: String,
    /// Body of the last response received.
    pub body: String,
    /// Every request made, in order: (status, URL). Redirect targets are absolute.
    pub hops: Vec<(u16, String)>,
    /// True when the navigation stopped before requesting `url` because it starts with a
    /// [`Browser::stop_at_prefix`] prefix.
    pub stopped: bool,
    /// Headers of the last response received (names lower case).
    pub headers: Vec<(String, String)>,
}

impl Page {
    /// The first URL (among the hops, then the final URL) that starts with `prefix`.
    pub fn hop(&self, prefix: &str) -> Option<&str> {
        self.hops
            .iter()
            .map(|(_, u)| u.as_str())
            .chain(std::iter::once(self.url.as_str()))
            .find(|u| u.starts_with(prefix))
    }

    /// The last URL (among the hops and the final URL) that starts with `prefix`.
    pub fn last_hop(&self, prefix: &str) -> Option<&str> {
        self.hops
            .iter()
            .map(|(_, u)| u.as_str())
            .chain(std::iter::once(self.url.as_str()))
            .rfind(|u| u.starts_with(prefix))
    }

    /// The query parameters of the final URL.
    pub fn query(&self) -> BTreeMap<String, String> {
        query_params(&self.url)
    }

    /// A header of the last response (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The absolute `action` of the `<form id="ID">` in the body, if there is one.
    pub fn form_action(&self, id: &str) -> Option<String> {
        let action = form_action(&self.body, id)?;
        Url::parse(&self.url)
            .ok()?
            .join(&action)
            .ok()
            .map(String::from)
    }
}

/// The query parameters of `url` (decoded; a repeated key keeps its last value).
pub fn query_params(url: &str) -> BTreeMap<String, String> {
    Url::parse(url)
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// One query parameter of `url`.
pub fn query_param(url: &str, key: &str) -> Option<String> {
    query_params(url).remove(key)
}

/// `url` with query parameter `key` set to `value` (replaced where present, else appended):
/// for tampering with a callback (`state`, `code`).
pub fn with_query_param(url: &str, key: &str, value: &str) -> Result<String> {
    let mut u = Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
    let mut pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    match pairs.iter_mut().find(|(k, _)| k == key) {
        Some(p) => p.1 = value.to_owned(),
        None => pairs.push((key.to_owned(), value.to_owned())),
    }
    u.query_pairs_mut().clear().extend_pairs(pairs);
    Ok(u.into())
}

enum Method {
    Get,
    Post(Vec<(String, String)>),
}

/// The headless browser.
pub struct Browser {
    client: Client,
    jar: Arc<Jar>,
    stop_at: Vec<String>,
}

impl Browser {
    /// A browser with an empty cookie jar, in the test's own network namespace.
    pub fn new() -> Result<Browser> {
        Self::build(None)
    }

    /// A browser whose connections are made inside network namespace `ns` (`ip netns` name).
    /// Needs root.
    pub fn in_netns(ns: &str) -> Result<Browser> {
        Self::build(Some(ns))
    }

    /// A browser inside `host`'s namespace (e.g. the lab hub, where `ironscale serve` and an
    /// [`crate::OidcProvider::start_in`] provider run).
    pub fn in_host(host: &Host) -> Result<Browser> {
        Self::build(Some(host.ns()))
    }

    fn build(ns: Option<&str>) -> Result<Browser> {
        let jar = Arc::new(Jar::default());
        let client = http_client(ns, Some(jar.clone()))?;
        Ok(Browser {
            client,
            jar,
            stop_at: Vec::new(),
        })
    }

    /// Stops following redirects before any hop whose URL starts with `prefix` (e.g. the
    /// relying party's redirect URI): the returned [`Page`] then has `stopped` set and `url` the
    /// target. May be called more than once.
    pub fn stop_at_prefix(&mut self, prefix: impl Into<String>) -> &mut Self {
        self.stop_at.push(prefix.into());
        self
    }

    /// Forgets every [`Browser::stop_at_prefix`].
    pub fn clear_stop_at(&mut self) -> &mut Self {
        self.stop_at.clear();
        self
    }

    /// The `Cookie` header the browser would send to `url`.
    pub fn cookie_header(&self, url: &str) -> Option<String> {
        let u = Url::parse(url).ok()?;
        self.jar
            .cookies(&u)
            .and_then(|v| v.to_str().ok().map(str::to_owned))
    }

    /// The underlying client (no redirects, this browser's cookie jar).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// GET `url` and follow redirects (at most [`MAX_REDIRECTS`]) to the final page.
    pub fn get(&self, url: &str) -> Result<Page> {
        let mut hops = Vec::new();
        self.navigate(Method::Get, url, &mut hops, true)
    }

    /// GET `url` without following a redirect.
    pub fn get_no_follow(&self, url: &str) -> Result<Page> {
        let mut hops = Vec::new();
        self.navigate(Method::Get, url, &mut hops, false)
    }

    /// POST `fields` (urlencoded) to `url` and follow redirects.
    pub fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> Result<Page> {
        let mut hops = Vec::new();
        let fields = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.navigate(Method::Post(fields), url, &mut hops, true)
    }

    /// Logs in through the test provider: GET `start_url` following redirects; when the page
    /// holds `<form id="login">`, posts `username`/`password` to it and follows redirects
    /// again; a consent page (`<form id="consent">`, shown with `"auto_consent": false`) is
    /// approved. Returns the last page (the relying party's, or the stop point), its `hops`
    /// covering the whole flow. Wrong credentials: the provider's login page again, status 401
    /// (with `id="error"`). A provider session from an earlier login skips the form.
    pub fn login(&self, start_url: &str, username: &str, password: &str) -> Result<Page> {
        let mut hops = Vec::new();
        let mut page = self.navigate(Method::Get, start_url, &mut hops, true)?;
        let mut posted_login = false;
        // login, consent, and a second consent after prompt=consent at most
        for _ in 0..4 {
            if page.stopped {
                break;
            }
            let method_url = if let Some(action) = page.form_action("login") {
                if posted_login {
                    break; // rejected: the form again
                }
                posted_login = true;
                let fields = vec![
                    ("username".to_owned(), username.to_owned()),
                    ("password".to_owned(), password.to_owned()),
                ];
                (Method::Post(fields), action)
            } else if let Some(action) = page.form_action("consent") {
                (Method::Post(Vec::new()), action)
            } else {
                break;
            };
            page = self.navigate(method_url.0, &method_url.1, &mut hops, true)?;
        }
        Ok(page)
    }

    fn navigate(
        &self,
        mut method: Method,
        url: &str,
        hops: &mut Vec<(u16, String)>,
        follow: bool,
    ) -> Result<Page> {
        let mut url = Url::parse(url).with_context(|| format!("bad URL {url:?}"))?;
        let mut redirects = 0;
        loop {
            let req = match &method {
                Method::Get => self.client.get(url.clone()),
                Method::Post(fields) => self.client.post(url.clone()).form(fields),
            };
            let what = match &method {
                Method::Get => "GET",
                Method::Post(_) => "POST",
            };
            let resp = req.send().with_context(|| format!("{what} {url}"))?;
            let status = resp.status().as_u16();
            let headers: Vec<(String, String)> = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let location = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp
                .text()
                .with_context(|| format!("{what} {url}: reading the body"))?;
            hops.push((status, url.to_string()));
            let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
            let page = |url: String, stopped: bool, body: String, hops: &Vec<(u16, String)>| Page {
                status,
                url,
                body,
                hops: hops.clone(),
                stopped,
                headers: headers.clone(),
            };
            let Some(location) = location.filter(|_| redirect && follow) else {
                return Ok(page(url.to_string(), false, body, hops));
            };
            let next = url
                .join(&location)
                .with_context(|| format!("{what} {url}: bad Location {location:?}"))?;
            if self
                .stop_at
                .iter()
                .any(|p| next.as_str().starts_with(p.as_str()))
            {
                return Ok(page(next.to_string(), true, body, hops));
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                bail!(
                    "more than {MAX_REDIRECTS} redirects; hops: {:?}",
                    hops.iter()
                        .map(|(s, u)| format!("{s} {u}"))
                        .collect::<Vec<_>>()
                );
            }
            // 307/308 repeat the request; the others turn into GET.
            if !matches!(status, 307 | 308) {
                method = Method::Get;
            }
            url = next;
        }
    }
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("stop_at", &self.stop_at)
            .finish_non_exhaustive()
    }
}

/// The (HTML-unescaped) `action` of the `<form>` whose `id` is `id`.
fn form_action(html: &str, id: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("<form") {
        let start = from + i + "<form".len();
        let end = start + lower[start..].find('>')?;
        let attrs = parse_attrs(&html[start..end]);
        from = end;
        if attrs.get("id").map(String::as_str) == Some(id) {
            return attrs.get("action").cloned();
        }
    }
    None
}

/// Attributes of a start tag (the text between the tag name and `>`), values unescaped.
fn parse_attrs(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let ns = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if ns == i {
            break;
        }
        let name = s[ns..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                let ve = b[vs..]
                    .iter()
                    .position(|&c| c == q)
                    .map_or(b.len(), |p| vs + p);
                value = unescape(&s[vs..ve]);
                i = (ve + 1).min(b.len());
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = unescape(&s[vs..i]);
            }
        }
        out.entry(name).or_insert(value);
    }
    out
}

/// Decodes HTML character references (`&#38;`, `&#x26;`, `&amp;`, `&lt;`, `&gt;`, `&quot;`,
/// `&apos;`); anything else stays as it is.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let decoded = tail.find(';').and_then(|j| {
            let name = &tail[1..j];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, j + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &tail[len..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_form_action_by_id() {
        let html = r#"<h1>x</h1><form method="post" action="/a/abort"><button>no</button></form>
<FORM id="login" method=post action="/realms/t&#47;interaction/u1/login?x=1&amp;y=2"></form>
<form id='consent' action='/c'>"#;
        assert_eq!(
            form_action(html, "login").as_deref(),
            Some("/realms/t/interaction/u1/login?x=1&y=2")
        );
        assert_eq!(form_action(html, "consent").as_deref(), Some("/c"));
        assert_eq!(form_action(html, "other"), None);
        assert_eq!(form_action("<p>no forms</p>", "login"), None);
    }

    #[test]
    fn unescapes_references() {
        assert_eq!(unescape("a&#38;b&#x3c;&lt;&unknown;&"), "a&b<<&unknown;&");
    }

    #[test]
    fn query_helpers() {
        let u = "http://127.0.0.1:1/cb?code=c1&state=s%201&iss=http%3A%2F%2Fx";
        let q = query_params(u);
        assert_eq!(q.get("state").map(String::as_str), Some("s 1"));
        assert_eq!(q.get("iss").map(String::as_str), Some("http://x"));
        let t = with_query_param(u, "state", "evil").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(query_param(&t, "state").as_deref(), Some("evil"));
        assert_eq!(query_param(&t, "code").as_deref(), Some("c1"));
        let t = with_query_param(u, "extra", "1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(query_param(&t, "extra").as_deref(), Some("1"));
    }

    #[test]
    fn page_hop_lookup() {
        let p = Page {
            status: 303,
            url: "http://rp/cb?code=1".into(),
            body: String::new(),
            hops: vec![
                (303, "http://idp/auth?x=1".into()),
                (200, "http://idp/interaction/u".into()),
            ],
            stopped: true,
            headers: vec![("location".into(), "http://rp/cb?code=1".into())],
        };
        assert_eq!(p.hop("http://idp/auth"), Some("http://idp/auth?x=1"));
        assert_eq!(p.hop("http://rp/"), Some("http://rp/cb?code=1"));
        assert_eq!(p.last_hop("http://idp/"), Some("http://idp/interaction/u"));
        assert_eq!(p.header("Location"), Some("http://rp/cb?code=1"));
        assert_eq!(p.hop("http://none"), None);
    }
}
