//! Real servers on loopback for the end-to-end tests: three HTTP backends,
//! HAProxy in front of them with its runtime API, and sshd with a test key
//! so at least one node is patched over SSH. Everything is torn down when
//! the fixture is dropped.

pub mod pair;
pub mod pool;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::root;

/// Whether the real servers are installed. Without them the test is
/// skipped, except under CI (CI=true), where a missing server is a failure.
pub fn servers_available(needed: &[&str]) -> bool {
    let missing: Vec<&&str> = needed.iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {missing:?} are missing: `bash tests/run.sh` installs them with apt-get"
    );
    eprintln!("skipping: {missing:?} not installed (bash tests/run.sh installs them)");
    false
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// Waits until something accepts connections on a loopback port.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts HAProxy in the foreground on `config` and waits for its front end.
pub fn start_haproxy(dir: &Path, config: &str, front: u16) -> Server {
    std::fs::write(dir.join("haproxy.cfg"), config).expect("haproxy config");
    let haproxy = Server(
        Command::new("/usr/sbin/haproxy")
            .args(["-db", "-f"])
            .arg(dir.join("haproxy.cfg"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    wait_port(front);
    haproxy
}

pub fn python() -> String {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn node_sh() -> PathBuf {
    root().join("tests/fixtures/node.sh")
}

/// One backend "host": a directory, a port and its version.
pub struct Backend {
    pub name: String,
    pub server: String,
    pub dir: PathBuf,
    pub port: u16,
}

impl Backend {
    pub fn create(base: &Path, index: usize, version: &str) -> Self {
        let dir = base.join(format!("node{index}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        std::fs::write(dir.join("version"), format!("{version}\n")).expect("version");
        let backend = Self { name: format!("web-{index}"), server: format!("web{index}"), dir, port: free_port() };
        let status = Command::new(node_sh())
            .args(["start", &backend.dir.display().to_string(), &backend.port.to_string(), &python()])
            .status()
            .expect("start backend");
        assert!(status.success());
        wait_port(backend.port);
        backend
    }

    /// The version the running process serves.
    pub fn serving(&self) -> String {
        http_get(&format!("http://127.0.0.1:{}/", self.port))
            .unwrap_or_default()
            .trim()
            .trim_start_matches("version ")
            .to_string()
    }

    pub fn installed(&self) -> String {
        std::fs::read_to_string(self.dir.join("version")).unwrap_or_default().trim().to_string()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

pub fn http_get(url: &str) -> Option<String> {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build().get(url).call().ok()?.into_string().ok()
}

/// Continuous client load through the front end until stopped, bounded in
/// time; counts requests, failures and the slowest answer.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<(u64, Duration, Vec<String>)>>,
}

#[derive(Debug)]
pub struct LoadReport {
    pub requests: u64,
    pub failed: u64,
    pub max_latency: Duration,
    pub errors: Vec<String>,
}

impl Load {
    pub fn start(url: &str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let handles = (0..threads)
            .map(|_| {
                let (stop, sent, url) = (stop.clone(), sent.clone(), url.to_string());
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
                    let (mut failed, mut slowest, mut errors) = (0, Duration::ZERO, Vec::new());
                    // Bounded: never more than two minutes of load.
                    while !stop.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(120) {
                        let t = Instant::now();
                        let ok = match agent.get(&url).call() {
                            Ok(r) if r.status() == 200 => r.into_string().is_ok_and(|b| b.starts_with("version ")),
                            Ok(r) => {
                                errors.push(format!("status {}", r.status()));
                                false
                            }
                            Err(e) => {
                                errors.push(e.to_string());
                                false
                            }
                        };
                        slowest = slowest.max(t.elapsed());
                        sent.fetch_add(1, Ordering::AcqRel);
                        failed += u64::from(!ok);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    (failed, slowest, errors)
                })
            })
            .collect();
        Self { stop, sent, threads: handles }
    }

    /// Keeps the load on until at least `min_requests` were sent, then
    /// stops it and reports.
    pub fn finish(self, min_requests: u64) -> LoadReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sent.load(Ordering::Acquire) < min_requests && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop.store(true, Ordering::Release);
        let mut report = LoadReport { requests: 0, failed: 0, max_latency: Duration::ZERO, errors: Vec::new() };
        for t in self.threads {
            let (failed, slowest, errors) = t.join().expect("load thread");
            report.failed += failed;
            report.max_latency = report.max_latency.max(slowest);
            report.errors.extend(errors);
        }
        report.requests = self.sent.load(Ordering::Acquire);
        report
    }
}
