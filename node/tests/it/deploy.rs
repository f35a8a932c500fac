//! The Kubernetes manifests in deploy/kubernetes/ against the binary they
//! run: every document parses and has what Kubernetes requires; the flags,
//! BATON_* variables and config-file keys they use are ones `baton-node`
//! knows; ports and probes agree with the addresses the node is told to
//! listen on; the peers listed in the initial members are the StatefulSet's
//! own pods, with the ids `--id-from-hostname` gives them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

const NODE: &str = env!("CARGO_BIN_EXE_baton-node");

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every document of every manifest, with the file it came from.
fn documents() -> Vec<(String, Yaml)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("deploy/kubernetes exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable manifest");
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", f.display()));
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            out.push((f.display().to_string(), d));
        }
    }
    out
}

fn str_at<'a>(y: &'a Yaml, path: &[&str]) -> Option<&'a str> {
    at(y, path).as_str()
}

fn at<'a>(y: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(y, |y, k| &y[*k])
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map_or(&[], |v| v.as_slice())
}

fn kind<'a>(docs: &'a [(String, Yaml)], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|(_, d)| str_at(d, &["kind"]) == Some(kind))
        .map(|(_, d)| d)
        .collect()
}

fn help() -> String {
    let out = Command::new(NODE)
        .arg("--help")
        .output()
        .expect("run baton-node --help");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} has no port"))
}

#[test]
fn every_document_has_what_kubernetes_requires() {
    let docs = documents();
    for (file, d) in &docs {
        for field in ["apiVersion", "kind"] {
            assert!(
                str_at(d, &[field]).is_some(),
                "{file}: a document without {field}"
            );
        }
        assert!(
            str_at(d, &["metadata", "name"]).is_some(),
            "{file}: a {} without metadata.name",
            str_at(d, &["kind"]).unwrap_or_default()
        );
    }
    let kinds: BTreeSet<&str> = docs
        .iter()
        .filter_map(|(_, d)| str_at(d, &["kind"]))
        .collect();
    for k in ["StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"] {
        assert!(kinds.contains(k), "no {k} in deploy/kubernetes");
    }
}

/// The StatefulSet that runs the node, its one container, and what they
/// point to.
struct NodeSet {
    docs: Vec<(String, Yaml)>,
    sts: Yaml,
    /// The StatefulSet's name (its pods are NAME-0, NAME-1, …).
    name: String,
    replicas: i64,
    /// Its (headless) service.
    service: String,
    pod: Yaml,
    container: Yaml,
    help: String,
}

impl NodeSet {
    fn load() -> NodeSet {
        let docs = documents();
        let sts = kind(&docs, "StatefulSet");
        assert_eq!(sts.len(), 1, "one StatefulSet");
        let sts = sts[0].clone();
        let name = str_at(&sts, &["metadata", "name"])
            .expect("name")
            .to_string();
        let replicas = at(&sts, &["spec", "replicas"]).as_i64().expect("replicas");
        let service = str_at(&sts, &["spec", "serviceName"])
            .expect("serviceName")
            .to_string();
        let pod = at(&sts, &["spec", "template", "spec"]).clone();
        let containers = list(&pod["containers"]);
        assert_eq!(containers.len(), 1);
        let container = containers[0].clone();
        NodeSet {
            docs,
            sts,
            name,
            replicas,
            service,
            pod,
            container,
            help: help(),
        }
    }

    /// The container's command and arguments.
    fn args(&self) -> Vec<&str> {
        list(&self.container["command"])
            .iter()
            .chain(list(&self.container["args"]))
            .filter_map(Yaml::as_str)
            .collect()
    }

    /// The container's environment: names and literal values.
    fn env(&self) -> Vec<(&str, Option<&str>)> {
        list(&self.container["env"])
            .iter()
            .map(|e| (e["name"].as_str().expect("env name"), e["value"].as_str()))
            .collect()
    }

    fn var(&self, n: &str) -> Option<&str> {
        self.env()
            .into_iter()
            .find(|(k, _)| *k == n)
            .and_then(|(_, v)| v)
    }

    /// The config file given with --config: its name and its text, from the
    /// ConfigMap mounted where the path points.
    fn config_file(&self) -> (&str, &str) {
        let (args, c, pod, docs) = (self.args(), &self.container, &self.pod, &self.docs);
        let config_path = args
            .windows(2)
            .find(|w| w[0] == "--config")
            .map(|w| w[1])
            .expect("--config");
        let (mount, file) = config_path.rsplit_once('/').expect("a path");
        let mounts = list(&c["volumeMounts"]);
        let config_volume = mounts
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(mount))
            .and_then(|m| m["name"].as_str())
            .expect("the config directory is mounted");
        let config_map = list(&pod["volumes"])
            .iter()
            .find(|v| v["name"].as_str() == Some(config_volume))
            .and_then(|v| v["configMap"]["name"].as_str())
            .expect("from a ConfigMap");
        let toml_text = kind(docs, "ConfigMap")
            .into_iter()
            .find(|m| str_at(m, &["metadata", "name"]) == Some(config_map))
            .and_then(|m| m["data"][file].as_str())
            .expect("the ConfigMap holds the file");
        (file, toml_text)
    }

    fn config(&self) -> toml::Table {
        toml::from_str(self.config_file().1).expect("TOML")
    }

    fn container_port(&self, name: &str) -> i64 {
        list(&self.container["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {name}"))
    }
}

#[test]
fn the_statefulset_runs_an_odd_number_of_at_least_three_voters() {
    let replicas = NodeSet::load().replicas;
    assert!(
        replicas >= 3 && replicas % 2 == 1,
        "an odd number of voters, at least 3"
    );
}

/// Selector, template labels and the services and budget that select them.
#[test]
fn the_statefulsets_pods_are_selected_by_its_headless_service_and_budget() {
    let set = NodeSet::load();
    let (docs, sts) = (&set.docs, &set.sts);
    let labels = at(sts, &["spec", "template", "metadata", "labels"]);
    let selects = |selector: &Yaml| {
        selector
            .as_hash()
            .expect("a selector")
            .iter()
            .all(|(k, v)| labels[k.as_str().unwrap_or_default()] == *v)
    };
    assert!(selects(at(sts, &["spec", "selector", "matchLabels"])));
    for pdb in kind(docs, "PodDisruptionBudget") {
        assert!(selects(at(pdb, &["spec", "selector", "matchLabels"])));
        assert_eq!(
            at(pdb, &["spec", "maxUnavailable"]).as_i64(),
            Some(1),
            "a majority stays up"
        );
    }
    let service = str_at(sts, &["spec", "serviceName"]).expect("serviceName");
    let services = kind(docs, "Service");
    let headless = services
        .iter()
        .find(|s| str_at(s, &["metadata", "name"]) == Some(service))
        .expect("the StatefulSet's service is defined");
    assert_eq!(
        str_at(headless, &["spec", "clusterIP"]),
        Some("None"),
        "headless"
    );
    assert_eq!(
        at(headless, &["spec", "publishNotReadyAddresses"]).as_bool(),
        Some(true),
        "peers must find each other before any is ready"
    );
}

/// Flags and variables are the binary's.
#[test]
fn the_statefulset_gives_the_node_only_flags_and_variables_it_knows() {
    let set = NodeSet::load();
    let (args, env, help) = (set.args(), set.env(), &set.help);
    assert!(
        args.first().is_some_and(|a| a.ends_with("baton-node")),
        "{args:?}"
    );
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "baton-node has no {flag}"
        );
    }
    assert!(
        args.contains(&"--id-from-hostname"),
        "pods take their id from their ordinal"
    );
    for (var, _) in env.iter().filter(|(n, _)| n.starts_with("BATON_")) {
        assert!(
            help.contains(&format!("[env: {var}=")) || *var == "BATON_LOG",
            "baton-node reads no {var}"
        );
    }
}

/// The config file: keys the node accepts, addresses that match the ports.
#[test]
fn the_node_accepts_the_config_file_and_its_addresses_match_the_ports() {
    let set = NodeSet::load();
    let (file, toml_text) = set.config_file();
    let config = set.config();
    let container_port = |name: &str| set.container_port(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(file);
    std::fs::write(&path, toml_text).expect("write");
    let parsed = baton_node::config::Args {
        config: Some(path),
        id: Some(1),
        advertise: Some("baton-0.baton:7400".into()),
        ..Default::default()
    }
    .resolve();
    assert!(
        parsed.is_ok(),
        "the node refuses the config file: {:?}",
        parsed.err()
    );

    let listen = config["listen"].as_str().expect("listen");
    let http = config["http"].as_str().expect("http");
    assert!(
        listen.starts_with("0.0.0.0:") && http.starts_with("0.0.0.0:"),
        "reachable from outside the pod"
    );
    assert_eq!(port_of(listen), container_port("grpc"));
    assert_eq!(port_of(http), container_port("http"));
}

/// Probes: health and readiness on the HTTP port; services target ports
/// the container has.
#[test]
fn the_probes_and_services_target_the_containers_ports() {
    let set = NodeSet::load();
    let (docs, c) = (&set.docs, &set.container);
    let container_port = |name: &str| set.container_port(name);
    let config = set.config();
    let http = config["http"].as_str().expect("http");
    let services = kind(docs, "Service");
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        let port = match &get["port"] {
            Yaml::String(name) => container_port(name),
            Yaml::Integer(p) => *p,
            other => panic!("{probe}: port {other:?}"),
        };
        assert_eq!(port, port_of(http), "{probe} targets the HTTP server");
    }
    for s in &services {
        for p in list(&s["spec"]["ports"]) {
            if let Some(target) = p["targetPort"].as_str() {
                container_port(target);
            }
        }
    }
}

/// Data on the claim, where the config puts it.
#[test]
fn the_data_dir_is_on_a_persistent_volume_claim_and_resources_are_requested() {
    let set = NodeSet::load();
    let (sts, c) = (&set.sts, &set.container);
    let config = set.config();
    let mounts = list(&c["volumeMounts"]);
    let data_dir = config["data-dir"].as_str().expect("data-dir");
    let claims: Vec<&str> = list(&sts["spec"]["volumeClaimTemplates"])
        .iter()
        .filter_map(|t| t["metadata"]["name"].as_str())
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"].as_str() == Some(data_dir)
                && m["name"].as_str().is_some_and(|n| claims.contains(&n))),
        "{data_dir} is on a persistent volume claim"
    );
    assert!(
        c["resources"]["requests"].as_hash().is_some(),
        "resource requests"
    );
}

/// The initial members are the pods, with the ids their names give.
#[test]
fn the_initial_members_are_the_pods_with_the_ids_their_names_give() {
    let set = NodeSet::load();
    let (name, service, replicas) = (&set.name, &set.service, set.replicas);
    let container_port = |name: &str| set.container_port(name);
    let var = |n: &str| set.var(n);
    let members = var("BATON_INITIAL_MEMBERS").expect("BATON_INITIAL_MEMBERS");
    let members: Vec<(i64, &str)> = members
        .split(',')
        .map(|m| {
            let (id, addr) = m.split_once('=').expect("ID=HOST:PORT");
            (id.parse().expect("numeric id"), addr)
        })
        .collect();
    assert_eq!(
        members.len() as i64,
        replicas,
        "one initial member per replica"
    );
    for (id, addr) in members {
        assert!(
            addr.starts_with(&format!("{name}-{}.{service}.", id - 1)),
            "member {id} is pod {name}-{} of {service}: {addr}",
            id - 1
        );
        assert_eq!(port_of(addr), container_port("grpc"));
    }
    let advertise = var("BATON_ADVERTISE").expect("BATON_ADVERTISE");
    assert!(
        advertise.starts_with(&format!("$(POD_NAME).{service}.")),
        "{advertise}"
    );
}

/// The `baton_*` series named in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("baton_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.insert(name);
    }
    names
}

/// Every series the Grafana dashboard and the autoscaling example query is
/// one the node exports (its name is registered in the node's source;
/// histograms add `_bucket`, `_sum` and `_count`).
#[test]
fn dashboards_and_examples_query_only_metrics_the_node_exports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Each layer registers its own metrics (`*/metrics.rs`, `http.rs`), so
    // every source file is searched.
    let source = rust_sources(&root.join("src"));
    let text = std::fs::read_to_string(root.join("../deploy/grafana/baton.json"))
        .expect("deploy/grafana/baton.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut queried = BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            queried.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for (_, doc) in documents() {
        let mut out = String::new();
        yaml_rust2::YamlEmitter::new(&mut out)
            .dump(&doc)
            .expect("emit");
        queried.extend(metric_names(&out));
    }
    queried.extend(metric_names(&alert_rules()));
    for name in &queried {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            source.contains(&format!("\"{base}\"")),
            "{name} is queried, but the node does not export it"
        );
    }
}

/// Every `.rs` file under `dir`, concatenated.
fn rust_sources(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            text += &rust_sources(&path);
        } else if path.extension().is_some_and(|e| e == "rs") {
            text += &std::fs::read_to_string(&path).expect("node source");
        }
    }
    text
}

fn alert_rules() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yaml"),
    )
    .expect("deploy/prometheus/alerts.yaml")
}

/// Every alert has an expression, a severity and a runbook section in
/// docs/operations.md that explains it.
#[test]
fn every_alert_is_explained_in_the_runbook() {
    let docs = YamlLoader::load_from_str(&alert_rules()).expect("alerts.yaml is YAML");
    let runbook = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .expect("docs/operations.md");
    let rules: Vec<&Yaml> = list(&docs[0]["groups"])
        .iter()
        .flat_map(|g| list(&g["rules"]))
        .collect();
    assert!(rules.len() >= 5, "{} rules", rules.len());
    for rule in rules {
        let name = rule["alert"].as_str().expect("alert name");
        assert!(
            rule["expr"].as_str().is_some_and(|e| !e.is_empty()),
            "{name}: no expr"
        );
        assert!(
            rule["labels"]["severity"].as_str().is_some(),
            "{name}: no severity"
        );
        let link = rule["annotations"]["runbook"]
            .as_str()
            .expect("runbook link");
        assert_eq!(
            link,
            format!("docs/operations.md#{}", name.to_lowercase()),
            "{name}"
        );
        assert!(
            runbook.contains(&format!("\n### {name}\n")),
            "docs/operations.md has no section for {name}"
        );
    }
}
