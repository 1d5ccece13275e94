//! HTTPS through the clients stack-backup builds, with rustls' `ring`
//! provider (decision 0043: reqwest and OpenDAL are built without one).
//! The S3 server the other tests use speaks plain HTTP, so this is the
//! check that a TLS handshake and certificate verification still work:
//! `openssl s_server` with a certificate from a throwaway CA, trusted the
//! way a user trusts a private CA (`SSL_CERT_FILE`, read by the platform
//! verifier reqwest uses).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stack_backup_core::system::tls;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/services.sh)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// The TLS server, stopped when the test ends (also on a failed assert).
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_works_with_the_ring_provider_and_verifies_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ];
    openssl(
        d,
        &[ca.concat(), vec!["-days", "2", "-subj", "/CN=sb-test-ca"]].concat(),
    );
    let csr = [
        &["req", "-new"][..],
        &ec,
        &["-keyout", "srv.key", "-out", "srv.csr"],
    ];
    openssl(d, &[csr.concat(), vec!["-subj", "/CN=localhost"]].concat());
    std::fs::write(
        d.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "srv.pem",
        ],
    );

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let accept = format!("127.0.0.1:{port}");
    let _server = Server(
        Command::new("openssl")
            .args(["s_server", "-accept", &accept, "-cert", "srv.pem"])
            .args(["-key", "srv.key", "-www", "-quiet"])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&accept).is_err() {
        assert!(
            Instant::now() < until,
            "s_server did not listen on {accept}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Only this test runs in this binary, before any client is built.
    std::env::set_var("SSL_CERT_FILE", d.join("ca.pem"));
    let client = tls::client_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // `-www` answers a GET with the session it negotiated.
    let resp = client
        .get(format!("https://localhost:{port}/"))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
    let page = resp.text().unwrap();
    assert!(page.contains("New, TLSv1.3, Cipher is TLS_"), "{page}");

    // The certificate names `localhost` only: the same server reached by
    // its address is refused, so verification is on, not bypassed.
    let err = client
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .expect_err("a certificate for another name is refused");
    let chain = format!("{:?}", error_chain(&err));
    assert!(
        chain.contains("certificate") || chain.contains("Certificate"),
        "{chain}"
    );
}

fn error_chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut v = vec![e.to_string()];
    let mut s = e.source();
    while let Some(x) = s {
        v.push(x.to_string());
        s = x.source();
    }
    v
}
