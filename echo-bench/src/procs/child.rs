//! A child's side of a `--procs` run: its part of the run, told to its
//! parent one JSON line at a time, started and stopped by its parent's
//! `go` and `stop`.

use super::*;

/// An event as the one line the parent reads.
pub(super) fn event_line(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Runs this process's part `cfg` as a child: waits for the parent's `go`
/// (read from `control`) before opening the window, stops on `stop` or at
/// the end of `control`, and on an `interrupted` flag (its own Ctrl+C);
/// writes its events to `out`. Errors writing to `out` (the parent is
/// gone) stop the run; they are not returned.
pub fn child_session<R, W>(
    cfg: &Config,
    live: Arc<Live>,
    control: R,
    interrupted: &AtomicBool,
    out: &mut W,
) where
    R: BufRead + Send + 'static,
    W: Write,
{
    live.close_gate();
    let ctl_live = Arc::clone(&live);
    // Reads the parent's words; on EOF (or a read error) the parent is
    // gone: stop. The thread ends with its input; it is not joined, as a
    // parent that never closes our stdin must not keep us from exiting.
    let _ = thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for line in control.lines() {
                match line.as_deref().map(str::trim) {
                    Ok("go") => ctl_live.open_gate(),
                    Ok("stop") => break,
                    Ok(other) => warn!("unknown word from the parent: {other:?}"),
                    Err(_) => break,
                }
            }
            ctl_live.request_stop();
            ctl_live.open_gate();
        });
    let engine_cfg = cfg.clone();
    let engine_live = Arc::clone(&live);
    let engine = thread::Builder::new()
        .name("engine".into())
        .spawn(move || crate::run_counts(&engine_cfg, engine_live));
    let engine = match engine {
        Ok(h) => h,
        Err(e) => {
            let _ = out.write_all(event_line(&error_event(&BenchError::Io(e))).as_bytes());
            return;
        }
    };
    let mut said_ready = false;
    let mut last_progress = Instant::now();
    let send = |out: &mut W, v: &Value| {
        if out
            .write_all(event_line(v).as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            live.request_stop();
            live.open_gate();
        }
    };
    let send_intervals = |out: &mut W| {
        for i in live.intervals.take_ready() {
            send(out, &i.to_event());
        }
    };
    while !engine.is_finished() {
        thread::sleep(TICK);
        send_intervals(out);
        if interrupted.load(Ordering::Relaxed) && !live.stop_requested() {
            live.request_stop();
            live.open_gate();
        }
        if !said_ready && live.all_settled(cfg.threads) {
            said_ready = true;
            send(out, &json!({ "event": "ready" }));
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            send(
                out,
                &json!({
                    "event": "progress",
                    "messages": Live::get(&live.messages),
                    "established": Live::get(&live.established),
                    "failed": Live::get(&live.failed),
                    "errors": Live::get(&live.errors),
                }),
            );
        }
    }
    let joined = engine.join();
    send_intervals(out);
    let v = match joined {
        Ok(Ok(outcome)) => json!({
            "event": "result",
            "pid": std::process::id(),
            "outcome": outcome_to_json(&outcome),
        }),
        Ok(Err(e)) => error_event(&e),
        Err(_) => error_event(&BenchError::Io(io::Error::other("the engine panicked"))),
    };
    send(out, &v);
}

/// Writes the `error` event of a child that cannot even start its part
/// (its flags do not give one); a write error means the parent is gone.
pub fn write_child_error<W: Write>(out: &mut W, message: &str) {
    let line = event_line(&json!({ "event": "error", "message": message }));
    let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
}

/// The `error` event for a run that could not happen.
pub(super) fn error_event(e: &BenchError) -> Value {
    json!({ "event": "error", "message": e.to_string() })
}

/// An [`Outcome`] as JSON.
pub(super) fn outcome_to_json(o: &Outcome) -> Value {
    json!({
        "stats": o.stats.to_json(),
        "sources": o.sources,
        "req_per_s": o.req_per_s,
        "bytes_per_s": o.bytes_per_s,
        "first_error": o.first_error,
    })
}

/// The inverse of [`outcome_to_json`].
pub(super) fn outcome_from_json(v: &Value) -> Result<Outcome, String> {
    let float = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| format!("field {k:?} is not a number"))
    };
    Ok(Outcome {
        stats: Stats::from_json(&v["stats"])?,
        sources: v["sources"]
            .as_u64()
            .ok_or("field \"sources\" is not a count")? as usize,
        req_per_s: float("req_per_s")?,
        bytes_per_s: float("bytes_per_s")?,
        first_error: v["first_error"].as_str().map(str::to_string),
    })
}
