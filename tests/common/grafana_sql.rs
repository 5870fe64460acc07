//! The provisioned Grafana dashboards and alert rules as the SQL Grafana would send: every
//! panel target, template-variable query and alert query, with the datasource plugin's
//! macros and the dashboards' variables expanded. Shared by the Grafana and cluster tests.
//!
//! Declared with `#[path]` by the tests that use it.

#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// Grafana's automatic interval (`$__interval_s`, `$__timeInterval(...)`'s N) depends on the
/// time range and the panel's width: every query runs with each of these.
pub const INTERVALS_S: [i64; 4] = [2, 60, 300, 3600];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("grafana/dashboards exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p:?}: {e}")))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 4, "the four dashboards: {:?}", out.iter().map(|d| &d.0).collect::<Vec<_>>());
    out
}

pub fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}")).remove(0)
}

/// Expands the plugin's macros as grafana-clickhouse-datasource does (for a time range of
/// unix seconds `from..to` and an interval of `interval` seconds).
pub fn expand_macros(sql: &str, from: i64, to: i64, interval: i64) -> String {
    fn with_arg(sql: &str, name: &str, f: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        let mut rest = sql;
        let pat = format!("{name}(");
        while let Some(i) = rest.find(&pat) {
            out.push_str(&rest[..i]);
            let after = &rest[i + pat.len()..];
            let close = after.find(')').unwrap_or_else(|| panic!("unclosed {name} in {sql}"));
            out.push_str(&f(after[..close].trim()));
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
    let s = with_arg(sql, "$__timeFilter", |c| format!("{c} >= toDateTime({from}) AND {c} <= toDateTime({to})"));
    let s = with_arg(&s, "$__timeInterval", |c| format!("toStartOfInterval(toDateTime({c}), INTERVAL {interval} second)"));
    let s = s
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
        .replace("$__interval_s", &interval.to_string());
    assert!(!s.contains("$__"), "a macro the test does not expand: {s}");
    s
}

/// Template variables with their defaults ('All' -> the variable's allValue).
pub fn variable_values(dash: &Value) -> Vec<(String, String)> {
    dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_owned();
            let value = match v["type"].as_str().unwrap() {
                "query" | "custom" if v["current"]["value"] == "$__all" => v["allValue"].as_str().expect("allValue for All").to_owned(),
                "query" | "custom" => v["current"]["value"].as_str().unwrap_or("").to_owned(),
                "textbox" | "constant" => v["query"].as_str().unwrap_or("").to_owned(),
                _ => String::new(),
            };
            (name, value)
        })
        .collect()
}

/// Interpolates template variables as Grafana does, with the formats the dashboards use
/// (`${name:percentencode}` is JavaScript's encodeURIComponent plus `!'()*`).
pub fn expand_vars(sql: &str, vars: &[(String, String)]) -> String {
    let percentencode = |v: &str| {
        v.bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect::<String>()
    };
    let mut s = sql.to_owned();
    for (name, value) in vars {
        s = s
            .replace(&format!("${{{name}:percentencode}}"), &percentencode(value))
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    s
}

pub fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}


/// One query Grafana would run.
pub struct GrafanaQuery {
    /// Where it comes from: `<dashboard file>: <panel title>`, a variable or an alert rule.
    pub origin: String,
    pub sql: String,
}

/// Every panel target (at each of [`INTERVALS_S`]), template-variable query (at 300 s) and
/// alert query of the provisioned dashboards and alert rules, for the time range `from..to`
/// (unix seconds), variables at their defaults.
pub fn every_query(from: i64, to: i64) -> Vec<GrafanaQuery> {
    let mut out = Vec::new();
    for (name, dash) in dashboards() {
        let vars = variable_values(&dash);
        for p in panels(&dash).into_iter().filter(|p| p["type"] != "row") {
            for t in p["targets"].as_array().into_iter().flatten() {
                for interval in INTERVALS_S {
                    let sql = expand_macros(&expand_vars(t["rawSql"].as_str().unwrap(), &vars), from, to, interval);
                    out.push(GrafanaQuery { origin: format!("{name}: {}", p["title"]), sql });
                }
            }
        }
        for v in dash["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
            let sql = expand_macros(&expand_vars(v["query"].as_str().unwrap(), &vars), from, to, 300);
            out.push(GrafanaQuery { origin: format!("{name}: variable {}", v["name"]), sql });
        }
    }
    let alerts = yaml("grafana/provisioning/alerting/tether-alerts.yaml");
    for group in alerts["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            for d in rule["data"].as_vec().unwrap().iter().filter(|d| d["datasourceUid"].as_str() != Some("__expr__")) {
                let sql = expand_macros(d["model"]["rawSql"].as_str().unwrap(), from, to, 300);
                out.push(GrafanaQuery { origin: format!("alert {}", rule["title"].as_str().unwrap_or("?")), sql });
            }
        }
    }
    out
}
