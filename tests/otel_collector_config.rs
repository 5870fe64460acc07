//! Static checks of `otel-collector/config.yaml`, the OpenTelemetry Collector (contrib)
//! configuration that ships tether-pro's traces and metrics into ClickHouse.
//!
//! Every check is a function that returns a list of problems (empty: fine). The real file
//! must yield none; broken copies of it must yield the expected problem, so the checks are
//! known to catch what they claim to catch.
//!
//! The clickhouse exporter's allowed keys come from
//! `tests/fixtures/otel-collector/clickhouse_exporter_keys.txt`, which was read from the
//! upstream exporter's `config.go` (its header names the repository, path and commit).

use std::collections::BTreeSet;

use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

const CONFIG: &str = include_str!("../otel-collector/config.yaml");
const README: &str = include_str!("../otel-collector/README.md");
const CLICKHOUSE_KEYS: &str = include_str!("fixtures/otel-collector/clickhouse_exporter_keys.txt");

/// Component kinds that may appear at the top level of a collector configuration.
const COMPONENT_SECTIONS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
];
/// Signal types a pipeline id may have (`traces`, `metrics/2`, ...).
const PIPELINE_TYPES: [&str; 4] = ["traces", "metrics", "logs", "profiles"];
/// tether-pro's own tables (README "ClickHouse tables"); the exporter must not write to them.
const TETHER_TABLE_PREFIXES: [&str; 3] = ["sync_", "replay", "schema_migrations"];

// ---------------------------------------------------------------------------------------
// The key list fixture
// ---------------------------------------------------------------------------------------

/// Allowed keys of the clickhouse exporter: plain (`endpoint`) and dotted
/// (`metrics_tables.gauge.name`) paths.
struct KeyList {
    keys: BTreeSet<String>,
    header: String,
}

impl KeyList {
    /// Whether the fixture constrains the children of the mapping at `path` (empty: the
    /// exporter's own mapping).
    fn constrains(&self, path: &str) -> bool {
        path.is_empty() || self.keys.iter().any(|k| k.starts_with(&format!("{path}.")))
    }

    fn allows(&self, path: &str, key: &str) -> bool {
        let full = if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        };
        self.keys.contains(&full)
    }
}

/// Parses the fixture: `#` comments, blank lines, one key a line. Reports duplicates, odd
/// characters and dotted keys whose parent is not listed.
fn parse_key_list(text: &str) -> (KeyList, Vec<String>) {
    let mut problems = Vec::new();
    let mut keys = BTreeSet::new();
    let mut header = String::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(comment) = line.strip_prefix('#') {
            header.push_str(comment.trim());
            header.push('\n');
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let well_formed = line.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
        if !well_formed {
            problems.push(format!(
                "key list line {}: {line:?} is not a lowercase key path",
                n + 1
            ));
            continue;
        }
        if !keys.insert(line.to_owned()) {
            problems.push(format!("key list line {}: {line:?} is listed twice", n + 1));
        }
    }
    for key in &keys {
        if let Some((parent, _)) = key.rsplit_once('.')
            && !keys.contains(parent)
        {
            problems.push(format!(
                "key list: {key:?} is listed but its parent {parent:?} is not"
            ));
        }
    }
    (KeyList { keys, header }, problems)
}

// ---------------------------------------------------------------------------------------
// YAML helpers
// ---------------------------------------------------------------------------------------

fn parse_config(text: &str) -> Result<Yaml, String> {
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        n => Err(format!("expected one YAML document, found {n}")),
    }
}

/// `node[key]` when `node` is a mapping and has that key.
fn get<'a>(node: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    node.as_hash()?.get(&Yaml::String(key.to_owned()))
}

/// Follows a path of mapping keys.
fn at<'a>(node: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(node, |n, k| get(n, k))
}

/// The string keys of a mapping, in file order (a null value, `otlp:` with no body, counts as
/// an empty mapping). Non-string keys and non-mapping values are reported.
fn mapping_keys(node: &Yaml, what: &str, problems: &mut Vec<String>) -> Vec<String> {
    match node {
        Yaml::Null => Vec::new(),
        Yaml::Hash(h) => h
            .keys()
            .filter_map(|k| match k.as_str() {
                Some(s) => Some(s.to_owned()),
                None => {
                    problems.push(format!("{what}: key {k:?} is not a string"));
                    None
                }
            })
            .collect(),
        other => {
            problems.push(format!("{what} must be a mapping, found {other:?}"));
            Vec::new()
        }
    }
}

/// A list of component ids (`[otlp, batch]`); null or missing is an empty list.
fn id_list(node: Option<&Yaml>, what: &str, problems: &mut Vec<String>) -> Vec<String> {
    match node {
        None | Some(Yaml::Null) => Vec::new(),
        Some(Yaml::Array(items)) => items
            .iter()
            .filter_map(|item| match item.as_str() {
                Some(s) => Some(s.to_owned()),
                None => {
                    problems.push(format!("{what}: {item:?} is not a component id"));
                    None
                }
            })
            .collect(),
        Some(other) => {
            problems.push(format!("{what} must be a list, found {other:?}"));
            Vec::new()
        }
    }
}

/// The type part of a component id: `otlp` in `otlp` and in `otlp/internal`.
fn component_type(id: &str) -> &str {
    id.split_once('/').map_or(id, |(t, _)| t)
}

/// The collector's id syntax: `type` or `type/name`; type `[A-Za-z][A-Za-z0-9_]{0,62}`, name
/// non-empty without whitespace.
fn id_problem(id: &str) -> Option<String> {
    let (ty, name) = match id.split_once('/') {
        Some((t, n)) => (t, Some(n)),
        None => (id, None),
    };
    let mut chars = ty.chars();
    let type_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && ty.len() <= 63;
    if !type_ok {
        return Some(format!(
            "component id {id:?}: type {ty:?} is not of the form [A-Za-z][A-Za-z0-9_]*"
        ));
    }
    if let Some(name) = name
        && (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Some(format!(
            "component id {id:?}: the name after '/' must be non-empty, without spaces"
        ));
    }
    None
}

/// Ids defined under a top-level section (`exporters:` ...).
fn defined(cfg: &Yaml, section: &str, problems: &mut Vec<String>) -> BTreeSet<String> {
    get(cfg, section).map_or_else(BTreeSet::new, |node| {
        mapping_keys(node, section, problems).into_iter().collect()
    })
}

/// Pipelines in file order: (id, node).
fn pipelines(cfg: &Yaml) -> Vec<(String, &Yaml)> {
    at(cfg, &["service", "pipelines"])
        .and_then(Yaml::as_hash)
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
                .collect()
        })
        .unwrap_or_default()
}

/// The exporters whose type is `clickhouse` (`clickhouse`, `clickhouse/x`).
fn clickhouse_exporters(cfg: &Yaml) -> Vec<(String, &Yaml)> {
    get(cfg, "exporters")
        .and_then(Yaml::as_hash)
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
                .filter(|(k, _)| component_type(k) == "clickhouse")
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

/// Tabs are not allowed anywhere in the file (YAML forbids them in indentation and they make
/// values ambiguous to the eye).
fn check_no_tabs(text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains('\t'))
        .map(|(n, _)| format!("line {}: contains a tab", n + 1))
        .collect()
}

/// The top level has only the sections the collector knows, each a mapping, and a `service`
/// with `pipelines`.
fn check_structure(cfg: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    let top = mapping_keys(cfg, "the configuration", &mut problems);
    for key in &top {
        if !COMPONENT_SECTIONS.contains(&key.as_str()) && key != "service" {
            problems.push(format!("unknown top-level section {key:?}"));
        }
    }
    for section in COMPONENT_SECTIONS {
        if let Some(node) = get(cfg, section) {
            for id in mapping_keys(node, section, &mut problems) {
                if let Some(p) = id_problem(&id) {
                    problems.push(format!("{section}: {p}"));
                }
            }
        }
    }
    match get(cfg, "service") {
        None => problems.push("no `service` section".to_owned()),
        Some(service) => {
            for key in mapping_keys(service, "service", &mut problems) {
                if !["extensions", "pipelines", "telemetry"].contains(&key.as_str()) {
                    problems.push(format!("service: unknown key {key:?}"));
                }
            }
            if get(service, "pipelines")
                .and_then(Yaml::as_hash)
                .is_none_or(|h| h.is_empty())
            {
                problems.push("service.pipelines: no pipelines".to_owned());
            }
        }
    }
    problems
}

/// Each id of a list is well formed, listed once, and defined in one of `known`.
fn check_id_list(
    ids: Vec<String>,
    what: &str,
    kind: &str,
    known: &[&BTreeSet<String>],
    problems: &mut Vec<String>,
) {
    let mut seen = BTreeSet::new();
    for id in ids {
        if let Some(p) = id_problem(&id) {
            problems.push(format!("{what}: {p}"));
        }
        if !seen.insert(id.clone()) {
            problems.push(format!("{what}: {id:?} is listed twice"));
        }
        if !known.iter().any(|set| set.contains(&id)) {
            problems.push(format!(
                "{what}: {kind} {id:?} is not defined under `{kind}s`"
            ));
        }
    }
}

/// Every receiver, processor, exporter and extension named in `service.pipelines.*` and
/// `service.extensions` is defined at the top level (connectors count as receivers and
/// exporters), and no list names one twice.
fn check_references(cfg: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    let receivers = defined(cfg, "receivers", &mut problems);
    let processors = defined(cfg, "processors", &mut problems);
    let exporters = defined(cfg, "exporters", &mut problems);
    let extensions = defined(cfg, "extensions", &mut problems);
    let connectors = defined(cfg, "connectors", &mut problems);

    let ext_ids = id_list(
        at(cfg, &["service", "extensions"]),
        "service.extensions",
        &mut problems,
    );
    check_id_list(
        ext_ids,
        "service.extensions",
        "extension",
        &[&extensions],
        &mut problems,
    );

    for (name, pipeline) in pipelines(cfg) {
        let what = |list: &str| format!("service.pipelines.{name}.{list}");
        let r = id_list(
            get(pipeline, "receivers"),
            &what("receivers"),
            &mut problems,
        );
        let p = id_list(
            get(pipeline, "processors"),
            &what("processors"),
            &mut problems,
        );
        let e = id_list(
            get(pipeline, "exporters"),
            &what("exporters"),
            &mut problems,
        );
        check_id_list(
            r,
            &what("receivers"),
            "receiver",
            &[&receivers, &connectors],
            &mut problems,
        );
        check_id_list(
            p,
            &what("processors"),
            "processor",
            &[&processors],
            &mut problems,
        );
        check_id_list(
            e,
            &what("exporters"),
            "exporter",
            &[&exporters, &connectors],
            &mut problems,
        );
    }
    problems
}

/// Every pipeline has a valid id (`traces`, `metrics/x`, ...), only the three lists, and at
/// least one receiver and one exporter.
fn check_pipelines(cfg: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, pipeline) in pipelines(cfg) {
        let ty = component_type(&name);
        if !PIPELINE_TYPES.contains(&ty) || id_problem(&name).is_some() {
            problems.push(format!(
                "service.pipelines: {name:?} is not traces, metrics, logs or profiles[/name]"
            ));
        }
        for key in mapping_keys(
            pipeline,
            &format!("service.pipelines.{name}"),
            &mut problems,
        ) {
            if !["receivers", "processors", "exporters"].contains(&key.as_str()) {
                problems.push(format!("service.pipelines.{name}: unknown key {key:?}"));
            }
        }
        for list in ["receivers", "exporters"] {
            let mut ignore = Vec::new();
            if id_list(get(pipeline, list), list, &mut ignore).is_empty() {
                problems.push(format!("service.pipelines.{name}: has no {list}"));
            }
        }
    }
    problems
}

/// `memory_limiter` is the first processor of every pipeline (the collector's advice: it must
/// see data before anything else buffers it).
fn check_memory_limiter_first(cfg: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, pipeline) in pipelines(cfg) {
        let mut ignore = Vec::new();
        let processors = id_list(get(pipeline, "processors"), "processors", &mut ignore);
        match processors.first() {
            Some(first) if component_type(first) == "memory_limiter" => {}
            Some(first) => problems.push(format!(
                "service.pipelines.{name}.processors: the first processor is {first:?}, not memory_limiter"
            )),
            None => problems.push(format!("service.pipelines.{name}.processors: no memory_limiter (no processors)")),
        }
    }
    problems
}

/// Every clickhouse exporter uses only keys the pinned exporter version has (top level, and
/// below it wherever the key list is specific, e.g. `metrics_tables.gauge.name`).
fn check_clickhouse_keys(cfg: &Yaml, allowed: &KeyList) -> Vec<String> {
    fn walk(node: &Yaml, path: &str, id: &str, allowed: &KeyList, problems: &mut Vec<String>) {
        if !allowed.constrains(path) {
            return;
        }
        let what = if path.is_empty() {
            format!("exporters.{id}")
        } else {
            format!("exporters.{id}.{path}")
        };
        for key in mapping_keys(node, &what, problems) {
            if !allowed.allows(path, &key) {
                problems.push(format!(
                    "{what}: unknown key {key:?} (not an option of the pinned clickhouse exporter)"
                ));
                continue;
            }
            let child_path = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if let Some(child) = get(node, &key)
                && child.is_hash()
            {
                walk(child, &child_path, id, allowed, problems);
            }
        }
    }
    let mut problems = Vec::new();
    for (id, node) in clickhouse_exporters(cfg) {
        walk(node, "", &id, allowed, &mut problems);
    }
    problems
}

/// The OTLP receiver listens for gRPC on port 4317 and HTTP on port 4318.
fn check_otlp_ports(cfg: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    for (protocol, port) in [("grpc", 4317), ("http", 4318)] {
        let path = ["receivers", "otlp", "protocols", protocol, "endpoint"];
        match at(cfg, &path).and_then(Yaml::as_str) {
            Some(endpoint)
                if endpoint
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p == port.to_string()) => {}
            Some(endpoint) => problems.push(format!(
                "{}: {endpoint:?} is not on port {port}",
                path.join(".")
            )),
            None => problems.push(format!(
                "{}: not set (expected port {port})",
                path.join(".")
            )),
        }
    }
    problems
}

/// What tether-pro needs of this file beyond the collector's own rules: traces and metrics go
/// to ClickHouse, into our database, into `otel_*` tables with a TTL, the schema is created,
/// the health check and the debug exporter are there.
fn check_tether_setup(cfg: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    let exporters = clickhouse_exporters(cfg);
    let Some((id, ch)) = exporters.first() else {
        return vec!["exporters: no clickhouse exporter".to_owned()];
    };
    for signal in ["traces", "metrics"] {
        let mut ignore = Vec::new();
        let used = id_list(
            at(cfg, &["service", "pipelines", signal, "exporters"]),
            signal,
            &mut ignore,
        );
        if !used.iter().any(|e| component_type(e) == "clickhouse") {
            problems.push(format!(
                "service.pipelines.{signal}: does not export to clickhouse"
            ));
        }
    }
    let string = |key: &str| get(ch, key).and_then(Yaml::as_str);
    match string("endpoint") {
        Some(e) if e.contains("${env:CLICKHOUSE_ENDPOINT") => {}
        other => problems.push(format!(
            "exporters.{id}.endpoint: {other:?} does not come from ${{env:CLICKHOUSE_ENDPOINT}}"
        )),
    }
    match string("database") {
        Some(d) if d.contains("CLICKHOUSE_DATABASE") && d.ends_with(":-tether}") => {}
        other => problems.push(format!(
            "exporters.{id}.database: {other:?} is not ${{env:CLICKHOUSE_DATABASE:-tether}}"
        )),
    }
    if get(ch, "create_schema").and_then(Yaml::as_bool) != Some(true) {
        problems.push(format!("exporters.{id}.create_schema: must be true"));
    }
    if string("ttl") != Some("720h") {
        problems.push(format!(
            "exporters.{id}.ttl: {:?}, expected \"720h\"",
            string("ttl")
        ));
    }
    for key in ["timeout", "retry_on_failure", "sending_queue"] {
        if get(ch, key).is_none() {
            problems.push(format!("exporters.{id}.{key}: not set"));
        }
    }
    let mut tables = vec![("traces_table_name".to_owned(), string("traces_table_name"))];
    if let Some(h) = get(ch, "metrics_tables").and_then(Yaml::as_hash) {
        for (kind, v) in h {
            tables.push((
                format!("metrics_tables.{}.name", kind.as_str().unwrap_or("?")),
                get(v, "name").and_then(Yaml::as_str),
            ));
        }
    } else {
        problems.push(format!("exporters.{id}.metrics_tables: not set"));
    }
    for (key, table) in tables {
        match table {
            Some(t)
                if t.starts_with("otel_")
                    && !TETHER_TABLE_PREFIXES.iter().any(|p| t.starts_with(p)) => {}
            other => problems.push(format!(
                "exporters.{id}.{key}: {other:?} is not an otel_* table"
            )),
        }
    }
    match at(cfg, &["exporters", "debug", "verbosity"]).and_then(Yaml::as_str) {
        Some("basic") => {}
        other => problems.push(format!(
            "exporters.debug.verbosity: {other:?}, expected \"basic\""
        )),
    }
    match at(cfg, &["extensions", "health_check", "endpoint"]).and_then(Yaml::as_str) {
        Some("0.0.0.0:13133") => {}
        other => problems.push(format!(
            "extensions.health_check.endpoint: {other:?}, expected \"0.0.0.0:13133\""
        )),
    }
    match at(cfg, &["service", "telemetry", "logs", "level"]).and_then(Yaml::as_str) {
        Some("info") => {}
        other => problems.push(format!(
            "service.telemetry.logs.level: {other:?}, expected \"info\""
        )),
    }
    problems
}

/// All checks on a configuration text.
fn all_problems(text: &str, allowed: &KeyList) -> Vec<String> {
    let mut problems = check_no_tabs(text);
    match parse_config(text) {
        Err(e) => problems.push(e),
        Ok(cfg) => {
            problems.extend(check_structure(&cfg));
            problems.extend(check_references(&cfg));
            problems.extend(check_pipelines(&cfg));
            problems.extend(check_memory_limiter_first(&cfg));
            problems.extend(check_clickhouse_keys(&cfg, allowed));
            problems.extend(check_otlp_ports(&cfg));
            problems.extend(check_tether_setup(&cfg));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------
// Test helpers
// ---------------------------------------------------------------------------------------

fn key_list() -> KeyList {
    let (keys, problems) = parse_key_list(CLICKHOUSE_KEYS);
    assert!(problems.is_empty(), "key list problems: {problems:#?}");
    keys
}

fn real_config() -> Yaml {
    parse_config(CONFIG).expect("otel-collector/config.yaml parses")
}

/// A mutable node by path of mapping keys (panics if absent: the test's premise is wrong).
fn node_mut<'a>(node: &'a mut Yaml, path: &[&str]) -> &'a mut Yaml {
    path.iter().fold(node, |n, k| &mut n[*k])
}

fn insert(node: &mut Yaml, key: &str, value: Yaml) {
    node.as_mut_hash()
        .expect("a mapping")
        .insert(Yaml::String(key.to_owned()), value);
}

fn ids(list: &[&str]) -> Yaml {
    Yaml::Array(list.iter().map(|s| Yaml::String((*s).to_owned())).collect())
}

/// The configuration as YAML text again, so a broken copy also goes through `all_problems`.
fn emit(cfg: &Yaml) -> String {
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(cfg).expect("emit YAML");
    out
}

fn assert_reported(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning {needle:?}, got {problems:#?}"
    );
}

/// The version the config pins, from its header comment (`otelcol-contrib v0.159.0`).
fn pinned_version(text: &str) -> Option<String> {
    let start = text.find("otelcol-contrib v")? + "otelcol-contrib v".len();
    let version: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    (version.split('.').count() == 3 && version.split('.').all(|p| !p.is_empty()))
        .then_some(version)
}

// ---------------------------------------------------------------------------------------
// Tests: the real file
// ---------------------------------------------------------------------------------------

#[test]
fn real_config_has_no_problems() {
    let problems = all_problems(CONFIG, &key_list());
    assert!(
        problems.is_empty(),
        "otel-collector/config.yaml: {problems:#?}"
    );
}

#[test]
fn real_config_passes_each_check() {
    let cfg = real_config();
    let keys = key_list();
    assert_eq!(check_no_tabs(CONFIG), Vec::<String>::new());
    assert_eq!(check_structure(&cfg), Vec::<String>::new());
    assert_eq!(check_references(&cfg), Vec::<String>::new());
    assert_eq!(check_pipelines(&cfg), Vec::<String>::new());
    assert_eq!(check_memory_limiter_first(&cfg), Vec::<String>::new());
    assert_eq!(check_clickhouse_keys(&cfg, &keys), Vec::<String>::new());
    assert_eq!(check_otlp_ports(&cfg), Vec::<String>::new());
    assert_eq!(check_tether_setup(&cfg), Vec::<String>::new());
}

#[test]
fn real_config_has_the_expected_pipelines() {
    let cfg = real_config();
    let names: Vec<String> = pipelines(&cfg).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["traces", "metrics"]);
    for signal in ["traces", "metrics"] {
        let p = at(&cfg, &["service", "pipelines", signal]).unwrap();
        assert_eq!(p["receivers"], ids(&["otlp"]), "{signal}");
        assert_eq!(
            p["processors"],
            ids(&["memory_limiter", "batch"]),
            "{signal}"
        );
        assert_eq!(p["exporters"], ids(&["clickhouse"]), "{signal}");
    }
    // The debug exporter is defined (easy to switch on) but kept out of the pipelines.
    assert!(at(&cfg, &["exporters", "debug"]).is_some());
}

#[test]
fn pinned_version_is_stated_in_config_readme_and_key_list() {
    let version =
        pinned_version(CONFIG).expect("config.yaml header names `otelcol-contrib vX.Y.Z`");
    assert!(
        README.contains(&format!("v{version}")),
        "README does not name v{version}"
    );
    assert!(
        README.contains(&format!("opentelemetry-collector-contrib:{version}")),
        "README's image tag is not {version}"
    );
    assert!(
        CONFIG.contains(&format!("opentelemetry-collector-contrib:{version}")),
        "config.yaml's image tag is not {version}"
    );
    let keys = key_list();
    assert!(
        keys.header.contains(&format!("v{version}")),
        "key list header does not name v{version}"
    );
}

#[test]
fn key_list_names_its_upstream_source_and_has_the_known_keys() {
    let keys = key_list();
    assert!(
        keys.header
            .contains("open-telemetry/opentelemetry-collector-contrib"),
        "{}",
        keys.header
    );
    assert!(
        keys.header
            .contains("exporter/clickhouseexporter/config.go"),
        "{}",
        keys.header
    );
    let has_commit = keys
        .header
        .split(|c: char| !c.is_ascii_hexdigit())
        .any(|w| w.len() == 40);
    assert!(
        has_commit,
        "key list header names no 40-hex commit: {}",
        keys.header
    );
    for key in [
        "endpoint",
        "database",
        "traces_table_name",
        "metrics_tables",
        "create_schema",
        "ttl",
        "timeout",
        "retry_on_failure",
        "sending_queue",
    ] {
        assert!(keys.keys.contains(key), "key list lacks {key:?}");
    }
    // Keys of other versions or other exporters must not creep in.
    for key in ["tables_prefix", "ttl_days", "dsn", "table_prefix"] {
        assert!(!keys.keys.contains(key), "key list has {key:?}");
    }
}

#[test]
fn key_list_parser_reports_its_own_mistakes() {
    let (_, problems) = parse_key_list("endpoint\nendpoint\nBad-Key\nmetrics_tables.gauge\n");
    assert_reported(&problems, "\"endpoint\" is listed twice");
    assert_reported(&problems, "\"Bad-Key\" is not a lowercase key path");
    assert_reported(&problems, "parent \"metrics_tables\" is not");
}

// ---------------------------------------------------------------------------------------
// Tests: broken copies must be reported
// ---------------------------------------------------------------------------------------

#[test]
fn pipeline_naming_an_undefined_exporter_is_reported() {
    let mut cfg = real_config();
    *node_mut(&mut cfg, &["service", "pipelines", "traces", "exporters"]) =
        ids(&["clickhouse", "otlphttp/missing"]);
    let problems = check_references(&cfg);
    assert_eq!(
        problems,
        [
            "service.pipelines.traces.exporters: exporter \"otlphttp/missing\" is not defined under `exporters`"
        ]
    );
    assert_reported(
        &all_problems(&emit(&cfg), &key_list()),
        "\"otlphttp/missing\" is not defined",
    );
}

#[test]
fn undefined_receiver_processor_and_extension_are_reported() {
    let mut cfg = real_config();
    *node_mut(&mut cfg, &["service", "pipelines", "metrics", "receivers"]) =
        ids(&["otlp", "prometheus"]);
    *node_mut(&mut cfg, &["service", "pipelines", "metrics", "processors"]) =
        ids(&["memory_limiter", "batch/big"]);
    *node_mut(&mut cfg, &["service", "extensions"]) = ids(&["health_check", "pprof"]);
    let problems = check_references(&cfg);
    assert_reported(&problems, "receiver \"prometheus\" is not defined");
    assert_reported(&problems, "processor \"batch/big\" is not defined");
    assert_reported(&problems, "extension \"pprof\" is not defined");
    assert_eq!(problems.len(), 3, "{problems:#?}");
}

#[test]
fn defined_component_with_a_name_is_accepted() {
    let mut cfg = real_config();
    insert(
        node_mut(&mut cfg, &["exporters"]),
        "debug/detailed",
        Yaml::Null,
    );
    *node_mut(&mut cfg, &["service", "pipelines", "traces", "exporters"]) =
        ids(&["clickhouse", "debug/detailed"]);
    assert_eq!(check_references(&cfg), Vec::<String>::new());
}

#[test]
fn unknown_clickhouse_key_is_reported() {
    let mut cfg = real_config();
    insert(
        node_mut(&mut cfg, &["exporters", "clickhouse"]),
        "tables_prefix",
        Yaml::String("otel_".into()),
    );
    let problems = check_clickhouse_keys(&cfg, &key_list());
    assert_eq!(
        problems,
        [
            "exporters.clickhouse: unknown key \"tables_prefix\" (not an option of the pinned clickhouse exporter)"
        ]
    );
    assert_reported(&all_problems(&emit(&cfg), &key_list()), "\"tables_prefix\"");
}

#[test]
fn unknown_nested_clickhouse_key_and_named_clickhouse_exporter_are_checked() {
    let mut cfg = real_config();
    let gauge = node_mut(
        &mut cfg,
        &["exporters", "clickhouse", "metrics_tables", "gauge"],
    );
    insert(gauge, "table", Yaml::String("g".into()));
    let mut copy = at(&cfg, &["exporters", "clickhouse"]).unwrap().clone();
    insert(&mut copy, "ttl_days", Yaml::Integer(30));
    insert(node_mut(&mut cfg, &["exporters"]), "clickhouse/other", copy);
    let problems = check_clickhouse_keys(&cfg, &key_list());
    assert_reported(
        &problems,
        "exporters.clickhouse.metrics_tables.gauge: unknown key \"table\"",
    );
    assert_reported(
        &problems,
        "exporters.clickhouse/other: unknown key \"ttl_days\"",
    );
    assert_reported(
        &problems,
        "exporters.clickhouse/other.metrics_tables.gauge: unknown key \"table\"",
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
}

#[test]
fn memory_limiter_not_first_is_reported() {
    let mut cfg = real_config();
    *node_mut(&mut cfg, &["service", "pipelines", "metrics", "processors"]) =
        ids(&["batch", "memory_limiter"]);
    let problems = check_memory_limiter_first(&cfg);
    assert_eq!(
        problems,
        [
            "service.pipelines.metrics.processors: the first processor is \"batch\", not memory_limiter"
        ]
    );
    assert_reported(
        &all_problems(&emit(&cfg), &key_list()),
        "not memory_limiter",
    );
}

#[test]
fn pipeline_without_receivers_or_exporters_is_reported() {
    let mut cfg = real_config();
    *node_mut(&mut cfg, &["service", "pipelines", "traces", "receivers"]) = Yaml::Array(vec![]);
    node_mut(&mut cfg, &["service", "pipelines", "metrics"])
        .as_mut_hash()
        .unwrap()
        .remove(&Yaml::String("exporters".into()));
    let problems = check_pipelines(&cfg);
    assert_reported(&problems, "service.pipelines.traces: has no receivers");
    assert_reported(&problems, "service.pipelines.metrics: has no exporters");
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn bad_pipeline_and_component_ids_are_reported() {
    let mut cfg = real_config();
    let traces = at(&cfg, &["service", "pipelines", "traces"])
        .unwrap()
        .clone();
    insert(
        node_mut(&mut cfg, &["service", "pipelines"]),
        "spans",
        traces,
    );
    insert(node_mut(&mut cfg, &["processors"]), "batch/", Yaml::Null);
    let problems = all_problems(&emit(&cfg), &key_list());
    assert_reported(
        &problems,
        "\"spans\" is not traces, metrics, logs or profiles",
    );
    assert_reported(&problems, "component id \"batch/\"");
}

#[test]
fn wrong_otlp_ports_are_reported() {
    let mut cfg = real_config();
    *node_mut(
        &mut cfg,
        &["receivers", "otlp", "protocols", "grpc", "endpoint"],
    ) = Yaml::String("0.0.0.0:14317".into());
    node_mut(&mut cfg, &["receivers", "otlp", "protocols"])
        .as_mut_hash()
        .unwrap()
        .remove(&Yaml::String("http".into()));
    let problems = check_otlp_ports(&cfg);
    assert_reported(
        &problems,
        "receivers.otlp.protocols.grpc.endpoint: \"0.0.0.0:14317\" is not on port 4317",
    );
    assert_reported(
        &problems,
        "receivers.otlp.protocols.http.endpoint: not set (expected port 4318)",
    );
}

#[test]
fn tabs_are_reported() {
    let with_tab = CONFIG.replacen("      level: info", "      level:\tinfo", 1);
    assert_ne!(
        with_tab, CONFIG,
        "the premise: config.yaml has `      level: info`"
    );
    let problems = check_no_tabs(&with_tab);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].ends_with("contains a tab"), "{problems:#?}");
    assert_reported(&all_problems(&with_tab, &key_list()), "contains a tab");
}

#[test]
fn tether_table_names_and_settings_are_enforced() {
    let mut cfg = real_config();
    *node_mut(&mut cfg, &["exporters", "clickhouse", "traces_table_name"]) =
        Yaml::String("sync_requests".into());
    *node_mut(&mut cfg, &["exporters", "clickhouse", "create_schema"]) = Yaml::Boolean(false);
    *node_mut(&mut cfg, &["exporters", "clickhouse", "ttl"]) = Yaml::String("0s".into());
    let problems = check_tether_setup(&cfg);
    assert_reported(
        &problems,
        "traces_table_name: Some(\"sync_requests\") is not an otel_* table",
    );
    assert_reported(&problems, "create_schema: must be true");
    assert_reported(&problems, "ttl: Some(\"0s\")");
    assert_eq!(problems.len(), 3, "{problems:#?}");
}

#[test]
fn unparsable_or_duplicate_keyed_yaml_is_reported() {
    let problems = all_problems(
        "receivers:\n  otlp: {}\nreceivers:\n  otlp: {}\n",
        &key_list(),
    );
    assert_reported(&problems, "not valid YAML");
    assert_reported(&all_problems("service: [\n", &key_list()), "not valid YAML");
}

#[test]
fn emitted_copy_of_the_real_config_has_no_problems() {
    // The broken copies above go through `emit`; the round trip itself must add no problem.
    let problems = all_problems(&emit(&real_config()), &key_list());
    assert!(problems.is_empty(), "{problems:#?}");
}
