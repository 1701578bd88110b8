//! A thread running an actix System of its own: it starts something there (a node, a whole
//! in-process cluster), hands back what the caller needs of it, keeps it running until told to
//! stop, then shuts it down. The embedded cluster runs one such thread per node, as separate
//! processes would; the in-process cluster one for all its nodes.

use futures::future::LocalBoxFuture;
use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long what a thread starts may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct SystemThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SystemThread {
    /// Start the thread `name`, run `start` on its System and wait for it: `start` resolves to
    /// what the caller gets back and to what keeps running, which `shutdown` is given once the
    /// thread is told to [`stop`](Self::stop). `what` names it in errors.
    pub(super) fn spawn<Handed, Running, Start, Started>(
        name: String,
        what: &str,
        start: Start,
        shutdown: impl FnOnce(Running) -> LocalBoxFuture<'static, ()> + Send + 'static,
    ) -> Result<(SystemThread, Handed), String>
    where
        Handed: Send + 'static,
        Start: FnOnce() -> Started + Send + 'static,
        Started: Future<Output = Result<(Handed, Running), String>> + 'static,
    {
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    match start().await {
                        Ok((handed, running)) => {
                            let _ = started_tx.send(Ok(handed));
                            let _ = stop_rx.await;
                            shutdown(running).await;
                        }
                        Err(error) => {
                            let _ = started_tx.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let mut started = SystemThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match started_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(handed)) => Ok((started, handed)),
            Ok(Err(error)) => {
                started.stop();
                Err(error)
            }
            Err(_) => {
                started.request_stop();
                Err(format!("{what} did not start"))
            }
        }
    }

    /// Tell the thread to shut down what it runs and end (without waiting for it).
    pub(super) fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stop the thread and wait for it to end.
    pub(super) fn stop(&mut self) {
        self.request_stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
