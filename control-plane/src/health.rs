//! Health checks `/readyz` reports, in kube-apiserver's format: one `[+]name ok` or
//! `[-]name failed: reason` line per check, and a failure overall while any check fails.
//!
//! Long-lived components (each controller) register a check and flip it as they die and come
//! back; the API server only reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The named checks, shared by whoever reports and whoever serves them.
#[derive(Clone, Default)]
pub struct Checks {
    inner: Arc<Mutex<BTreeMap<String, Option<String>>>>,
}

/// What the checks say at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every check by name: `None` when it passes, else why it fails.
    pub checks: Vec<(String, Option<String>)>,
}

impl Checks {
    /// Marks `name` as passing (registering it if new).
    pub fn pass(&self, name: &str) {
        self.lock().insert(name.to_string(), None);
    }

    /// Marks `name` as failing because of `reason`.
    pub fn fail(&self, name: &str, reason: impl Into<String>) {
        self.lock().insert(name.to_string(), Some(reason.into()));
    }

    /// The current state of every check, by name.
    pub fn report(&self) -> Report {
        Report {
            checks: self
                .lock()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<String>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Report {
    /// Whether every check passes.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|(_, failure)| failure.is_none())
    }

    /// The body of `/<endpoint>`: `ok` when everything passes and `verbose` is not asked for;
    /// otherwise one line per check (`ping` first, always passing once serving) and the
    /// verdict, as kube-apiserver writes it (it lists the checks on failure even unasked).
    pub fn body(&self, endpoint: &str, verbose: bool) -> String {
        let passed = self.passed();
        if passed && !verbose {
            return "ok".to_string();
        }
        let mut out = String::from("[+]ping ok\n");
        for (name, failure) in &self.checks {
            match failure {
                None => out.push_str(&format!("[+]{name} ok\n")),
                Some(reason) => out.push_str(&format!("[-]{name} failed: {reason}\n")),
            }
        }
        if passed {
            out.push_str(&format!("{endpoint} check passed\n"));
        } else {
            out.push_str(&format!("{endpoint} check failed\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_check_fails_the_whole_report_and_says_why() {
        let checks = Checks::default();
        checks.pass("controller/job");
        checks.pass("controller/deployment");
        assert!(checks.report().passed());
        assert_eq!(checks.report().body("readyz", false), "ok");
        assert_eq!(
            checks.report().body("readyz", true),
            "[+]ping ok\n[+]controller/deployment ok\n[+]controller/job ok\nreadyz check passed\n"
        );

        checks.fail("controller/job", "panicked: boom");
        let report = checks.report();
        assert!(!report.passed());
        // Listed even when not asked for, as upstream does on failure.
        for verbose in [false, true] {
            assert_eq!(
                report.body("readyz", verbose),
                "[+]ping ok\n[+]controller/deployment ok\n[-]controller/job failed: panicked: boom\nreadyz check failed\n"
            );
        }

        checks.pass("controller/job");
        assert!(checks.report().passed());
    }
}
