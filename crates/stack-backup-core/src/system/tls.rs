//! The TLS crypto provider behind every HTTPS client in the process.
//!
//! reqwest and OpenDAL's reqwest transport are built without a provider
//! (decision 0043: aws-lc-rs, their default, compiles AWS-LC's C, the
//! largest unit of a cold build), so rustls needs a process-wide default
//! before the first client is built; reqwest panics at `build()` without
//! one. Every place in this crate that builds an HTTP client, or hands
//! options to `rustic_backend` (whose REST and OpenDAL backends build
//! theirs), calls [`install_provider`] or [`client_builder`] first.
//!
//! OpenDAL (0.58) installs its process-wide HTTP transport by itself only
//! when built with the aws-lc-rs transport feature; without it every S3
//! request fails ("default HTTP transport is not installed"), so
//! [`install_provider`] installs OpenDAL's reqwest transport as well.

use std::sync::Once;

/// Makes rustls' `ring` provider the process default and OpenDAL's reqwest
/// transport OpenDAL's default, once.
///
/// Idempotent and cheap after the first call (a `Once`). If the process
/// already has either default (a program embedding this library installed
/// its own), that one is kept: both `install_default`s leave an installed
/// default alone (rustls returns an error, OpenDAL's first install wins),
/// and any provider or transport serves these clients.
pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal_http_transport_reqwest::install_default();
    });
}

/// A blocking reqwest client builder, with the provider installed.
// The one place allowed to build a client directly (clippy.toml).
#[allow(clippy::disallowed_methods)]
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    install_provider();
    reqwest::blocking::Client::builder()
}
