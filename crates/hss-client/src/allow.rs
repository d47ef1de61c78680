//! Which endpoints credentials may be sent to: an allow-list of HSS endpoints, by default the
//! official endpoint of every region in the SDK's table. Pure; the operator's tenant policy
//! and `submit` both decide with it.

use super::endpoint::Endpoint;

/// Endpoints (scheme, host and port) that credentials may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllowList<'a> {
    /// Empty: the official endpoints.
    endpoints: &'a [Endpoint],
}

impl<'a> AllowList<'a> {
    /// The official HSS endpoint of every known region.
    pub fn official() -> Self {
        Self { endpoints: &[] }
    }

    /// Exactly `endpoints`; an empty list means the official endpoints.
    pub fn new(endpoints: &'a [Endpoint]) -> Self {
        Self { endpoints }
    }

    /// Whether `endpoint` is on the list (compared as scheme, host and port; a default port
    /// written out is the same endpoint).
    pub fn allows(&self, endpoint: &Endpoint) -> bool {
        if self.endpoints.is_empty() {
            return Endpoint::regions()
                .filter_map(|r| Endpoint::for_region(r).ok())
                .any(|e| e == *endpoint);
        }
        self.endpoints.contains(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str) -> Endpoint {
        Endpoint::parse(url).expect("valid endpoint")
    }

    #[test]
    fn the_default_is_the_official_endpoints_and_a_list_replaces_it() {
        let listed = [ep("https://hss.example.internal:8443")];
        let custom = AllowList::new(&listed);
        // (list, endpoint, allowed, reason)
        let cases = [
            (
                AllowList::official(),
                "https://hss.cn-north-4.myhuaweicloud.com",
                true,
                "an official endpoint",
            ),
            (
                AllowList::official(),
                "https://hss.eu-west-101.myhuaweicloud.eu",
                true,
                "the .eu exception",
            ),
            (
                AllowList::official(),
                "https://hss.cn-north-4.myhuaweicloud.com:443",
                true,
                "the default port written out",
            ),
            (
                AllowList::official(),
                "http://hss.cn-north-4.myhuaweicloud.com",
                false,
                "the official host over plain http is another endpoint",
            ),
            (
                AllowList::official(),
                "https://hss.cn-north-4.myhuaweicloud.com:8443",
                false,
                "another port",
            ),
            (
                AllowList::official(),
                "https://hss.cn-north-4.myhuaweicloud.com.attacker.example",
                false,
                "a look-alike host",
            ),
            (custom, "https://hss.example.internal:8443", true, "listed"),
            (
                custom,
                "https://hss.cn-north-4.myhuaweicloud.com",
                false,
                "a list replaces the official endpoints",
            ),
        ];
        for (list, url, allowed, why) in cases {
            assert_eq!(list.allows(&ep(url)), allowed, "{why}");
        }
    }
}
