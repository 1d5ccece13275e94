//! How stack-backup reaches a database server that runs in a container
//! whose port is not published.
//!
//! The URL of a component with `container =` is the one the application
//! uses inside the compose network (`postgres://app@db:5432/app`): its
//! host is a name only that network resolves. stack-backup resolves it
//! the same way, from the engine: when the host is a name the container
//! answers to on one of its networks (its container name, its hostname,
//! its network aliases, the compose service name among them), the
//! connection goes to the container's address on that network. IP
//! literals, `localhost` and other names are used as written, so a
//! published port keeps working.
//!
//! Contract: resolved at each call (`docker inspect`), never stored: the
//! address changes when the container is re-created. A container that is
//! not running, or not there, is an error naming it.

use std::net::IpAddr;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::process;

/// The address to connect to for `host` of a server running in
/// `container`: the container's address when `host` is one of its names,
/// else `host` as written. `component` names the component in errors.
pub fn resolve(component: &str, container: &str, host: &str) -> Result<Resolved> {
    if !is_name(host) {
        return Ok(Resolved::AsWritten);
    }
    let out = process::output(
        component,
        "docker",
        &[
            "inspect",
            "--type",
            "container",
            "--format",
            "{{json .}}",
            container,
        ],
    )
    .map_err(|e| {
        Error::component(
            component,
            format!(
                "container `{container}` (its server's address): {}",
                e.detail()
            ),
        )
    })?;
    let inspect: Value = serde_json::from_str(&out).map_err(|e| {
        Error::component(
            component,
            format!("cannot parse `docker inspect {container}`: {e}"),
        )
    })?;
    pick(&inspect, host)
        .map_err(|why| Error::component(component, format!("container `{container}`: {why}")))
}

/// What [`resolve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Connect to the host as the URL writes it.
    AsWritten,
    /// The host names the container: connect to this address.
    Container(IpAddr),
}

impl Resolved {
    /// The host to connect to: the container's address, or `host`.
    #[must_use]
    pub fn host(&self, host: &str) -> String {
        match self {
            Self::AsWritten => host.to_string(),
            Self::Container(ip) => ip.to_string(),
        }
    }
}

/// A host name, not an IP literal and not `localhost` (those reach what
/// they say from this host too). An empty host is a socket: as written.
fn is_name(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    !bare.is_empty()
        && !bare.starts_with('/')
        && bare.parse::<IpAddr>().is_err()
        && !bare.eq_ignore_ascii_case("localhost")
}

/// The address for `host` in a container's `docker inspect` object.
fn pick(inspect: &Value, host: &str) -> std::result::Result<Resolved, String> {
    let host = host.to_ascii_lowercase();
    let same = |v: &Value| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(&host));
    let running = inspect["State"]["Running"].as_bool().unwrap_or(false);
    if !running {
        let status = inspect["State"]["Status"].as_str().unwrap_or("not running");
        return Err(format!(
            "is {status}, not running: start it (`docker start`), the database in it is reached at its address on its network"
        ));
    }
    let name = inspect["Name"].as_str().unwrap_or_default();
    let id = inspect["Id"].as_str().unwrap_or_default();
    let everywhere = name.trim_start_matches('/').eq_ignore_ascii_case(&host)
        || same(&inspect["Config"]["Hostname"])
        || (host.len() >= 12 && id.starts_with(&host));
    let Some(networks) = inspect["NetworkSettings"]["Networks"].as_object() else {
        return Ok(Resolved::AsWritten);
    };
    let address = |n: &Value| {
        [&n["IPAddress"], &n["GlobalIPv6Address"]]
            .into_iter()
            .filter_map(|a| a.as_str())
            .find_map(|a| a.parse::<IpAddr>().ok())
    };
    // Map order is by network name: the same container gives the same
    // answer each time.
    let on_network = networks.values().find_map(|n| {
        let answers = ["Aliases", "DNSNames"]
            .iter()
            .filter_map(|k| n[*k].as_array())
            .flatten()
            .any(&same);
        if answers {
            address(n)
        } else {
            None
        }
    });
    match on_network.or_else(|| {
        everywhere
            .then(|| networks.values().find_map(address))
            .flatten()
    }) {
        Some(ip) => Ok(Resolved::Container(ip)),
        None if everywhere => Err("has no address on any network".into()),
        None => Ok(Resolved::AsWritten),
    }
}

/// The span of the host in `scheme://[user[:pw]@]host[:port][/…]`.
fn host_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let at = authority.rfind('@').map_or(0, |i| i + 1);
    let hostport = &authority[at..];
    let len = if hostport.starts_with('[') {
        hostport.find(']').map_or(hostport.len(), |i| i + 1)
    } else {
        hostport.find(':').unwrap_or(hostport.len())
    };
    Some((start + at, start + at + len))
}

/// The host of a URL (`[…]` kept for IPv6), if it has one.
#[must_use]
pub fn url_host(url: &str) -> Option<&str> {
    host_span(url)
        .map(|(a, b)| &url[a..b])
        .filter(|h| !h.is_empty())
}

/// `url` with its host resolved for a server in `container`
/// ([`resolve`]); unchanged when the host is used as written. For URLs
/// handed to other programs (a drill's check), which cannot ask Docker.
pub fn resolve_url(component: &str, container: &str, url: &str) -> Result<String> {
    let Some((a, b)) = host_span(url) else {
        return Ok(url.to_string());
    };
    Ok(match resolve(component, container, &url[a..b])? {
        Resolved::AsWritten => url.to_string(),
        Resolved::Container(ip) => {
            let ip = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            format!("{}{ip}{}", &url[..a], &url[b..])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(running: bool) -> Value {
        serde_json::json!({
            "Id": "0123456789abcdef0123",
            "Name": "/shop-db-1",
            "State": {"Running": running, "Status": if running {"running"} else {"exited"}},
            "Config": {"Hostname": "0123456789ab"},
            "NetworkSettings": {"Networks": {
                "bridge": {"Aliases": null, "IPAddress": "172.17.0.5"},
                "shop_default": {"Aliases": ["db", "0123456789ab"], "IPAddress": "172.20.0.3"}
            }}
        })
    }

    #[test]
    fn a_name_of_the_container_is_its_address_on_that_network() {
        let c = container(true);
        let at = |ip: &str| Ok(Resolved::Container(ip.parse().unwrap()));
        assert_eq!(pick(&c, "db"), at("172.20.0.3"));
        assert_eq!(pick(&c, "DB"), at("172.20.0.3"));
        assert_eq!(pick(&c, "shop-db-1"), at("172.17.0.5"));
        assert_eq!(pick(&c, "0123456789ab"), at("172.20.0.3"));
        assert_eq!(pick(&c, "elsewhere.example"), Ok(Resolved::AsWritten));
    }

    #[test]
    fn a_stopped_container_is_an_error() {
        let e = pick(&container(false), "db").unwrap_err();
        assert!(e.contains("exited"), "{e}");
    }

    #[test]
    fn literals_and_localhost_are_used_as_written() {
        for h in ["127.0.0.1", "[::1]", "::1", "localhost", "", "/run/pg"] {
            assert!(!is_name(h), "{h}");
        }
        assert!(is_name("db"));
    }

    #[test]
    fn the_host_of_a_url() {
        assert_eq!(url_host("postgres://app:pw@db:5432/app"), Some("db"));
        assert_eq!(url_host("redis://db"), Some("db"));
        assert_eq!(url_host("redis://:p@w@cache/1"), Some("cache"));
        assert_eq!(url_host("mysql://u@[::1]:3306/x"), Some("[::1]"));
        assert_eq!(url_host("postgres:///app"), None);
    }
}
