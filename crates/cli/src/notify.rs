//! The systemd notify protocol (sd_notify(3)), spoken without libsystemd: when `NOTIFY_SOCKET` is set,
//! one datagram per state change goes to that unix socket (a path, or an abstract name written with a
//! leading '@'). `serve` sends READY=1 once it listens, RELOADING=1 then READY=1 around a SIGHUP reload,
//! and STOPPING=1 when it starts shutting down. Without `NOTIFY_SOCKET` every call does nothing.

use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// A connection to the service manager's notify socket (connected at start, while still root: the
/// socket's permissions are checked at connect, so the messages still go out after a privilege drop).
#[derive(Debug)]
pub struct Notifier {
    socket: Option<UnixDatagram>,
}

impl Notifier {
    /// Connects to `NOTIFY_SOCKET`; none set: a notifier that sends nothing. A socket that cannot be
    /// reached is logged once and ignored (the server serves all the same).
    pub fn from_env() -> Notifier {
        let Some(target) = std::env::var_os(NOTIFY_SOCKET_ENV) else { return Notifier { socket: None } };
        let target = target.to_string_lossy().into_owned();
        match connect(&target) {
            Ok(socket) => Notifier { socket: Some(socket) },
            Err(error) => {
                tracing::warn!(socket = %target, %error, "cannot reach the service manager's notify socket");
                Notifier { socket: None }
            }
        }
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines); failures are logged, never fatal.
    pub fn send(&self, state: &str) {
        let Some(socket) = &self.socket else { return };
        if let Err(error) = socket.send(state.as_bytes()) {
            tracing::warn!(%error, state, "cannot notify the service manager");
        }
    }

    /// The server listens and serves.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// A reload (SIGHUP) begins; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        self.send("RELOADING=1\nSTATUS=reloading");
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// A datagram socket connected to `target`: a file system path, or an abstract name as "@name".
fn connect(target: &str) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.connect_addr(&addr)?;
    } else {
        socket.connect(target)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_sockets_receive_the_states() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mailroom-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier { socket: Some(connect(&format!("@{name}")).unwrap()) };
        n.ready();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier { socket: Some(connect(path.to_str().unwrap()).unwrap()) };
        n.stopping();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=stopping");
    }
}
