//! HTTPS through the clients stack-backup builds, with rustls' `ring`
//! provider (decision 0043: reqwest and OpenDAL are built without one).
//! The S3 server the other tests use speaks plain HTTP, so this is the
//! check that a TLS handshake and certificate verification still work:
//! a small HTTPS server (Python's `ssl`) with a certificate from a
//! throwaway CA (made with `openssl`), trusted the
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

/// An HTTPS server on 127.0.0.1:PORT (argv[1]) with `srv.pem`: `/`
/// answers 200 with the TLS version and cipher it negotiated, every other
/// path and method 404, as a REST or S3 server without the repository
/// would. The handshake runs in the request's thread, so a client that
/// refuses the certificate does not stall the others.
const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        body = ("%s %s\n" % (self.request.version(), self.request.cipher()[0])).encode()
        self.send_response(200 if self.path == "/" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = answer
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("srv.pem", "srv.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
srv.serve_forever()
"#;

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
        Command::new("python3")
            .args(["-c", HTTPS_SERVER, &port.to_string()])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is installed (scripts/services.sh)"),
    );
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&accept).is_err() {
        assert!(
            Instant::now() < until,
            "the HTTPS server did not listen on {accept}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The only test in this binary that reads or sets the environment.
    // Without the CA in the trust store the server is refused: the
    // verifier reads the system roots, it does not accept anything.
    std::env::remove_var("SSL_CERT_FILE");
    std::env::remove_var("SSL_CERT_DIR");
    let untrusting = tls::client_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("https://localhost:{port}/"))
        .send()
        .expect_err("a certificate from an unknown CA is refused");
    assert_certificate_error(&format!("{:?}", error_chain(&err)));
    // The provider every client in the process uses is ring's, not a
    // default some dependency installed (aws-lc-rs would show here).
    assert_eq!(
        format!("{:?}", rustls::crypto::CryptoProvider::get_default()),
        format!("{:?}", Some(&rustls::crypto::ring::default_provider())),
    );

    std::env::set_var("SSL_CERT_FILE", d.join("ca.pem"));
    let client = tls::client_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // The server answers `/` with the session it negotiated.
    let resp = client
        .get(format!("https://localhost:{port}/"))
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
    let page = resp.text().unwrap();
    assert!(page.starts_with("TLSv1.3 TLS_"), "{page}");

    // The certificate names `localhost` only: the same server reached by
    // its address is refused, so verification is on, not bypassed.
    let err = client
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .expect_err("a certificate for another name is refused");
    assert_certificate_error(&format!("{:?}", error_chain(&err)));

    // The clients that carry backups: rustic_backend's REST client and
    // OpenDAL's S3 one, built by `repository::exists` as every command
    // builds them. The server answers them 404 (no repository), so by
    // name the answer is "not there" or an error past the handshake; by
    // address the handshake itself fails on the certificate.
    std::env::set_var("AWS_ACCESS_KEY_ID", "sb-tls-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "sb-tls-test-secret");
    for url in [
        format!("rest:https://localhost:{port}/"),
        format!("s3:https://localhost:{port}/bucket"),
    ] {
        let by_name = exists(d, &url);
        if let Err(e) = &by_name {
            let lower = e.to_ascii_lowercase();
            for tls_word in ["certificate", "tls", "handshake", "error sending request"] {
                assert!(!lower.contains(tls_word), "{url}: {e}");
            }
        }
        let by_addr = url.replace("localhost", "127.0.0.1");
        match exists(d, &by_addr) {
            Ok(found) => panic!("{by_addr}: answered ({found}) over an unverified name"),
            Err(e) => assert_certificate_error(&e),
        }
    }
}

/// `repository::exists` for a remote repository at `url`, without
/// retries (a refused handshake is not retried into seconds).
fn exists(dir: &Path, url: &str) -> Result<bool, String> {
    let toml = format!(
        "[stack]\nname = \"tls\"\n[repository]\nurl = \"{url}\"\ncache-dir = \"{}\"\n\
         [repository.options]\nretry = \"false\"\n",
        dir.join("cache").display()
    );
    let cfg = stack_backup_core::Config::parse(&toml, Path::new("tls.toml")).unwrap();
    stack_backup_core::repository::exists(&cfg).map_err(|e| e.to_string())
}

fn assert_certificate_error(text: &str) {
    assert!(
        text.contains("certificate") || text.contains("Certificate"),
        "not a certificate error: {text}"
    );
}

/// aws-lc-rs (rustls' and OpenDAL's default provider, whose C build was
/// the largest unit of a cold build) does not come back through a new
/// dependency or a feature default (decision 0043).
#[test]
fn aws_lc_is_not_in_the_build() {
    let lock = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock");
    let text = std::fs::read_to_string(lock).unwrap();
    assert!(
        text.contains("name = \"ring\""),
        "{lock} is not the lock file"
    );
    for name in ["aws-lc-sys", "aws-lc-rs"] {
        assert!(
            !text.contains(&format!("name = \"{name}\"")),
            "{name} is back in Cargo.lock: `cargo tree -i {name}` shows who asks for it"
        );
    }
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
