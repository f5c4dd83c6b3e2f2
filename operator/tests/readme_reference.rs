//! The README's configuration reference is generated from the sources of truth, kvnode's clap
//! command (`kvnode::config::Cli`) and the KVCluster CRD schema, and this test fails when the
//! README drifts from them. Regenerate with
//! `RAFTKV_BLESS=1 cargo test -p kv-operator --test readme_reference`.

use clap::CommandFactory;
use kube::CustomResourceExt;
use kv_operator::crd::KVCluster;
use kvnode::config::Cli;
use serde_json::Value;

const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
const BEGIN: &str = "<!-- BEGIN generated configuration reference (operator/tests/readme_reference.rs) -->";
const END: &str = "<!-- END generated configuration reference -->";

/// CRD fields whose type is a Kubernetes API type: documented by that type, not field by field.
const KUBERNETES_TYPES: &[(&str, &str)] = &[
    ("spec.resources", "core/v1 `ResourceRequirements`"),
    ("spec.scheduling.affinity", "core/v1 `Affinity`"),
    ("spec.scheduling.tolerations", "list of core/v1 `Toleration`"),
    ("status.conditions", "list of meta/v1 `Condition`"),
];

fn cell(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}

fn flag_rows(cmd: &clap::Command, out: &mut String) {
    out.push_str("| flag | environment | default | meaning |\n|---|---|---|---|\n");
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let env = arg.get_env().map(|e| format!("`{}`", e.to_string_lossy())).unwrap_or_default();
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let default = if defaults.is_empty() { String::new() } else { format!("`{}`", defaults.join(",")) };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        out.push_str(&format!("| `--{long}` | {env} | {default} | {} |\n", cell(&help)));
    }
}

fn schema_type(s: &Value) -> String {
    let mut t = s["type"].as_str().unwrap_or("object").to_string();
    if let Some(items) = s["items"]["type"].as_str() {
        t = format!("{t} of {items}");
    }
    if let Some(f) = s["format"].as_str() {
        t = format!("{t} ({f})");
    }
    let mut notes = Vec::new();
    if let Some(e) = s["enum"].as_array() {
        notes.push(e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | "));
    }
    if let (Some(min), Some(max)) = (s["minimum"].as_f64(), s["maximum"].as_f64()) {
        notes.push(format!("{min}–{max}"));
    }
    if let Some(p) = s["pattern"].as_str() {
        notes.push(format!("pattern `{p}`"));
    }
    if !s["default"].is_null() {
        notes.push(format!("default `{}`", s["default"]));
    }
    if notes.is_empty() { t } else { format!("{t}; {}", notes.join("; ")) }
}

fn field_rows(path: &str, schema: &Value, out: &mut String) {
    let Some(props) = schema["properties"].as_object() else { return };
    for (name, s) in props {
        let p = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        let desc = s["description"].as_str().unwrap_or_default();
        if let Some((_, k8s)) = KUBERNETES_TYPES.iter().find(|(k, _)| *k == p) {
            out.push_str(&format!("| `{p}` | {k8s} | {} |\n", cell(desc)));
            continue;
        }
        out.push_str(&format!("| `{p}` | {} | {} |\n", cell(&schema_type(s)), cell(desc)));
        field_rows(&p, s, out);
        if s["items"]["properties"].is_object() {
            field_rows(&format!("{p}[]"), &s["items"], out);
        }
    }
}

/// A subcommand's flags, or those of each of its own subcommands (`kvnode snapshot restore`).
fn subcommand_rows(path: &str, sub: &clap::Command, out: &mut String) {
    if sub.has_subcommands() {
        for inner in sub.get_subcommands() {
            subcommand_rows(&format!("{path} {}", inner.get_name()), inner, out);
        }
        return;
    }
    out.push_str(&format!(
        "\n`{path}` ({}):\n\n",
        cell(&sub.get_about().map(|a| a.to_string()).unwrap_or_default())
    ));
    flag_rows(sub, out);
}

/// The generated section, markers included.
fn reference() -> String {
    let mut out = format!("{BEGIN}\n\n### kvnode flags\n\n");
    let cmd = Cli::command();
    flag_rows(&cmd, &mut out);
    for sub in cmd.get_subcommands() {
        subcommand_rows(&format!("kvnode {}", sub.get_name()), sub, &mut out);
    }
    let crd = serde_json::to_value(KVCluster::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    out.push_str(
        "\n### KVCluster fields (`raftkv.dev/v1alpha1`)\n\n| field | type | meaning |\n|---|---|---|\n",
    );
    field_rows("", schema, &mut out);
    out.push_str(&format!("\n{END}"));
    out
}

#[test]
fn readme_configuration_reference_is_generated_from_the_sources() {
    let readme = std::fs::read_to_string(README).unwrap();
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no generated configuration reference markers");
    };
    let current = &readme[start..end + END.len()];
    let generated = reference();
    if current == generated {
        return;
    }
    if std::env::var("RAFTKV_BLESS").as_deref() == Ok("1") {
        let updated = format!("{}{generated}{}", &readme[..start], &readme[end + END.len()..]);
        std::fs::write(README, updated).unwrap();
        return;
    }
    panic!(
        "README.md's configuration reference is stale: run \
         `RAFTKV_BLESS=1 cargo test -p kv-operator --test readme_reference`\n--- generated:\n{generated}"
    );
}

#[test]
fn every_flag_and_every_crd_field_is_in_the_reference() {
    let generated = reference();
    let cmd = Cli::command();
    let mut flags: Vec<String> = cmd.get_arguments().filter_map(|a| a.get_long()).map(String::from).collect();
    let mut subs: Vec<&clap::Command> = cmd.get_subcommands().collect();
    while let Some(sub) = subs.pop() {
        flags.extend(sub.get_arguments().filter_map(|a| a.get_long()).map(String::from));
        subs.extend(sub.get_subcommands());
    }
    for flag in flags.iter().filter(|f| !matches!(f.as_str(), "help" | "version")) {
        assert!(generated.contains(&format!("| `--{flag}` |")), "--{flag} missing");
    }
    assert!(flags.len() > 20, "only {} flags found: the walk is broken", flags.len());
    for field in ["spec.replicas", "spec.storage.size", "spec.tls.peerSecretName", "status.members[].role"] {
        assert!(generated.contains(&format!("| `{field}` |")), "{field} missing");
    }
}
