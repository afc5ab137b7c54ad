//! What a saved result says about the run that made it, so that two files
//! can be compared months apart: the version of its format and of the
//! tool, when it started, the exact command line, and the machine's cores.

use serde_json::{Value, json};
use std::time::SystemTime;

/// The version of the `--json` format. Raised when a field changes
/// meaning or disappears; new fields do not raise it.
pub const SCHEMA_VERSION: u64 = 1;

/// The circumstances of one run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// When the run started.
    pub started: SystemTime,
    /// The command line, program name first.
    pub command: Vec<String>,
}

impl RunInfo {
    /// This process's run, starting now.
    pub fn now() -> RunInfo {
        RunInfo {
            started: SystemTime::now(),
            command: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        }
    }

    /// The fields every `--json` result starts with.
    pub fn json(&self) -> Value {
        json!({
            "schema_version": SCHEMA_VERSION,
            "tool": "echo-bench",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "started_at": rfc3339(self.started),
            "command": self.command,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        })
    }

    /// `report` (one JSON object) with these fields in front.
    pub fn around(&self, report: Value) -> Value {
        let mut v = self.json();
        if let (Some(o), Value::Object(r)) = (v.as_object_mut(), report) {
            o.extend(r);
        }
        v
    }
}

/// `2026-12-07T13:29:04.123Z`: a time in UTC, to the millisecond.
pub fn rfc3339(t: SystemTime) -> String {
    let at = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{at:.3}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_649_544_123);
        assert_eq!(rfc3339(t), "2026-12-07T13:19:04.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
