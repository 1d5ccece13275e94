//! Keeping secrets out of output: URL redaction.
//!
//! One redactor for every URL the tool prints or stores (database URLs,
//! `admin-url`, Redis URLs, `repository.url`, `[[health]] http`; notification
//! endpoints, whose path is the token, go through [`redact_endpoint`]). It is
//! deliberately wider than any one parser: the PostgreSQL driver takes the
//! credentials up to the *first* `@` anywhere in the URL and does not stop
//! at `/`, `?` or `#`; the `url` crate (Redis, HTTP) takes them up to the
//! *last* `@` before the first `/`, `?` or `#`. The redactor hides
//! everything from the first `:` after `scheme://` up to the *last* `@` of
//! the whole URL, which covers the password either parser would read,
//! percent-encoded or not, at the cost of hiding more than the password
//! when an `@` also appears later in the URL.

/// The placeholder a password is replaced with.
pub const PLACEHOLDER: &str = "***";

/// Query parameters whose value is a secret (compared case-insensitively,
/// after percent-decoding the key).
fn secret_key(key: &str) -> bool {
    let k = percent_decode(key).to_ascii_lowercase();
    crate::remote::is_secret_key(&k)
        || k.contains("auth")
        || ["pass", "pwd", "sig", "signature"].contains(&k.as_str())
}

/// `%XX` decoding of a query key (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URL split around its credentials: `(scheme://user, password?, rest)`
/// where `rest` starts after the `@`; `None` when it has no `user:` part.
fn split_credentials(url: &str) -> Option<(&str, &str)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let at = rest.rfind('@')?;
    let creds = &rest[..at];
    let colon = creds.find(':')?;
    Some((&url[..start + colon], &rest[at..]))
}

/// The query with the value of every secret parameter replaced by
/// `with` (`None`: the parameter is dropped).
fn redact_query(url: &str, with: Option<&str>) -> String {
    let Some(q) = url.find('?') else {
        return url.to_string();
    };
    let (head, query) = url.split_at(q + 1);
    let (query, fragment) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .filter_map(|kv| match kv.split_once('=') {
            Some((k, _)) if secret_key(k) => with.map(|w| format!("{k}={w}")),
            _ => Some(kv.to_string()),
        })
        .collect();
    let fragment = if fragment.is_empty() { "" } else { "#***" };
    let joined = params.join("&");
    if joined.is_empty() && with.is_none() {
        format!("{}{fragment}", &head[..head.len() - 1])
    } else {
        format!("{head}{joined}{fragment}")
    }
}

/// `scheme://host[:port]/…`: a URL whose path and query may *be* the
/// secret (a webhook token, a ping UUID, an ntfy topic), reduced to where
/// it goes. Credentials are dropped up to the last `@` of the whole URL, as
/// in [`redact_url`]; text that is no URL becomes `***`.
#[must_use]
pub fn redact_endpoint(url: &str) -> String {
    let Some(i) = url.find("://") else {
        return PLACEHOLDER.into();
    };
    let (scheme, rest) = url.split_at(i + 3);
    let rest = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let tail = if end < rest.len() { "/…" } else { "" };
    format!("{scheme}{}{tail}", &rest[..end])
}

/// Replaces the password of a URL (`scheme://user:PASSWORD@host…`) and the
/// value of any `password=` (`secret`, `token`) query parameter with `***`.
/// Text that is not a URL is returned unchanged.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let out = match split_credentials(url) {
        Some((user, host)) => format!("{user}:{PLACEHOLDER}{host}"),
        None => match token_user(url) {
            Some((scheme, host)) => format!("{scheme}{PLACEHOLDER}{host}"),
            None => url.to_string(),
        },
    };
    redact_query(&out, Some(PLACEHOLDER))
}

/// An HTTP(S) URL whose user part has no password (`https://TOKEN@host/`):
/// there the user part is the secret (a token), so it is hidden whole.
/// Database URLs keep a plain user name, which is no secret and says
/// which role connects.
fn token_user(url: &str) -> Option<(&str, &str)> {
    let lower = url.get(..8)?.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    let start = url.find("://")? + 3;
    let at = url[start..].rfind('@')? + start;
    Some((&url[..start], &url[at..]))
}

/// The URL with its password removed entirely (`scheme://user@host…`), for
/// writing into a config file where a placeholder would be read as a password.
#[must_use]
pub fn strip_password(url: &str) -> String {
    let out = match split_credentials(url) {
        Some((user, host)) => format!("{user}{host}"),
        None => url.to_string(),
    };
    redact_query(&out, None)
}

/// Serializes an optional URL redacted (`serialize_with` of config fields
/// that hold URLs as plain strings).
pub fn serialize_redacted<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&redact_url(u)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_url, strip_password};

    #[test]
    fn redacts() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=x"),
            "postgres://h/db?user=u&password=***"
        );
        assert_eq!(redact_url("/plain/path"), "/plain/path");
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(strip_password("postgres://u:pw@h/db"), "postgres://u@h/db");
        assert_eq!(
            strip_password("postgres://h/db?password=x"),
            "postgres://h/db"
        );
        assert_eq!(
            strip_password("postgres://h/db?password=x&sslmode=require"),
            "postgres://h/db?sslmode=require"
        );
        assert_eq!(
            redact_url("s3:https://AKIA:se/cr+et@s3.example/bucket"),
            "s3:https://AKIA:***@s3.example/bucket"
        );
        assert_eq!(redact_url("opendal:s3"), "opendal:s3");
    }

    /// Every password form a parser accepts: raw `/ # ? @ :` (the
    /// PostgreSQL driver reads up to the first `@`) and percent-encoded.
    #[test]
    fn no_password_form_survives() {
        let passwords = [
            "Qz/9k",
            "Qz#9k",
            "Qz?9k",
            "Qz@9k",
            "Qz:9k",
            "Q/z#9?k@w:x",
            "Qz%2F9k",
            "Q%40z%3A9%23k",
            "Qz%2f9%3Fk",
            "%2F%23%3F%40%3AQz",
        ];
        for pw in passwords {
            for url in [
                format!("postgres://app:{pw}@db.local:5432/shop"),
                format!("postgresql://app:{pw}@db.local/shop?sslmode=disable"),
                format!("redis://:{pw}@cache.local:6379/2"),
                format!("rediss://default:{pw}@cache.local:6380/0"),
                format!("http://probe:{pw}@app.local:8080/health"),
                format!("rest:https://u:{pw}@backup.local/repo"),
                format!("postgres://db.local/shop?user=app&password={pw}"),
                format!("postgres://db.local/shop?Pass%77ord={pw}&sslmode=disable"),
            ] {
                let r = redact_url(&url);
                assert!(!r.contains(pw), "{url} -> {r}");
                let s = strip_password(&url);
                assert!(!s.contains(pw), "{url} -> {s}");
                // What the driver reads as the password never survives.
                if let Ok(pc) = url.parse::<postgres::Config>() {
                    if let Some(p) = pc.get_password() {
                        let p = String::from_utf8_lossy(p);
                        assert!(!r.contains(p.as_ref()), "{url} -> {r}");
                    }
                }
            }
        }
        // The host and database stay readable where the URL allows it.
        assert_eq!(
            redact_url("postgres://app:p%2Fss@db.local:5432/shop"),
            "postgres://app:***@db.local:5432/shop"
        );
        assert_eq!(
            redact_url("redis://:p%40ss@cache.local:6379/2"),
            "redis://:***@cache.local:6379/2"
        );
    }

    #[test]
    fn tokens_in_the_user_part_or_common_query_keys_are_hidden() {
        assert_eq!(
            redact_url("https://ghp_T0K3N@git.example/o/r.git"),
            "https://***@git.example/o/r.git"
        );
        assert_eq!(
            redact_url("https://h.example/x?sv=1&sig=S1G&api_key=K3Y&auth=A"),
            "https://h.example/x?sv=1&sig=***&api_key=***&auth=***"
        );
        // A database user name is no secret and stays.
        assert_eq!(
            redact_url("postgres://app@db.local/shop"),
            "postgres://app@db.local/shop"
        );
    }
}
