//! The config errors' `{:#}` text (what `main` prints): no cause appears twice (as the
//! library's own `error_texts` checks for its errors).

use std::error::Error;
use std::io;
use std::path::PathBuf;

fn io_err() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// Asserts that no error in `e`'s chain repeats its source's text, and returns the `{:#}` text.
fn once(e: impl Error + Send + Sync + 'static) -> String {
    let mut cur: &dyn Error = &e;
    while let Some(src) = cur.source() {
        assert!(
            !cur.to_string().contains(&src.to_string()),
            "{cur} repeats its cause {src}"
        );
        cur = src;
    }
    let text = format!("{:#}", anyhow::Error::new(e));
    let enoent = io_err().to_string();
    assert!(text.matches(&enoent).count() <= 1, "{text}");
    text
}

#[test]
fn config_errors() {
    use super::ConfigError;
    let p = PathBuf::from("/nonexistent/x.toml");
    let t = once(ConfigError::Read {
        path: p.clone(),
        error: io_err(),
    });
    assert!(
        t.contains("/nonexistent/x.toml") && t.contains("No such file"),
        "{t}"
    );
    once(ConfigError::Parse {
        path: p.clone(),
        message: "bad".into(),
    });
    once(ConfigError::Value {
        path: p,
        key: "drain_timeout",
        value: "x".into(),
        reason: "bad".into(),
    });
    once(ConfigError::Listen(heird::ListenError::BadAddr {
        addr: "x".into(),
        reason: "bad".into(),
    }));
}
