//! Session tickets that survive the process: heird's own [`ProducesTickets`], whose keys a
//! process hands to its successor at a handoff, so that a client holding a ticket from the old
//! process resumes with the new one (an abbreviated handshake) instead of paying a full one.
//!
//! A ticket is `key name (16) || nonce (12) || ChaCha20-Poly1305(session state)`, with the key
//! name as associated data. Two keys are kept: the current one encrypts, both decrypt. The
//! current key is replaced every [`ROTATE_EVERY`] (the previous one is kept, so a ticket lives
//! up to twice that), and the rotation time is wall-clock, so it carries across processes.
//!
//! The keys travel in a memfd (never a file) that the successor inherits, named by
//! [`KEYS_FD_VAR`]. TLS 1.3 0-RTT stays off: resumption never accepts early data.

use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// Names the inherited fd (a memfd) that holds a predecessor's ticket keys.
pub const KEYS_FD_VAR: &str = "HEIRD_TLS_TICKET_KEYS_FD";
/// The fd-store name of the keys' memfd.
pub const STORED_NAME: &str = crate::fdstore::TLS_TICKETS_NAME;
/// How often the encrypting key is replaced.
pub const ROTATE_EVERY: Duration = Duration::from_secs(6 * 3600);
/// What a client is told a ticket is good for (it may stay usable up to `2 * ROTATE_EVERY`).
const LIFETIME_SECS: u32 = 6 * 3600;

const NAME_LEN: usize = 16;
const KEY_LEN: usize = 32;
const VERSION: u8 = 1;

#[derive(Clone, PartialEq, Eq)]
struct Key {
    name: [u8; NAME_LEN],
    secret: [u8; KEY_LEN],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "Key({:02x?})", &self.name[..4])
    }
}

impl Key {
    fn generate(rng: &SystemRandom) -> Option<Key> {
        let mut k = Key {
            name: [0; NAME_LEN],
            secret: [0; KEY_LEN],
        };
        rng.fill(&mut k.name).ok()?;
        rng.fill(&mut k.secret).ok()?;
        Some(k)
    }

    fn aead(&self) -> Option<LessSafeKey> {
        Some(LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.secret).ok()?,
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Keys {
    current: Key,
    previous: Option<Key>,
    /// Wall-clock seconds when `current` became current.
    since: u64,
}

impl Keys {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![VERSION];
        v.extend_from_slice(&self.since.to_be_bytes());
        v.extend_from_slice(&self.current.name);
        v.extend_from_slice(&self.current.secret);
        if let Some(p) = &self.previous {
            v.extend_from_slice(&p.name);
            v.extend_from_slice(&p.secret);
        }
        v
    }

    fn from_bytes(b: &[u8]) -> Option<Keys> {
        let key = |b: &[u8]| -> Option<Key> {
            Some(Key {
                name: b.get(..NAME_LEN)?.try_into().ok()?,
                secret: b.get(NAME_LEN..NAME_LEN + KEY_LEN)?.try_into().ok()?,
            })
        };
        let (&version, rest) = b.split_first()?;
        if version != VERSION {
            return None;
        }
        let since = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let rest = &rest[8..];
        let one = NAME_LEN + KEY_LEN;
        match rest.len() {
            n if n == one => Some(Keys {
                current: key(rest)?,
                previous: None,
                since,
            }),
            n if n == 2 * one => Some(Keys {
                current: key(rest)?,
                previous: Some(key(&rest[one..])?),
                since,
            }),
            _ => None,
        }
    }
}

/// heird's ticketer: see the module doc.
#[derive(Debug)]
pub struct Ticketer {
    keys: RwLock<Keys>,
    rng: SystemRandom,
    /// Whether the keys came from elsewhere (a predecessor, the fd store): then the store
    /// already has them.
    inherited: AtomicBool,
    /// Set once the keys are kept in the fd store: each rotation replaces the stored copy.
    in_fd_store: AtomicBool,
}

fn read_keys(fd: OwnedFd) -> io::Result<Keys> {
    let mut f = std::fs::File::from(fd);
    f.seek(io::SeekFrom::Start(0))?;
    let mut b = Vec::new();
    f.take(1024).read_to_end(&mut b)?;
    Keys::from_bytes(&b).ok_or_else(|| io::Error::other("malformed ticket keys"))
}

fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Ticketer {
    /// Fresh keys.
    pub fn new() -> io::Result<Ticketer> {
        let rng = SystemRandom::new();
        let current = Key::generate(&rng).ok_or_else(|| io::Error::other("no randomness for ticket keys"))?;
        Ok(Ticketer {
            keys: RwLock::new(Keys {
                current,
                previous: None,
                since: now_secs(SystemTime::now()),
            }),
            rng,
            inherited: AtomicBool::new(false),
            in_fd_store: AtomicBool::new(false),
        })
    }

    /// Replaces the keys with those in the memfd `fd` (handed over by a predecessor, or kept
    /// in the fd store by a previous process); rotated at once if they are due.
    pub fn adopt(&self, fd: OwnedFd) -> io::Result<()> {
        let keys = read_keys(fd)?;
        *self
            .keys
            .write()
            .map_err(|_| io::Error::other("ticket keys poisoned"))? = keys;
        self.inherited.store(true, Ordering::SeqCst);
        self.rotate_if_due(SystemTime::now());
        Ok(())
    }

    /// Keeps the keys in systemd's fd store from now on (stores them now unless they came from
    /// a predecessor or the store, which have them there already).
    pub fn keep_in_fd_store(&self) {
        if !self.in_fd_store.swap(true, Ordering::SeqCst) && !self.inherited.load(Ordering::SeqCst) {
            self.store();
        }
    }

    /// Whether the keys are kept in the fd store (they take one of its slots).
    pub fn is_in_fd_store(&self) -> bool {
        self.in_fd_store.load(Ordering::SeqCst)
    }

    fn store(&self) {
        use crate::notify::NotifyState;
        use std::os::fd::AsFd;
        let fd = match self.to_memfd() {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "tls: cannot keep the session ticket keys in the fd store");
                return;
            }
        };
        crate::fdstore::remove_quietly(STORED_NAME);
        let states = [NotifyState::FdStore, NotifyState::FdName(STORED_NAME)];
        match sd_notify::notify_with_fds(&states, &[fd.as_fd()]) {
            Ok(()) => tracing::info!("tls: session ticket keys kept in the fd store"),
            Err(e) => tracing::warn!(error = %e, "tls: cannot keep the session ticket keys in the fd store"),
        }
    }

    /// The keys in a new memfd (close-on-exec; the handoff passes it on explicitly).
    pub fn to_memfd(&self) -> io::Result<OwnedFd> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(c"heird-tls-ticket-keys", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        let mut f = std::fs::File::from(fd);
        let bytes = self
            .keys
            .read()
            .map_err(|_| io::Error::other("ticket keys poisoned"))?
            .to_bytes();
        f.write_all(&bytes)?;
        Ok(f.into())
    }

    /// Replaces the current key when it has been current for [`ROTATE_EVERY`]; the old one
    /// stays for decryption. True when it rotated.
    pub fn rotate_if_due(&self, now: SystemTime) -> bool {
        let now = now_secs(now);
        let due = |k: &Keys| now.saturating_sub(k.since) >= ROTATE_EVERY.as_secs();
        if !self.keys.read().is_ok_and(|k| due(&k)) {
            return false;
        }
        let Some(fresh) = Key::generate(&self.rng) else {
            return false;
        };
        let Ok(mut k) = self.keys.write() else {
            return false;
        };
        if !due(&k) {
            return false; // another thread rotated meanwhile
        }
        let old = std::mem::replace(&mut k.current, fresh);
        k.previous = Some(old);
        k.since = now;
        drop(k);
        tracing::info!("tls: rotated the session ticket key");
        if self.in_fd_store.load(Ordering::SeqCst) {
            self.store();
        }
        true
    }

    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = self.keys.read().ok()?.current.clone();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let name: [u8; NAME_LEN] = ticket.get(..NAME_LEN)?.try_into().ok()?;
        let nonce: [u8; NONCE_LEN] = ticket.get(NAME_LEN..NAME_LEN + NONCE_LEN)?.try_into().ok()?;
        let key = {
            let k = self.keys.read().ok()?;
            [Some(&k.current), k.previous.as_ref()]
                .into_iter()
                .flatten()
                .find(|k| k.name == name)?
                .clone()
        };
        let mut body = ticket.get(NAME_LEN + NONCE_LEN..)?.to_vec();
        let plain = key
            .aead()?
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(name), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }
    fn lifetime(&self) -> u32 {
        LIFETIME_SECS
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.rotate_if_due(SystemTime::now());
        self.seal(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let t = Ticketer::new().unwrap();
        let c = t.encrypt(b"session state").unwrap();
        assert_eq!(t.decrypt(&c).unwrap(), b"session state");
        let mut bad = c.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(t.decrypt(&bad).is_none());
        assert!(t.decrypt(&c[..10]).is_none());
        assert!(
            Ticketer::new().unwrap().decrypt(&c).is_none(),
            "another process's keys"
        );
    }

    #[test]
    fn rotation_keeps_the_previous_key_for_decryption_only() {
        let t = Ticketer::new().unwrap();
        let old = t.encrypt(b"a").unwrap();
        let since = t.keys.read().unwrap().since;
        let at = UNIX_EPOCH + Duration::from_secs(since) + ROTATE_EVERY;
        assert!(!t.rotate_if_due(at - Duration::from_secs(1)));
        assert!(t.rotate_if_due(at));
        let new = t.seal(b"b").unwrap();
        assert_ne!(old[..NAME_LEN], new[..NAME_LEN], "encrypts with the new key");
        assert_eq!(t.decrypt(&old).unwrap(), b"a", "the previous key still decrypts");
        // One more rotation drops the oldest key.
        assert!(t.rotate_if_due(at + ROTATE_EVERY));
        assert!(t.decrypt(&old).is_none());
        assert_eq!(t.decrypt(&new).unwrap(), b"b");
    }

    #[test]
    fn keys_survive_a_memfd() {
        let t = Ticketer::new().unwrap();
        let c = t.encrypt(b"x").unwrap();
        let t2 = Ticketer::new().unwrap();
        t2.adopt(t.to_memfd().unwrap()).unwrap();
        assert_eq!(t2.decrypt(&c).unwrap(), b"x");
        assert_eq!(*t.keys.read().unwrap(), *t2.keys.read().unwrap());
        assert!(Keys::from_bytes(&[VERSION, 0, 0]).is_none());
        assert!(Keys::from_bytes(&[]).is_none());
    }
}
