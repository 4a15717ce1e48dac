//! nginx answering 200 over TLS, where it is installed: the first anchor of issue 25's
//! measure, read beside this benchmark's own (hyper + rustls) in the same run, so that
//! figures taken against either can be compared.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fb_openchannel::sim::tls::TestCerts;

/// A running nginx, stopped when dropped.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nginx (two workers, keep-alive, `return 200`) on a free loopback port with the
/// run's certificate, in `dir`; `None` when there is no nginx on this machine.
pub fn start(certs: &TestCerts, dir: &Path) -> Option<Nginx> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("logs")).ok()?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?;
    let conf = format!(
        "worker_processes 2;
pid {pid};
error_log {root}/logs/error.log error;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {root}/body;
    server {{
        listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 \"EVENT_RECEIVED\"; }}
    }}
}}
",
        pid = root.join("nginx.pid").display(),
        root = root.display(),
        cert = certs.cert_path.display(),
        key = certs.key_path.display(),
    );
    let conf_path = root.join("nginx.conf");
    std::fs::write(&conf_path, conf).ok()?;
    let child = Command::new(binary)
        .arg("-p")
        .arg(&root)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let nginx = Nginx { child, addr };
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(5) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(nginx)
}
