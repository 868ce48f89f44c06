//! What the sandbox captures from the inside: the syslog datagrams sent to its `/dev/log`
//! and the bytes written to its `/dev/console`.
//!
//! Each capture has a background thread that drains its descriptor as soon as it is
//! readable (so a burst of log lines never fills a queue and gets dropped), and every read
//! by a test drains it once more under the same lock, so what a finished command wrote is
//! always there, in order, without sleeping.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The descriptor a capture reads from.
enum Source {
    /// The syslog socket: one chunk per datagram.
    Datagrams(UnixDatagram),
    /// The console FIFO: the read end, and a write end held only so the reader never sees
    /// end-of-file between two writers.
    Fifo { reader: File, _keep_open: File },
}

impl Source {
    fn fd(&self) -> RawFd {
        match self {
            Source::Datagrams(sock) => sock.as_raw_fd(),
            Source::Fifo { reader, .. } => reader.as_raw_fd(),
        }
    }

    /// Reads everything available now without blocking, appending one chunk per read.
    fn drain(&mut self, chunks: &mut Vec<Vec<u8>>) {
        let mut buf = vec![0u8; 65536];
        loop {
            let got = match self {
                Source::Datagrams(sock) => sock.recv(&mut buf),
                Source::Fifo { reader, .. } => reader.read(&mut buf),
            };
            match got {
                Ok(0) if matches!(self, Source::Fifo { .. }) => return,
                Ok(n) => chunks.push(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<(Source, Vec<Vec<u8>>)>,
}

/// A source drained into memory by a background thread.
pub struct Capture {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Captures datagrams arriving on `sock` (already bound).
    pub fn datagrams(sock: UnixDatagram) -> io::Result<Capture> {
        sock.set_nonblocking(true)?;
        Ok(Capture::start(Source::Datagrams(sock)))
    }

    /// Captures what is written to the FIFO at `path` (already created).
    pub fn fifo(path: &Path) -> io::Result<Capture> {
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let keep_open = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        Ok(Capture::start(Source::Fifo {
            reader,
            _keep_open: keep_open,
        }))
    }

    fn start(source: Source) -> Capture {
        let fd = source.fd();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            state: Mutex::new((source, Vec::new())),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sandbox-capture".into())
            .spawn(move || {
                while !worker.stop.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; fd stays open as long as `worker` lives.
                    let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
                    if ready > 0 {
                        let mut guard = worker.state.lock().unwrap_or_else(|e| e.into_inner());
                        let (source, chunks) = &mut *guard;
                        source.drain(chunks);
                    }
                }
            })
            .expect("sandbox: cannot start a capture thread");
        Capture {
            shared,
            thread: Some(thread),
        }
    }

    /// Every chunk captured so far (datagrams, or console reads), in arrival order.
    pub fn chunks(&self) -> Vec<Vec<u8>> {
        let mut guard = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let (source, chunks) = &mut *guard;
        source.drain(chunks);
        chunks.clone()
    }

    /// Everything captured so far as one byte string.
    pub fn bytes(&self) -> Vec<u8> {
        self.chunks().concat()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds a datagram socket at `path` from inside the network namespace of process `pid`.
///
/// A unix datagram socket's queue limit (`net.unix.max_dgram_qlen`, 10 by default) is taken
/// from the namespace the socket is created in; the sandbox raises it in its own namespace,
/// so a burst of log lines is queued instead of dropped, without touching the host's value.
pub fn bind_datagram_in_netns(pid: i32, path: &Path) -> io::Result<UnixDatagram> {
    let ns = File::open(format!("/proc/{}/ns/net", pid))?;
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace descriptor; it changes only this short-lived
        // thread's network namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        UnixDatagram::bind(&path)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the socket thread panicked")))
}
