//! Which listeners require a PROXY protocol header, and from whom: `proxy_protocol`,
//! `proxy_from` and `proxy_header_timeout` in the config file, `--proxy-protocol` on the
//! command line.

use std::time::Duration;

use heird::proxy::{Cidr, ProxyProtocol};
use serde::Deserialize;

/// `proxy_protocol` as written: `true` (every listener), `false`, or listener names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum ProxyListeners {
    All(bool),
    Names(Vec<String>),
}

/// The PROXY protocol keys, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySpec {
    /// `None`: off; `Some(None)`: every listener; `Some(Some(names))`: those.
    pub listeners: Option<Option<Vec<String>>>,
    /// `proxy_from`; empty: any source.
    pub from: Vec<Cidr>,
    /// `proxy_header_timeout`.
    pub timeout: Option<Duration>,
}

impl ProxySpec {
    /// From the file's keys; `Err((key, value, reason))` for the first bad one.
    pub(super) fn from_file(
        listeners: Option<&ProxyListeners>,
        from: Option<&[String]>,
        timeout: Option<Duration>,
    ) -> Result<ProxySpec, (&'static str, String, String)> {
        let listeners = match listeners {
            None | Some(ProxyListeners::All(false)) => None,
            Some(ProxyListeners::All(true)) => Some(None),
            Some(ProxyListeners::Names(names)) => {
                if names.is_empty() {
                    let why = "must name at least one listener (or be true, for all of them)";
                    return Err(("proxy_protocol", "[]".into(), why.into()));
                }
                if let Some(bad) = names.iter().find(|n| n.is_empty() || n.contains(':')) {
                    return Err(("proxy_protocol", bad.clone(), "not a LISTEN_FDNAMES name".into()));
                }
                Some(Some(names.clone()))
            }
        };
        let from = from
            .unwrap_or_default()
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e: heird::proxy::CidrError| ("proxy_from", c.clone(), e.to_string()))
            })
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(ProxySpec {
            listeners,
            from,
            timeout,
        })
    }

    /// The library's settings (`None`: off). `all` is `--proxy-protocol`: every listener.
    /// An error when `proxy_from` or `proxy_header_timeout` is set but nothing turns the header on.
    pub fn settings(&self, all: bool) -> Result<Option<ProxyProtocol>, String> {
        let listeners = if all { Some(None) } else { self.listeners.clone() };
        let Some(listeners) = listeners else {
            if !self.from.is_empty() || self.timeout.is_some() {
                return Err(
                    "proxy_from and proxy_header_timeout need proxy_protocol (or --proxy-protocol)".into(),
                );
            }
            return Ok(None);
        };
        let mut p = ProxyProtocol::default();
        p.listeners = listeners;
        p.from = self.from.clone();
        if let Some(t) = self.timeout {
            p.timeout = t;
        }
        Ok(Some(p))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::super::Config;

    fn parse(t: &str) -> Result<Config, String> {
        Config::parse(t, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn proxy_keys() {
        let c = parse("").unwrap();
        assert_eq!(c.proxy_protocol(false).unwrap(), None);
        let all = c.proxy_protocol(true).unwrap().unwrap();
        assert_eq!((all.listeners, all.from.len()), (None, 0));
        let c = parse(
            "proxy_protocol = [\"public\"]\nproxy_from = [\"127.0.0.1/32\", \"fd00::/8\"]\nproxy_header_timeout = \"2s\"\n",
        )
        .unwrap();
        let p = c.proxy_protocol(false).unwrap().unwrap();
        assert_eq!(p.listeners, Some(vec!["public".to_string()]));
        assert_eq!(p.from.len(), 2);
        assert_eq!(p.timeout, Duration::from_secs(2));
        // --proxy-protocol: every listener, with the file's sources.
        let p = c.proxy_protocol(true).unwrap().unwrap();
        assert_eq!((p.listeners, p.from.len()), (None, 2));
        let p = parse("proxy_protocol = true")
            .unwrap()
            .proxy_protocol(false)
            .unwrap()
            .unwrap();
        assert_eq!(p.listeners, None);
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert_eq!(
            parse("proxy_protocol = false")
                .unwrap()
                .proxy_protocol(false)
                .unwrap(),
            None
        );
    }

    #[test]
    fn bad_proxy_keys_name_the_key() {
        let e = parse("proxy_from = [\"10.0.0.0/33\"]\nproxy_protocol = true").unwrap_err();
        assert!(
            e.contains("proxy_from") && e.contains("10.0.0.0/33") && e.contains("prefix"),
            "{e}"
        );
        let e = parse("proxy_from = [\"balancer\"]").unwrap_err();
        assert!(e.contains("proxy_from") && e.contains("balancer"), "{e}");
        let e = parse("proxy_protocol = []").unwrap_err();
        assert!(e.contains("proxy_protocol") && e.contains("at least one"), "{e}");
        let e = parse("proxy_protocol = [\"a:b\"]").unwrap_err();
        assert!(e.contains("proxy_protocol"), "{e}");
        let e = parse("proxy_protocol = 3").unwrap_err();
        assert!(e.contains("proxy_protocol"), "{e}");
        let e = parse("proxy_header_timeout = \"0s\"").unwrap_err();
        assert!(e.contains("proxy_header_timeout"), "{e}");
        // Sources without the header turned on: an error at serve, not silently ignored.
        let c = parse("proxy_from = [\"10.0.0.0/8\"]").unwrap();
        let e = c.proxy_protocol(false).unwrap_err().to_string();
        assert!(e.contains("need proxy_protocol"), "{e}");
        assert!(c.proxy_protocol(true).unwrap().is_some());
    }
}
