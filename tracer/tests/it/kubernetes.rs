//! The Kubernetes manifests: valid against the API schemas (PyPI
//! `kubernetes-validate`, offline), and consistent with the systemd unit:
//! the same capabilities, the host's network, the mounts the daemon reads.

use std::process::Command;

use testkit::process::tool_output;

const MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/kubernetes/tracer.yaml"
);
const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/systemd/tracer.service"
);

#[test]
fn manifests_validate_offline() {
    let (status, text) = tool_output(
        Command::new("kubernetes-validate").args(["--strict", MANIFEST]),
        "kubernetes-validate (PyPI; `cargo xtask test` installs it)",
    );
    assert!(status.success(), "{text}");
    for kind in [
        "namespace/tracer",
        "serviceaccount/tracer",
        "daemonset/tracer",
        "service/tracer",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{text}"
        );
    }
    assert!(!text.contains("ERROR") && !text.contains("WARN"), "{text}");
}

#[test]
fn daemonset_has_what_the_daemon_needs_and_no_more() {
    let m = std::fs::read_to_string(MANIFEST).expect("manifest");
    for needed in [
        "hostNetwork: true",
        "hostPID: true",
        "path: /sys/kernel/btf",
        "path: /sys/kernel/tracing",
        "path: /readyz",
        "path: /healthz",
        "drop: [\"ALL\"]",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "requests:",
        "limits:",
        "--listen=0.0.0.0:9840",
    ] {
        assert!(m.contains(needed), "the DaemonSet lacks {needed:?}");
    }
    assert!(!m.contains("privileged: true"), "privileged container");
    // The same capabilities as the systemd unit.
    let unit = std::fs::read_to_string(UNIT).expect("unit");
    let mut unit_caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    let mut pod_caps: Vec<String> = m
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: ["))
        .expect("capabilities.add")
        .trim_end_matches(']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect();
    unit_caps.sort();
    pod_caps.sort();
    assert_eq!(pod_caps, unit_caps);
}
