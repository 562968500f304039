//! The signals `lbwitness run` answers: SIGTERM and SIGINT stop it, SIGHUP
//! reloads the config and reopens the output files.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// A signal the agent acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// SIGTERM: a clean stop.
    Terminate,
    /// SIGINT: a clean stop.
    Interrupt,
    /// SIGHUP: reload.
    Hangup,
}

impl Received {
    /// The signal's name, for the log and the stop record.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
            Self::Hangup => "SIGHUP",
        }
    }
}

/// The handlers, installed once at start: from then on these signals no
/// longer kill the process.
#[derive(Debug)]
pub(super) struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    /// Installs the handlers (needs a tokio runtime with signals enabled).
    pub(super) fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal.
    pub(super) async fn recv(&mut self) -> Received {
        tokio::select! {
            _ = self.terminate.recv() => Received::Terminate,
            _ = self.interrupt.recv() => Received::Interrupt,
            _ = self.hangup.recv() => Received::Hangup,
        }
    }
}
