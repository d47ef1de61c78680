//! Where HSS (and IAM) live: the SDK's region table, or an explicit endpoint.
//!
//! Region endpoints are always `https`. Plain `http` is accepted only in an explicit override
//! (simulators, private test endpoints), never inferred.

use reqwest::Url;

/// Regions of the official SDK's HSS region table, with their top-level domain.
const REGIONS: &[(&str, &str)] = &[
    ("cn-north-9", "com"),
    ("cn-north-1", "com"),
    ("cn-north-4", "com"),
    ("cn-southwest-2", "com"),
    ("cn-east-2", "com"),
    ("cn-east-3", "com"),
    ("cn-east-4", "com"),
    ("cn-south-1", "com"),
    ("cn-south-2", "com"),
    ("ap-southeast-1", "com"),
    ("ap-southeast-2", "com"),
    ("ap-southeast-3", "com"),
    ("na-mexico-1", "com"),
    ("af-south-1", "com"),
    ("sa-brazil-1", "com"),
    ("la-south-2", "com"),
    ("cn-south-4", "com"),
    ("la-north-2", "com"),
    ("tr-west-1", "com"),
    ("cn-north-2", "com"),
    ("ap-southeast-4", "com"),
    ("ae-ad-1", "com"),
    ("me-east-1", "com"),
    ("cn-east-5", "com"),
    ("my-kualalumpur-1", "com"),
    ("eu-west-101", "eu"),
    ("ru-moscow-1", "com"),
    ("cn-north-12", "com"),
    ("cn-southwest-3", "com"),
    ("cn-north-11", "com"),
    ("af-north-1", "com"),
    ("ap-southeast-5", "com"),
];

/// Errors quote the endpoint as given, with any userinfo (`user:password@`) replaced by `***`
/// and at most [`SHOWN`] characters, so a credential written into a URL never reaches a log,
/// an Event or a status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error(
        "failed to find region {0:?} in the HSS region table; set an explicit endpoint instead"
    )]
    UnknownRegion(String),
    #[error("failed to parse endpoint {0:?} as an http(s) URL")]
    InvalidUrl(String),
    #[error("failed to use endpoint {0:?}: only http and https are supported")]
    UnsupportedScheme(String),
    #[error("failed to use endpoint {0:?}: it must not carry a path, query or credentials")]
    NotABaseUrl(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::UnknownRegion(_) => "unknown_region",
            Error::InvalidUrl(_) | Error::UnsupportedScheme(_) | Error::NotABaseUrl(_) => {
                "invalid_endpoint"
            }
        }
    }
}

/// A base URL (scheme, host, port) for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: Url,
}

impl Endpoint {
    /// HSS in `region`, from the SDK's table.
    pub fn for_region(region: &str) -> Result<Self, Error> {
        Self::service_in_region("hss", region)
    }

    /// IAM in `region` (for IAM tokens).
    pub fn iam_for_region(region: &str) -> Result<Self, Error> {
        Self::service_in_region("iam", region)
    }

    fn service_in_region(service: &str, region: &str) -> Result<Self, Error> {
        let (name, tld) = REGIONS
            .iter()
            .find(|(name, _)| *name == region)
            .ok_or_else(|| Error::UnknownRegion(region.to_string()))?;
        Self::parse(&format!("https://{service}.{name}.myhuaweicloud.{tld}"))
    }

    /// An explicit endpoint such as `https://hss.example.internal` or `http://127.0.0.1:8443`.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let base = Url::parse(url.trim()).map_err(|_| Error::InvalidUrl(redacted(url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::UnsupportedScheme(redacted(url)));
        }
        if base.host_str().is_none()
            || !matches!(base.path(), "" | "/")
            || base.query().is_some()
            || !base.username().is_empty()
            || base.password().is_some()
        {
            return Err(Error::NotABaseUrl(redacted(url)));
        }
        Ok(Self { base })
    }

    /// Known region names.
    pub fn regions() -> impl Iterator<Item = &'static str> {
        REGIONS.iter().map(|(name, _)| *name)
    }

    /// The value of the `Host` header: host, plus the port when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    pub fn is_https(&self) -> bool {
        self.base.scheme() == "https"
    }

    /// The full URL for an already-encoded path and query.
    pub fn url(&self, encoded_path: &str, encoded_query: &str) -> String {
        let mut url = format!(
            "{}://{}{}",
            self.base.scheme(),
            self.host_header(),
            encoded_path
        );
        if !encoded_query.is_empty() {
            url.push('?');
            url.push_str(encoded_query);
        }
        url
    }
}

/// How many characters of a refused endpoint an error quotes.
pub const SHOWN: usize = 120;

/// `url` as an error may quote it: userinfo replaced by `***` (whether or not the URL parses),
/// control characters dropped, at most [`SHOWN`] characters. Pure.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***{}", &authority[at..]),
        None => authority.to_string(),
    };
    // A '@' after the authority (in a path or query) can still carry a secret when the input
    // is not a URL at all: keep only what follows the last one.
    let tail = match tail.rfind('@') {
        Some(at) => format!("***{}", &tail[at..]),
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
        .chars()
        .filter(|c| !c.is_control())
        .take(SHOWN)
        .collect()
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.base.scheme(), self.host_header())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_table_matches_the_sdk() {
        assert_eq!(Endpoint::regions().count(), 32);
        assert_eq!(
            Endpoint::for_region("cn-north-4")
                .expect("known")
                .to_string(),
            "https://hss.cn-north-4.myhuaweicloud.com"
        );
        assert_eq!(
            Endpoint::for_region("eu-west-101")
                .expect("known")
                .to_string(),
            "https://hss.eu-west-101.myhuaweicloud.eu"
        );
        assert_eq!(
            Endpoint::iam_for_region("ap-southeast-1")
                .expect("known")
                .to_string(),
            "https://iam.ap-southeast-1.myhuaweicloud.com"
        );
        assert_eq!(
            Endpoint::for_region("mars-1"),
            Err(Error::UnknownRegion("mars-1".into()))
        );
    }

    #[test]
    fn explicit_endpoints_table() {
        // (input, ok, reason)
        let cases = [
            ("http://127.0.0.1:8443", true, "http allowed when explicit"),
            (
                "https://hss.example.internal/",
                true,
                "trailing slash is fine",
            ),
            ("ftp://x", false, "only http(s)"),
            ("https://x/v5", false, "no path"),
            ("https://u:p@x", false, "no credentials in URLs"),
            ("not a url", false, "garbage"),
        ];
        for (input, ok, reason) in cases {
            assert_eq!(Endpoint::parse(input).is_ok(), ok, "{reason}");
        }
        let ep = Endpoint::parse("http://127.0.0.1:8443").expect("ok");
        assert_eq!(ep.host_header(), "127.0.0.1:8443");
        assert_eq!(
            ep.url("/v5/p/common/task", "a=1"),
            "http://127.0.0.1:8443/v5/p/common/task?a=1"
        );
        let ep = Endpoint::parse("https://hss.example:443").expect("ok");
        assert_eq!(
            ep,
            Endpoint::parse("https://hss.example").expect("ok"),
            "the default port is the same endpoint"
        );
        assert_eq!(
            ep.host_header(),
            "hss.example",
            "default port is not part of Host"
        );
    }

    #[test]
    fn errors_never_echo_userinfo() {
        // (input, reason)
        let cases = [
            ("https://AK:SECRET@hss.example", "user and password"),
            ("https://SECRET@hss.example/v5", "user only, with a path"),
            ("ftp://AK:SECRET@x", "an unsupported scheme"),
            ("https://AK:SECRET@[::1", "unparseable"),
            ("AK:SECRET@hss.example", "no scheme"),
            ("https://x/?k=AK:SECRET@y", "an '@' in the query"),
        ];
        for (input, why) in cases {
            let err = Endpoint::parse(input).expect_err(why);
            let text = err.to_string();
            assert!(!text.contains("SECRET"), "{why}: {text}");
            assert!(text.contains("***"), "{why}: {text}");
        }
        assert_eq!(
            redacted("https://u:p@hss.example:8443/x"),
            "https://***@hss.example:8443/x"
        );
        assert_eq!(redacted(&"a".repeat(500)).len(), SHOWN, "bounded");
        assert_eq!(
            redacted("http://h\n\u{7}"),
            "http://h",
            "no control characters"
        );
    }
}
