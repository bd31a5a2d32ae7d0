//! Built-ins that shape a run: batches, rollback, parameters, logging, time.

use rhai::plugin::*;

/// How one node of a `rolling` batch ended.
pub enum NodeRun {
    Done,
    /// A catchable failure (the node was unwound when rollback is on).
    Failed(Box<rhai::EvalAltResult>),
    /// Stops the run: cancellation, or an unwinding that left users unsafe.
    Fatal(Box<rhai::EvalAltResult>),
}

#[export_module]
pub mod flow_api {
    use std::time::Duration;

    use pitcrew_runtime::{Action, ErrorKind, Event, StepError};
    use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext};

    use super::NodeRun;
    use crate::handles::NodeHandle;
    use crate::host::{host, to_dynamic, to_rhai, RhaiResult};

    /// Unwinds everything this run did, newest first: undrain, fail back to
    /// the unpatched node, restore snapshots. Returns
    /// `#{ steps, failures, service_restored }`; a run that rolled back
    /// exits with status 1 even if the playbook goes on.
    ///
    /// ```rhai
    /// let n = cluster("web").nodes[0];
    /// drain(n);
    /// let r = rollback();
    /// log(`undid ${r.steps} step(s)`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn rollback(ctx: NativeCallContext) -> RhaiResult<Map> {
        let host = host(&ctx)?;
        let report = host.exec.rollback("rollback() called by the playbook");
        let mut map = Map::new();
        map.insert("steps".into(), (report.steps as i64).into());
        map.insert(
            "failures".into(),
            report.failures.iter().map(|f| Dynamic::from(f.clone())).collect::<Array>().into(),
        );
        map.insert("service_restored".into(), report.service_restored().into());
        let restored = report.service_restored();
        let problems = report.unsafe_service.join("; ");
        if let Ok(mut last) = host.last_rollback.lock() {
            *last = Some(report);
        }
        if !restored {
            return Err(to_rhai(
                StepError::new(
                    ErrorKind::Failed,
                    Action::Rollback,
                    format!("rollback could not restore the service: {problems}"),
                )
                .with_hint("a human must look at the cluster now"),
            ));
        }
        Ok(map)
    }

    /// Runs `f(node)` for every node, in batches. Options (all optional,
    /// defaults from the cluster's policy): `batch`, `max_failures` (node
    /// failures tolerated; a failed node is rolled back on its own and the
    /// run goes on), `max_error_rate` (after each batch, watch the cluster's
    /// probe for `watch_s` seconds, default 30, and halt with `error_budget`
    /// if the share of failed user requests since the batch began is above
    /// it), `parallel` (false: the nodes of a batch run one after another;
    /// true: at once, each in its own lane, and the batch's failures are
    /// counted when all of them end). Returns `#{ done, failed, batches }`.
    ///
    /// ```rhai
    /// let web = cluster("web");
    /// rolling(web.nodes, #{ batch: 1, max_failures: 0 }, |n| {
    ///     drain(n);
    ///     patch(n);
    ///     reboot(n);
    ///     undrain(n);
    /// });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn rolling(ctx: NativeCallContext, nodes: Array, opts: Map, f: FnPtr) -> RhaiResult<Map> {
        const KNOWN: [&str; 5] = ["batch", "max_failures", "max_error_rate", "watch_s", "parallel"];
        if let Some(key) = opts.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("rolling: unknown option `{key}`; options are {}", KNOWN.join(", ")).into());
        }
        let host = host(&ctx)?;
        let nodes: Vec<NodeHandle> = nodes
            .into_iter()
            .map(|d| {
                d.try_cast::<NodeHandle>()
                    .ok_or_else(|| "rolling: the first argument must be an array of nodes (c.nodes)".into())
            })
            .collect::<RhaiResult<_>>()?;
        let mut result = Map::new();
        let Some(first) = nodes.first() else {
            return Ok(result);
        };
        let cluster = host.exec.cluster(&first.cluster).map_err(to_rhai)?;
        let batch = super::option_int(&opts, "batch")?.unwrap_or(cluster.policy.batch).max(1);
        let max_failures = super::option_int(&opts, "max_failures")?.unwrap_or(cluster.policy.max_failures);
        let max_error_rate = super::option_float(&opts, "max_error_rate")?;
        let parallel = match opts.get("parallel") {
            None => false,
            Some(v) => v.as_bool().map_err(|_| "rolling: `parallel` must be true or false")?,
        };
        let watch = super::option_float(&opts, "watch_s")?.unwrap_or(if max_error_rate.is_some() { 30.0 } else { 0.0 });
        let watch = Duration::try_from_secs_f64(watch)
            .map_err(|_| "rolling: `watch_s` must be a positive number of seconds")?;
        let batches = nodes.len().div_ceil(batch);
        let (mut done, mut failed) = (Array::new(), Array::new());
        for (b, chunk) in nodes.chunks(batch).enumerate() {
            let names: Vec<&str> = chunk.iter().map(|n| n.name.as_str()).collect();
            host.exec.log(&format!("batch {}/{batches}: {}", b + 1, names.join(", ")));
            host.exec.emit(Event::BatchStarted {
                at: host.exec.now(),
                cluster: cluster.name.clone(),
                index: b + 1,
                of: batches,
                nodes: names.iter().map(ToString::to_string).collect(),
            });
            let failed_before = failed.len();
            let mut error_rate = None;
            let before = host.exec.sample(cluster).map_err(to_rhai)?;
            // One node: `f(node)`; a catchable failure unwinds that node alone.
            let attempt = |ctx: &NativeCallContext, node: &NodeHandle| -> NodeRun {
                let mark = host.exec.mark();
                match f.call_within_context::<Dynamic>(ctx, (Dynamic::from(node.clone()),)) {
                    Ok(_) => NodeRun::Done,
                    Err(e) if !e.unwrap_inner().is_catchable() => NodeRun::Fatal(e),
                    Err(e) => {
                        if host.rollback_on_failure {
                            let report = host.exec.rollback_to(mark, &format!("{} failed inside rolling", node.name));
                            if !report.service_restored() {
                                return NodeRun::Fatal(to_rhai(
                                    StepError::new(
                                        ErrorKind::Failed,
                                        Action::Rollback,
                                        format!(
                                            "unwinding {} did not restore the service: {}",
                                            node.name,
                                            report.unsafe_service.join("; ")
                                        ),
                                    )
                                    .on_cluster(&cluster.name)
                                    .with_hint("a human must look at the cluster now"),
                                ));
                            }
                        }
                        NodeRun::Failed(e)
                    }
                }
            };
            // In parallel, every node of the batch runs to its end before
            // the failures are counted; one after another, the first failure
            // over the budget stops the batch.
            // `store_data` is volatile, not deprecated: it is how a closure is
            // called from another thread.
            #[allow(deprecated)]
            let mut runs: Vec<NodeRun> = if parallel && chunk.len() > 1 {
                // Every cluster the batch names is snapshot before the lanes
                // start, so that no lane races for it.
                for node in chunk {
                    host.exec.snapshot(host.exec.cluster(&node.cluster).map_err(to_rhai)?).map_err(to_rhai)?;
                }
                let store = ctx.store_data();
                let engine = ctx.engine();
                host.exec.lanes(chunk.len(), |i| attempt(&store.create_context(engine), &chunk[i]))
            } else {
                Vec::new()
            };
            // A lane that must stop the run outranks the failures before it.
            if let Some(i) = runs.iter().position(|r| matches!(r, NodeRun::Fatal(_))) {
                if let NodeRun::Fatal(e) = runs.swap_remove(i) {
                    return Err(e);
                }
            }
            let mut runs = runs.into_iter();
            for node in chunk {
                let run = match runs.next() {
                    Some(run) => run,
                    None => attempt(&ctx, node),
                };
                match run {
                    NodeRun::Done => done.push(node.name.clone().into()),
                    NodeRun::Fatal(e) => return Err(e),
                    NodeRun::Failed(e) => {
                        failed.push(node.name.clone().into());
                        if failed.len() > max_failures {
                            if max_failures == 0 {
                                return Err(e);
                            }
                            return Err(to_rhai(
                                StepError::new(
                                    ErrorKind::ErrorBudget,
                                    Action::Rolling,
                                    format!(
                                        "{} node(s) failed, more than max_failures {max_failures}; last: {}",
                                        failed.len(),
                                        e.unwrap_inner()
                                    ),
                                )
                                .on_cluster(&cluster.name)
                                .with_hint(
                                    "the failed nodes were returned to service unpatched; fix the cause and run again",
                                ),
                            ));
                        }
                        host.exec.log(&format!(
                            "{} failed ({}); {} of {max_failures} failure(s) used, going on",
                            node.name,
                            e.unwrap_inner(),
                            failed.len()
                        ));
                    }
                }
            }
            if let (Some(max), Some(batch_start)) = (max_error_rate, before) {
                let watch_start = host.exec.sample(cluster).map_err(to_rhai)?.unwrap_or(batch_start);
                host.exec.sleep(watch).map_err(to_rhai)?;
                if let Some(after) = host.exec.sample(cluster).map_err(to_rhai)? {
                    // The watch window shows the batch's steady state; the
                    // whole batch also catches failures while nodes were out.
                    let rate = |from: pitcrew_runtime::adapter::TrafficSample| {
                        let requests = after.requests.saturating_sub(from.requests);
                        let errors = after.failed.saturating_sub(from.failed);
                        (if requests == 0 { 0.0 } else { errors as f64 / requests as f64 }, errors, requests)
                    };
                    let (watch_rate, errors, requests) = rate(watch_start);
                    let (batch_rate, ..) = rate(batch_start);
                    let worst = watch_rate.max(batch_rate);
                    error_rate = Some(worst);
                    host.exec.log(&format!(
                        "batch {}/{batches}: error rate {:.2}% while watching {}s ({errors} of {requests}), {:.2}% over the batch",
                        b + 1,
                        watch_rate * 100.0,
                        watch.as_secs(),
                        batch_rate * 100.0
                    ));
                    if worst > max {
                        return Err(to_rhai(
                            StepError::new(
                                ErrorKind::ErrorBudget,
                                Action::Rolling,
                                format!(
                                    "error rate {:.2}% after batch {}/{batches} ({}) is above max_error_rate {:.2}%",
                                    worst * 100.0,
                                    b + 1,
                                    names.join(", "),
                                    max * 100.0
                                ),
                            )
                            .on_cluster(&cluster.name)
                            .with_hint(
                                "the run halts here; rollback returns every patched node to its previous version",
                            ),
                        ));
                    }
                }
            }
            host.exec.emit(Event::BatchFinished {
                at: host.exec.now(),
                cluster: cluster.name.clone(),
                index: b + 1,
                of: batches,
                failed: failed[failed_before..].iter().map(ToString::to_string).collect(),
                error_rate,
            });
        }
        result.insert("done".into(), done.into());
        result.insert("failed".into(), failed.into());
        result.insert("batches".into(), (batches as i64).into());
        Ok(result)
    }

    /// `rolling` with the cluster policy's batch size and failure budget.
    ///
    /// ```rhai
    /// rolling(cluster("web").nodes, |n| { log(n.name); });
    /// ```
    #[rhai_fn(name = "rolling", return_raw)]
    pub fn rolling_default(ctx: NativeCallContext, nodes: Array, f: FnPtr) -> RhaiResult<Map> {
        rolling(ctx, nodes, Map::new(), f)
    }

    /// A parameter given with `--param name=value`; throws if absent.
    ///
    /// ```rhai
    /// let target = param("target", "db-pair");
    /// log(target);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn param(ctx: NativeCallContext, name: &str) -> RhaiResult<Dynamic> {
        let host = host(&ctx)?;
        match host.params.get(name) {
            Some(value) => to_dynamic(value),
            None => Err(to_rhai(
                StepError::new(ErrorKind::Invalid, Action::Param, format!("the playbook needs parameter `{name}`"))
                    .with_hint(format!("pass --param {name}=VALUE, or give a default: param(\"{name}\", VALUE)")),
            )),
        }
    }

    /// A parameter given with `--param name=value`, or `default`.
    ///
    /// ```rhai
    /// let switch_back = param("switch_back", false);
    /// if switch_back { log("will switch back"); }
    /// ```
    #[rhai_fn(name = "param", return_raw)]
    pub fn param_or(ctx: NativeCallContext, name: &str, default: Dynamic) -> RhaiResult<Dynamic> {
        let host = host(&ctx)?;
        match host.params.get(name) {
            Some(value) => to_dynamic(value),
            None => Ok(default),
        }
    }

    /// Sends a notification to the sinks the inventory configures (chat,
    /// webhook, file), rendered from the template named like the event.
    /// A failing sink never fails the run; rehearsals send nothing.
    ///
    /// ```rhai
    /// notify("db_patched", #{ cluster: "db-pair", version: "15.6" });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn notify(ctx: NativeCallContext, event: &str, data: Map) -> RhaiResult<()> {
        let host = host(&ctx)?;
        let data: serde_json::Value = rhai::serde::from_dynamic(&Dynamic::from_map(data))?;
        if !host.exec.replaying() {
            host.exec.emit(Event::Notify { at: host.exec.now(), name: event.to_string(), data });
        }
        Ok(())
    }

    /// `notify` without data.
    ///
    /// ```rhai
    /// notify("window_half_done");
    /// ```
    #[rhai_fn(name = "notify", return_raw)]
    pub fn notify_plain(ctx: NativeCallContext, event: &str) -> RhaiResult<()> {
        notify(ctx, event, Map::new())
    }

    /// Writes a line to the run's log (progress output and events).
    ///
    /// ```rhai
    /// log("starting the standby");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn log(ctx: NativeCallContext, message: Dynamic) -> RhaiResult<()> {
        host(&ctx)?.exec.log(&message.to_string());
        Ok(())
    }

    /// Waits `seconds` (virtual seconds in a rehearsal). Cancellable.
    ///
    /// ```rhai
    /// sleep(30);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn sleep(ctx: NativeCallContext, seconds: i64) -> RhaiResult<()> {
        sleep_float(ctx, seconds as f64)
    }

    /// Waits a fractional number of seconds.
    ///
    /// ```rhai
    /// sleep(0.5);
    /// ```
    #[rhai_fn(name = "sleep", return_raw)]
    pub fn sleep_float(ctx: NativeCallContext, seconds: f64) -> RhaiResult<()> {
        let duration =
            Duration::try_from_secs_f64(seconds).map_err(|_| format!("sleep: {seconds} is not a number of seconds"))?;
        host(&ctx)?.exec.sleep(duration).map_err(to_rhai)
    }
}

use rhai::Map;

use crate::host::RhaiResult;

pub fn option_int(opts: &Map, key: &str) -> RhaiResult<Option<usize>> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_int()
            .ok()
            .and_then(|i| usize::try_from(i).ok())
            .map(Some)
            .ok_or_else(|| format!("rolling: `{key}` must be a whole number of at least 0").into()),
    }
}

pub fn option_float(opts: &Map, key: &str) -> RhaiResult<Option<f64>> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .map(Some)
            .map_err(|_| format!("rolling: `{key}` must be a number").into()),
    }
}
