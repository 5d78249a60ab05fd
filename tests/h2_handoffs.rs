//! HTTP/2 across handoffs, measured with a GOAWAY-aware client: Go's x/net/http2 Transport
//! (tests/clients/h2retry), which retries a stream the server did not process on a new
//! connection, as browsers do (RFC 9113 §6.8). Calibrated on nginx reloads: 0 failed.

mod support;

use support::h2client::{Client, build_client};
use support::proc::*;

#[test]
fn many_concurrent_h2_streams_across_20_handoffs_none_fails() {
    let bin = build_client();
    let s = start_heird("", false);
    let url = format!("http://{}/sleep?duration=10ms", s.addr);
    // 64 streams at a time over 8 connections; each stream spends 10 ms in the handler, so
    // streams are open at every handoff.
    let client = Client::start(&bin, &url, 8, 64, &[]);
    client.wait_progress(200, &s.h);
    let handoffs = 20;
    for _ in 0..handoffs {
        let (ok, out) = reload(s.dir.path());
        assert!(ok, "{out}");
        client.wait_progress(200, &s.h);
    }
    let v = client.stop();
    eprintln!("h2 across {handoffs} handoffs: {v}");
    assert_eq!(v["failed"], 0, "{v}\n{}", s.h.describe());
    assert!(v["ok"].as_u64().unwrap() > 200 * handoffs, "{v}");
    // Every generation served some of it, and the client had to reconnect at the handoffs.
    assert_eq!(v["pids"].as_array().unwrap().len() as u64, handoffs + 1, "{v}");
    assert!(v["dials"].as_u64().unwrap() >= 8 * handoffs, "{v}");
}

#[test]
fn h2_over_tls_across_20_handoffs_none_fails() {
    let bin = build_client();
    let (s, pair) = support::tls::start_tls("");
    let url = format!("https://127.0.0.1:{}/sleep?duration=10ms", s.addr.port());
    // The client insists on ALPN h2 (it fails a connection that agreed on anything else).
    let client = Client::start(&bin, &url, 8, 64, &["-cacert", pair.cert.to_str().unwrap()]);
    client.wait_progress(200, &s.h);
    let handoffs = 20;
    for _ in 0..handoffs {
        let (ok, out) = reload(s.dir.path());
        assert!(ok, "{out}");
        client.wait_progress(200, &s.h);
    }
    let v = client.stop();
    eprintln!("h2 over TLS across {handoffs} handoffs: {v}");
    assert_eq!(v["failed"], 0, "{v}\n{}", s.h.describe());
    assert!(v["ok"].as_u64().unwrap() > 200 * handoffs, "{v}");
    assert_eq!(v["pids"].as_array().unwrap().len() as u64, handoffs + 1, "{v}");
    assert!(v["dials"].as_u64().unwrap() >= 8 * handoffs, "{v}");
}
