//! A TCP proxy in front of PostgreSQL that a test can cut and restore, to
//! make the database vanish the way a crash or a network failure does:
//! open connections drop and new ones are refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards connections on a local port to `target` until [`cut`](Self::cut).
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    /// A proxy on a free local port to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("a bound address");
        let proxy = TcpProxy {
            addr,
            target,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        proxy.serve(listener);
        proxy
    }

    /// A proxy to the PostgreSQL of `database_url`, and `database_url`
    /// rewritten to go through it.
    pub async fn for_database(database_url: &str) -> (TcpProxy, String) {
        let mut url = url::Url::parse(database_url).expect("a database URL");
        let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = url.port().unwrap_or(5432);
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("the database host resolves")
            .next()
            .expect("an address");
        let proxy = TcpProxy::start(target).await;
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.set_port(Some(proxy.addr.port())).expect("a port");
        (proxy, url.to_string())
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones (the port closes).
    pub fn cut(&self) {
        for task in self.tasks.lock().expect("not poisoned").drain(..) {
            task.abort();
        }
    }

    /// Listens again on the same port after a [`cut`](Self::cut).
    pub async fn restore(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the proxy's port is free again");
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let tasks = Arc::clone(&self.tasks);
        let target = self.target;
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().expect("not poisoned").push(task);
            }
        });
        self.tasks.lock().expect("not poisoned").push(accept);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
