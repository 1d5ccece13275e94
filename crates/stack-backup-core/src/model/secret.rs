//! Keeping secrets out of output: URL redaction.

/// Replaces the password of a URL (`scheme://user:PASSWORD@host…`) and any
/// `password=` query parameter with `***`. Other text is returned unchanged.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let mut out = match url.find("://") {
        Some(i) => {
            let (scheme, rest) = url.split_at(i + 3);
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    let host = &authority[at..];
                    let user = match userinfo.split_once(':') {
                        Some((u, _)) => format!("{u}:***"),
                        None => userinfo.to_string(),
                    };
                    format!("{scheme}{user}{host}{tail}")
                }
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// The URL with its password removed entirely (`scheme://user@host…`), for
/// writing into a config file where a placeholder would be read as a password.
#[must_use]
pub fn strip_password(url: &str) -> String {
    redact_url(url)
        .replace(":***@", "@")
        .replace("password=***", "")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

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
        assert_eq!(
            super::strip_password("postgres://u:pw@h/db"),
            "postgres://u@h/db"
        );
    }
}
