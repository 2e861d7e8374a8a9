//! The `config` field of build.yml: moby's `ImageConfig`, which linuxkit marshals with Go's
//! `encoding/json` into the `org.mobyproject.config` label.
//!
//! Unknown keys are an error, as in linuxkit's strict decoding. The label must be the bytes Go
//! would produce, because it is part of the image config (and so of its digest): fields in the
//! Go struct's order, empty ones omitted, map keys sorted, `<`, `>` and `&` escaped as `\u003c`
//! and friends. Nested OCI structures (`mounts`, `resources`, …) are kept as generic values; the
//! known ones (`Mount`, `Device`, `LinuxIDMapping`) are emitted in Go's field order, any other
//! nested map with sorted keys (where Go would use a struct's order, this may differ: `resources`
//! and `runtime.interfaces` are the known cases, documented in ARCHITECTURE.md).

use serde::Deserialize;
use serde_json::Value;

/// moby's `ImageConfig`, field for field, in the Go struct's order.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    capabilities: Option<Vec<String>>,
    #[serde(rename = "capabilities.add")]
    capabilities_add: Option<Vec<String>>,
    ambient: Option<Vec<String>>,
    mounts: Option<Vec<Value>>,
    binds: Option<Vec<String>>,
    #[serde(rename = "binds.add")]
    binds_add: Option<Vec<String>>,
    devices: Option<Vec<Value>>,
    tmpfs: Option<Vec<String>>,
    command: Option<Vec<String>>,
    env: Option<Vec<String>>,
    cwd: Option<String>,
    net: Option<String>,
    pid: Option<String>,
    ipc: Option<String>,
    uts: Option<String>,
    userns: Option<String>,
    hostname: Option<String>,
    readonly: Option<bool>,
    #[serde(rename = "maskedPaths")]
    masked_paths: Option<Vec<String>>,
    #[serde(rename = "readonlyPaths")]
    readonly_paths: Option<Vec<String>>,
    uid: Option<Value>,
    gid: Option<Value>,
    #[serde(rename = "additionalGids")]
    additional_gids: Option<Vec<Value>>,
    #[serde(rename = "noNewPrivileges")]
    no_new_privileges: Option<bool>,
    #[serde(rename = "oomScoreAdj")]
    oom_score_adj: Option<i64>,
    #[serde(rename = "rootfsPropagation")]
    rootfs_propagation: Option<String>,
    #[serde(rename = "cgroupsPath")]
    cgroups_path: Option<String>,
    resources: Option<Value>,
    sysctl: Option<std::collections::BTreeMap<String, String>>,
    rlimits: Option<Vec<String>>,
    #[serde(rename = "uidMappings")]
    uid_mappings: Option<Vec<Value>>,
    #[serde(rename = "gidMappings")]
    gid_mappings: Option<Vec<Value>>,
    annotations: Option<std::collections::BTreeMap<String, String>>,
    runtime: Option<Value>,
}

/// A field of the label: its JSON name, its value when set, the key order of nested objects.
type FieldSpec<'a> = (&'a str, Option<Value>, Option<&'a [&'a str]>);

const MOUNT_ORDER: &[&str] = &[
    "destination",
    "type",
    "source",
    "options",
    "uidMappings",
    "gidMappings",
];
const DEVICE_ORDER: &[&str] = &["path", "type", "major", "minor", "mode"];
const ID_MAPPING_ORDER: &[&str] = &["containerID", "hostID", "size"];
const RUNTIME_ORDER: &[&str] = &[
    "cgroups",
    "mounts",
    "mkdir",
    "interfaces",
    "bindNS",
    "namespace",
];

impl ImageConfig {
    /// The `org.mobyproject.config` label: what Go's `json.Marshal` gives for this config.
    pub fn label_json(&self) -> String {
        let mut out = GoJson::default();
        out.open('{');
        let strings = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map(|v| Value::Array(v.iter().cloned().map(Value::String).collect()))
        };
        let string = |v: &Option<String>| {
            v.as_ref()
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.clone()))
        };
        // Pointer fields (`*[]string`, `*bool`, …) are emitted when set, even if empty;
        // plain strings only when non-empty (`omitempty`).
        let fields: Vec<FieldSpec> = vec![
            ("capabilities", strings(&self.capabilities), None),
            ("capabilities.add", strings(&self.capabilities_add), None),
            ("ambient", strings(&self.ambient), None),
            (
                "mounts",
                self.mounts.clone().map(Value::Array),
                Some(MOUNT_ORDER),
            ),
            ("binds", strings(&self.binds), None),
            ("binds.add", strings(&self.binds_add), None),
            (
                "devices",
                self.devices.clone().map(Value::Array),
                Some(DEVICE_ORDER),
            ),
            ("tmpfs", strings(&self.tmpfs), None),
            ("command", strings(&self.command), None),
            ("env", strings(&self.env), None),
            ("cwd", string(&self.cwd), None),
            ("net", string(&self.net), None),
            ("pid", string(&self.pid), None),
            ("ipc", string(&self.ipc), None),
            ("uts", string(&self.uts), None),
            ("userns", string(&self.userns), None),
            ("hostname", string(&self.hostname), None),
            ("readonly", self.readonly.map(Value::Bool), None),
            ("maskedPaths", strings(&self.masked_paths), None),
            ("readonlyPaths", strings(&self.readonly_paths), None),
            ("uid", self.uid.clone(), None),
            ("gid", self.gid.clone(), None),
            (
                "additionalGids",
                self.additional_gids.clone().map(Value::Array),
                None,
            ),
            (
                "noNewPrivileges",
                self.no_new_privileges.map(Value::Bool),
                None,
            ),
            ("oomScoreAdj", self.oom_score_adj.map(Value::from), None),
            (
                "rootfsPropagation",
                self.rootfs_propagation.clone().map(Value::String),
                None,
            ),
            (
                "cgroupsPath",
                self.cgroups_path.clone().map(Value::String),
                None,
            ),
            ("resources", self.resources.clone(), None),
            (
                "sysctl",
                self.sysctl
                    .as_ref()
                    .map(|m| serde_json::to_value(m).unwrap_or_default()),
                None,
            ),
            ("rlimits", strings(&self.rlimits), None),
            (
                "uidMappings",
                self.uid_mappings.clone().map(Value::Array),
                Some(ID_MAPPING_ORDER),
            ),
            (
                "gidMappings",
                self.gid_mappings.clone().map(Value::Array),
                Some(ID_MAPPING_ORDER),
            ),
            (
                "annotations",
                self.annotations
                    .as_ref()
                    .map(|m| serde_json::to_value(m).unwrap_or_default()),
                None,
            ),
            ("runtime", self.runtime.clone(), Some(RUNTIME_ORDER)),
        ];
        for (name, value, order) in fields {
            if let Some(value) = value {
                out.key(name);
                out.value(&value, order);
            }
        }
        out.close('}');
        out.0
    }
}

/// A writer of JSON as Go's `encoding/json` formats it (compact, HTML-escaped).
#[derive(Default)]
struct GoJson(String, Vec<bool>);

impl GoJson {
    fn open(&mut self, c: char) {
        self.0.push(c);
        self.1.push(true);
    }
    fn close(&mut self, c: char) {
        self.0.push(c);
        self.1.pop();
    }
    fn separator(&mut self) {
        if let Some(first) = self.1.last_mut() {
            if !*first {
                self.0.push(',');
            }
            *first = false;
        }
    }
    fn key(&mut self, k: &str) {
        self.separator();
        self.string(k);
        self.0.push(':');
        // The value that follows must not add a separator.
        if let Some(first) = self.1.last_mut() {
            *first = true;
        }
    }
    fn value(&mut self, v: &Value, order: Option<&[&str]>) {
        self.separator();
        match v {
            Value::Null => self.0.push_str("null"),
            Value::Bool(b) => self.0.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => self.0.push_str(&n.to_string()),
            Value::String(s) => self.string(s),
            Value::Array(items) => {
                self.open('[');
                for item in items {
                    self.value(item, order);
                }
                self.close(']');
            }
            Value::Object(map) => {
                self.open('{');
                let mut keys: Vec<&String> = map.keys().collect();
                if let Some(order) = order {
                    keys.sort_by_key(|k| order.iter().position(|o| o == k).unwrap_or(usize::MAX));
                }
                for k in keys {
                    self.key(k);
                    self.value(&map[k], None);
                }
                self.close('}');
            }
        }
    }
    fn string(&mut self, s: &str) {
        self.0.push('"');
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    self.0.push_str(&format!("\\u{:04x}", c as u32))
                }
                c if (c as u32) < 0x20 => self.0.push_str(&format!("\\u{:04x}", c as u32)),
                c => self.0.push(c),
            }
        }
        self.0.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_matches_go_json() {
        let config: ImageConfig = serde_saphyr::from_str(
            "binds:\n - /a:/b\ncapabilities:\n - all\nreadonly: true\nmounts:\n - type: bind\n   source: /x\n   destination: /y\nsysctl:\n  b: '1'\n  a: '<2>'\n",
        )
        .unwrap();
        assert_eq!(
            config.label_json(),
            r#"{"capabilities":["all"],"mounts":[{"destination":"/y","type":"bind","source":"/x"}],"binds":["/a:/b"],"readonly":true,"sysctl":{"a":"\u003c2\u003e","b":"1"}}"#
        );
    }
}
