//! How stack-backup reaches a database server that runs in a container
//! whose port is not published.
//!
//! The URL of a component with `container =` is the one the application
//! uses inside the compose network (`postgres://app@db:5432/app`): its
//! host is a name only that network resolves. stack-backup resolves it
//! the same way, from the engine: when the host is a name the container
//! answers to on one of its networks (its container name, its hostname,
//! its network aliases, the compose service name among them), the
//! connection goes to the container's address on that network. Any other
//! host (an IP literal, `localhost`, another name) is used as written only
//! when it reaches this container: one of its addresses, or the URL's port
//! is one the container publishes on this host; otherwise it could be
//! another server, and it is an error.
//!
//! Contract: resolved at each call (`docker inspect`), never stored: the
//! address changes when the container is re-created. A container that is
//! not running, or not there, is an error naming it.

use std::net::IpAddr;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::process;

/// The address to connect to for `host:port` of a server running in
/// `container`: the container's address when `host` is one of its names;
/// `host` as written when it is one of the container's addresses or
/// `port` is published by the container on this host; else an error
/// ("the URL must name the container or a port it publishes").
/// `component` names the component in errors.
pub fn resolve(component: &str, container: &str, host: &str, port: u16) -> Result<Resolved> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() || bare.starts_with('/') {
        // A socket: what it reaches is on this host's file system.
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
    pick(&inspect, host, port)
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

/// The address for `host:port` in a container's `docker inspect` object.
fn pick(inspect: &Value, host: &str, port: u16) -> std::result::Result<Resolved, String> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
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
    let empty = serde_json::Map::new();
    let networks = inspect["NetworkSettings"]["Networks"]
        .as_object()
        .unwrap_or(&empty);
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
        None if reaches(inspect, networks, &host, port) => Ok(Resolved::AsWritten),
        None => Err(format!(
            "the URL's host `{host}` is not one of its names and it publishes no port {port} on this host: the URL must name the container or a port it publishes"
        )),
    }
}

/// Whether `host:port`, not a name of the container, still reaches it:
/// `host` is one of its addresses, or it publishes `port` on this host
/// (`NetworkSettings.Ports` host port), or it shares the host's network
/// and `host` is this host.
fn reaches(
    inspect: &Value,
    networks: &serde_json::Map<String, Value>,
    host: &str,
    port: u16,
) -> bool {
    let literal = host.parse::<IpAddr>().ok();
    let own = literal.is_some_and(|ip| {
        networks.values().any(|n| {
            [&n["IPAddress"], &n["GlobalIPv6Address"]]
                .into_iter()
                .filter_map(|a| a.as_str())
                .any(|a| a.parse::<IpAddr>().ok() == Some(ip))
        })
    });
    let local = host == "localhost" || literal.is_some_and(|ip| ip.is_loopback());
    let published = inspect["NetworkSettings"]["Ports"]
        .as_object()
        .is_some_and(|ports| {
            ports
                .values()
                .filter_map(Value::as_array)
                .flatten()
                .any(|b| b["HostPort"].as_str() == Some(port.to_string().as_str()))
        });
    let host_network = inspect["HostConfig"]["NetworkMode"].as_str() == Some("host") && local;
    own || published || host_network
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
    let port = url[b..]
        .strip_prefix(':')
        .map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|p| p.parse().ok())
        .unwrap_or(match url.split("://").next().unwrap_or_default() {
            "mysql" | "mariadb" => 3306,
            "redis" | "rediss" => 6379,
            _ => 5432,
        });
    Ok(match resolve(component, container, &url[a..b], port)? {
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
            }, "Ports": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "15432"}]}}
        })
    }

    #[test]
    fn a_name_of_the_container_is_its_address_on_that_network() {
        let c = container(true);
        let at = |ip: &str| Ok(Resolved::Container(ip.parse().unwrap()));
        assert_eq!(pick(&c, "db", 5432), at("172.20.0.3"));
        assert_eq!(pick(&c, "DB", 5432), at("172.20.0.3"));
        assert_eq!(pick(&c, "shop-db-1", 5432), at("172.17.0.5"));
        assert_eq!(pick(&c, "0123456789ab", 5432), at("172.20.0.3"));
    }

    #[test]
    fn a_stopped_container_is_an_error() {
        let e = pick(&container(false), "db", 5432).unwrap_err();
        assert!(e.contains("exited"), "{e}");
    }

    #[test]
    fn another_host_must_reach_the_container() {
        let c = container(true);
        for (h, port) in [
            ("127.0.0.1", 15432),
            ("localhost", 15432),
            ("172.20.0.3", 5432),
        ] {
            assert_eq!(pick(&c, h, port), Ok(Resolved::AsWritten), "{h}:{port}");
        }
        for (h, port) in [
            ("127.0.0.1", 5432),
            ("elsewhere.example", 5432),
            ("10.0.0.9", 5432),
        ] {
            let e = pick(&c, h, port).unwrap_err();
            assert!(
                e.contains("must name the container or a port it publishes"),
                "{e}"
            );
        }
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
