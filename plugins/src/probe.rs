//! `http` and `tcp` probes: sample the service endpoint continuously during
//! a run (default 10 per second), count every failure with its time, and
//! smoke-test single nodes for `probe(n)`.
//!
//! Interruption is counted as one sampling period per failed sample, so at
//! 10 samples/s it is accurate to 0.1 s.

use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use handlebars::Handlebars;
use pitcrew_runtime::adapter::{CallCtx, NodeRef, ProbeAdapter, ProbeReport, TrafficSample};
use pitcrew_runtime::{AdapterError, Cluster};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeSettings {
    /// The service endpoint users reach (e.g. the load balancer).
    pub url: String,
    /// One node's endpoint for `probe(n)`, a template: `http://{{address}}:{{vars.port}}/`.
    pub node_url: Option<String>,
    #[serde(default = "default_rate")]
    pub rate: f64,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_requests")]
    pub probe_requests: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbeSettings {
    /// The service address, `host:port`.
    pub address: String,
    /// One node's address for `probe(n)`, a template: `{{address}}:{{vars.port}}`.
    pub node_address: Option<String>,
    #[serde(default = "default_rate")]
    pub rate: f64,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_requests")]
    pub probe_requests: u64,
}

fn default_rate() -> f64 {
    10.0
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_requests() -> u64 {
    5
}

/// One check of an endpoint: true when it answered well.
type Check = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Debug, Default)]
struct Samples {
    requests: u64,
    failed: u64,
    interruption: Duration,
    failures: Vec<Instant>,
}

/// The sampler and smoke test shared by both probe kinds.
pub struct ServiceProbe {
    target: String,
    node_target: Option<String>,
    period: Duration,
    requests: u64,
    check: Check,
    samples: Arc<Mutex<Samples>>,
    started: AtomicBool,
}

impl ServiceProbe {
    pub fn http(settings: HttpProbeSettings) -> Result<Self, String> {
        let agent = ureq::AgentBuilder::new().timeout(settings.timeout).build();
        let check: Check = Arc::new(move |url: &str| agent.get(url).call().is_ok_and(|r| r.status() < 400));
        Self::new(settings.url, settings.node_url, settings.rate, settings.probe_requests, check)
    }

    pub fn tcp(settings: TcpProbeSettings) -> Result<Self, String> {
        let timeout = settings.timeout;
        let check: Check = Arc::new(move |address: &str| {
            address
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, timeout).is_ok())
        });
        Self::new(settings.address, settings.node_address, settings.rate, settings.probe_requests, check)
    }

    fn new(
        target: String,
        node_target: Option<String>,
        rate: f64,
        requests: u64,
        check: Check,
    ) -> Result<Self, String> {
        if !(rate > 0.0 && rate <= 1000.0) {
            return Err(format!("rate {rate} must be between 0 and 1000 samples per second"));
        }
        if let Some(t) = &node_target {
            Handlebars::new()
                .render_template(t, &json!({"node": "", "address": "", "vars": {}}))
                .map_err(|e| format!("node template: {e}"))?;
        }
        Ok(Self {
            target,
            node_target,
            period: Duration::from_secs_f64(1.0 / rate),
            requests,
            check,
            samples: Arc::default(),
            started: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl ProbeAdapter for ServiceProbe {
    async fn start(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let (samples, check, target, period) =
            (self.samples.clone(), self.check.clone(), self.target.clone(), self.period);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let (check, target) = (check.clone(), target.clone());
                let ok = tokio::task::spawn_blocking(move || check(&target)).await.unwrap_or(false);
                let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
                s.requests += 1;
                if !ok {
                    s.failed += 1;
                    s.interruption += period;
                    s.failures.push(Instant::now());
                }
            }
        });
    }

    async fn probe(&self, node: NodeRef<'_>, ctx: &CallCtx) -> Result<ProbeReport, AdapterError> {
        let target = match &self.node_target {
            Some(template) => {
                let context = json!({"node": node.node.name, "address": node.node.address.clone().unwrap_or_else(|| "127.0.0.1".into()), "vars": node.node.vars});
                let mut hb = Handlebars::new();
                hb.register_escape_fn(handlebars::no_escape);
                hb.set_strict_mode(true);
                hb.render_template(template, &context)
                    .map_err(|e| AdapterError::Failed(format!("probe target for {}: {e}", node.node.name)))?
            }
            None => {
                return Err(AdapterError::Unsupported(
                    "probe(n) without `node_url`/`node_address` in the probe settings".into(),
                ))
            }
        };
        let started = Instant::now();
        let mut failed = 0;
        for _ in 0..self.requests {
            let (check, t) = (self.check.clone(), target.clone());
            if !tokio::task::spawn_blocking(move || check(&t)).await.unwrap_or(false) {
                failed += 1;
            }
        }
        ctx.transcript.push(json!({ "probe": target, "requests": self.requests, "failed": failed }));
        let latency_ms = started.elapsed().as_secs_f64() * 1e3 / self.requests.max(1) as f64;
        Ok(ProbeReport { requests: self.requests, failed, latency_ms })
    }

    async fn sample(&self, _cluster: &Cluster) -> Result<TrafficSample, AdapterError> {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        Ok(TrafficSample { requests: s.requests, failed: s.failed, interruption: s.interruption })
    }
}
