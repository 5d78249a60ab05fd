//! Reconciling what systemd passed with the fd store: socket-unit fds win; otherwise stored
//! sockets the configuration still lists are reused and the rest are bound anew.

use super::Acquired;
use crate::fdstore;
use crate::listeners::{ListenAddr, ListenError, Listener, Source, bind};

/// systemd passed fds without a predecessor: socket-unit fds and/or fds heird stored earlier.
/// With socket-unit fds, serve those and drop stored ones. Otherwise reuse each stored socket
/// whose address the config still lists, bind the addresses that have none (to be stored), and
/// drop stored sockets the config no longer lists.
pub(super) fn reconcile_with_store(
    passed: Vec<Listener>,
    bind_addrs: &[ListenAddr],
) -> Result<Acquired, ListenError> {
    let (mut stored, unit): (Vec<Listener>, Vec<Listener>) = passed
        .into_iter()
        .partition(|l| fdstore::is_bound_listener(&l.name));
    if !unit.is_empty() {
        let unstore = stored.iter().map(|l| l.name.clone()).collect();
        let listen_ignored = (!bind_addrs.is_empty()).then(|| {
            let addrs: Vec<String> = bind_addrs.iter().map(ToString::to_string).collect();
            format!(
                "systemd passed {} socket(s): the configured listen address(es) {} are not bound",
                unit.len(),
                addrs.join(", ")
            )
        });
        return Ok(Acquired {
            listeners: unit,
            unstore,
            listen_ignored,
            ..Acquired::default()
        });
    }
    let mut out = Vec::new();
    let mut store = Vec::new();
    for addr in bind_addrs {
        let wanted = addr.to_string();
        // A unix socket whose file is gone (e.g. a RuntimeDirectory= removed at the stop) can
        // no longer be reached by path: bind it anew instead of reusing the stored fd.
        let reachable = match addr {
            ListenAddr::Unix(path) => std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())),
            ListenAddr::Tcp(_) => true,
        };
        match stored.iter().position(|l| reachable && l.address == wanted) {
            Some(i) => {
                let mut l = stored.remove(i);
                l.source = Source::Bound;
                out.push(l);
            }
            None => {
                store.push(out.len());
                out.push(bind(addr)?);
            }
        }
    }
    let unstore = stored.iter().map(|l| l.name.clone()).collect();
    Ok(Acquired {
        listeners: out,
        store,
        unstore,
        ..Acquired::default()
    })
}
