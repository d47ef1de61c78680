//! An https front for a plain-http test server: TLS terminated with the control plane's
//! serving certificate (issued by its CA for 127.0.0.1), bytes forwarded as they are. Lets a
//! test use an https endpoint, as admission requires, with the in-process simulator behind it.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::cluster::control_plane;

/// The CA that signed the front's certificate (pass it as `--ca-bundle`).
pub fn ca_bundle() -> PathBuf {
    control_plane().dir.join("pki/ca.crt")
}

/// Serves `https://127.0.0.1:<port>` in front of `backend` (an `http://host:port` URL) for the
/// rest of the test; returns that URL.
pub async fn https_front(backend: &str) -> String {
    let backend: SocketAddr = backend
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("backend host:port");
    let pki = control_plane().dir.join("pki");
    let certs = CertificateDer::pem_file_iter(pki.join("apiserver.crt"))
        .expect("serving certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(pki.join("apiserver.key")).expect("serving key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(conn).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    url
}
