//! The `config` field of build.yml: moby's `ImageConfig`, which linuxkit decodes with yaml.v3
//! and marshals with `encoding/json` into the `org.mobyproject.config` label.
//!
//! `linuxkit build` reads the label back into the same Go struct, so the label must be the bytes
//! linuxkit writes: it is part of the image config, and so of the image's digest. Rather than
//! mimic the output, lkpkg describes the Go structs themselves — linuxkit's
//! `src/cmd/linuxkit/moby/config.go` and runtime-spec v1.2.1's `specs-go/config.go`, as vendored
//! by linuxkit 3bf33c3a — and decodes and encodes over that description with yaml.v3's and
//! `encoding/json`'s rules (`go_value`, `go_json`). Two consequences users
//! meet:
//! - string fields keep their YAML text (`mode: 0666` is `"0666"`), integer fields take Go's
//!   integer syntax (`0666` is 438);
//! - runtime-spec's structs have no `yaml` tags, so their YAML keys are the lowercased Go
//!   field names (`uidMappings: [{containerid: 0, hostid: 1000, size: 1}]`), while the label
//!   uses their JSON names (`containerID`); `containerID:` in YAML is an unknown field, as in
//!   linuxkit.
//!
//! `tests/compat/config-label/` holds vectors produced by linuxkit's own decoder and encoder.

use super::go_value::{GoField as F, GoStruct, GoType as T, GoValue};

const STRINGS: T = T::Slice(&T::String);
const OPT_STRINGS: T = T::Ptr(&STRINGS);
const OPT_STRING: T = T::Ptr(&T::String);
const OPT_BOOL: T = T::Ptr(&T::Bool);
const OPT_I64: T = T::Ptr(&T::Int(64));
const OPT_U64: T = T::Ptr(&T::Uint(64));
const OPT_U32: T = T::Ptr(&T::Uint(32));
const OPT_U16: T = T::Ptr(&T::Uint(16));
const STRING_MAP: T = T::Map(&T::String);

/// `moby.ImageConfig`.
pub(crate) static IMAGE_CONFIG: GoStruct = GoStruct {
    name: "moby.ImageConfig",
    fields: &[
        F::new("capabilities", true, OPT_STRINGS),
        F::new("capabilities.add", true, OPT_STRINGS),
        F::new("ambient", true, OPT_STRINGS),
        F::new("mounts", true, T::Ptr(&T::Slice(&T::Struct(&MOUNT)))),
        F::new("binds", true, OPT_STRINGS),
        F::new("binds.add", true, OPT_STRINGS),
        F::new("devices", true, T::Ptr(&T::Slice(&T::Struct(&DEVICE)))),
        F::new("tmpfs", true, OPT_STRINGS),
        F::new("command", true, OPT_STRINGS),
        F::new("env", true, OPT_STRINGS),
        F::new("cwd", true, T::String),
        F::new("net", true, T::String),
        F::new("pid", true, T::String),
        F::new("ipc", true, T::String),
        F::new("uts", true, T::String),
        F::new("userns", true, T::String),
        F::new("hostname", true, T::String),
        F::new("readonly", true, OPT_BOOL),
        F::new("maskedPaths", true, OPT_STRINGS),
        F::new("readonlyPaths", true, OPT_STRINGS),
        F::new("uid", true, T::Ptr(&T::Interface)),
        F::new("gid", true, T::Ptr(&T::Interface)),
        F::new("additionalGids", true, T::Ptr(&T::Slice(&T::Interface))),
        F::new("noNewPrivileges", true, OPT_BOOL),
        F::new("oomScoreAdj", true, T::Ptr(&T::Int(64))),
        F::new("rootfsPropagation", true, OPT_STRING),
        F::new("cgroupsPath", true, OPT_STRING),
        F::new("resources", true, T::Ptr(&T::Struct(&LINUX_RESOURCES))),
        F::new("sysctl", true, T::Ptr(&STRING_MAP)),
        F::new("rlimits", true, OPT_STRINGS),
        F::new(
            "uidMappings",
            true,
            T::Ptr(&T::Slice(&T::Struct(&LINUX_ID_MAPPING))),
        ),
        F::new(
            "gidMappings",
            true,
            T::Ptr(&T::Slice(&T::Struct(&LINUX_ID_MAPPING))),
        ),
        F::new("annotations", true, T::Ptr(&STRING_MAP)),
        F::new("runtime", true, T::Ptr(&T::Struct(&RUNTIME))),
    ],
};

/// `moby.Device`.
static DEVICE: GoStruct = GoStruct {
    name: "moby.Device",
    fields: &[
        F::new("path", false, T::String),
        F::new("type", false, T::String),
        F::new("major", false, T::Int(64)),
        F::new("minor", false, T::Int(64)),
        F::new("mode", true, T::String),
    ],
};

/// `moby.Runtime`.
static RUNTIME: GoStruct = GoStruct {
    name: "moby.Runtime",
    fields: &[
        F::new("cgroups", true, OPT_STRINGS),
        F::new("mounts", true, T::Ptr(&T::Slice(&T::Struct(&MOUNT)))),
        F::new("mkdir", true, OPT_STRINGS),
        F::new(
            "interfaces",
            true,
            T::Ptr(&T::Slice(&T::Struct(&INTERFACE))),
        ),
        // A struct, not a pointer: `omitempty` never omits it, so `"bindNS":{}` is always there.
        F::new("bindNS", true, T::Struct(&NAMESPACES)),
        F::new("namespace", true, OPT_STRING),
    ],
};

/// `moby.Namespaces`.
static NAMESPACES: GoStruct = GoStruct {
    name: "moby.Namespaces",
    fields: &[
        F::new("cgroup", true, OPT_STRING),
        F::new("ipc", true, OPT_STRING),
        F::new("mnt", true, OPT_STRING),
        F::new("net", true, OPT_STRING),
        F::new("pid", true, OPT_STRING),
        F::new("user", true, OPT_STRING),
        F::new("uts", true, OPT_STRING),
    ],
};

/// `moby.Interface`.
static INTERFACE: GoStruct = GoStruct {
    name: "moby.Interface",
    fields: &[
        F::new("name", true, T::String),
        F::new("add", true, T::String),
        F::new("peer", true, T::String),
        F::new("createInRoot", false, T::Bool),
    ],
};

// runtime-spec: no `yaml` tags, so the YAML key is the lowercased Go field name.

/// `specs.Mount`.
static MOUNT: GoStruct = GoStruct {
    name: "specs.Mount",
    fields: &[
        F::new("destination", false, T::String),
        F::new("type", true, T::String),
        F::new("source", true, T::String),
        F::new("options", true, STRINGS),
        F::named(
            "uidmappings",
            "uidMappings",
            true,
            T::Slice(&T::Struct(&LINUX_ID_MAPPING)),
        ),
        F::named(
            "gidmappings",
            "gidMappings",
            true,
            T::Slice(&T::Struct(&LINUX_ID_MAPPING)),
        ),
    ],
};

/// `specs.LinuxIDMapping`.
static LINUX_ID_MAPPING: GoStruct = GoStruct {
    name: "specs.LinuxIDMapping",
    fields: &[
        F::named("containerid", "containerID", false, T::Uint(32)),
        F::named("hostid", "hostID", false, T::Uint(32)),
        F::new("size", false, T::Uint(32)),
    ],
};

/// `specs.LinuxResources`.
static LINUX_RESOURCES: GoStruct = GoStruct {
    name: "specs.LinuxResources",
    fields: &[
        F::new("devices", true, T::Slice(&T::Struct(&LINUX_DEVICE_CGROUP))),
        F::new("memory", true, T::Ptr(&T::Struct(&LINUX_MEMORY))),
        F::new("cpu", true, T::Ptr(&T::Struct(&LINUX_CPU))),
        F::new("pids", true, T::Ptr(&T::Struct(&LINUX_PIDS))),
        F::named(
            "blockio",
            "blockIO",
            true,
            T::Ptr(&T::Struct(&LINUX_BLOCK_IO)),
        ),
        F::named(
            "hugepagelimits",
            "hugepageLimits",
            true,
            T::Slice(&T::Struct(&LINUX_HUGEPAGE_LIMIT)),
        ),
        F::new("network", true, T::Ptr(&T::Struct(&LINUX_NETWORK))),
        F::new("rdma", true, T::Map(&T::Struct(&LINUX_RDMA))),
        F::new("unified", true, STRING_MAP),
    ],
};

static LINUX_DEVICE_CGROUP: GoStruct = GoStruct {
    name: "specs.LinuxDeviceCgroup",
    fields: &[
        F::new("allow", false, T::Bool),
        F::new("type", true, T::String),
        F::new("major", true, OPT_I64),
        F::new("minor", true, OPT_I64),
        F::new("access", true, T::String),
    ],
};

static LINUX_MEMORY: GoStruct = GoStruct {
    name: "specs.LinuxMemory",
    fields: &[
        F::new("limit", true, OPT_I64),
        F::new("reservation", true, OPT_I64),
        F::new("swap", true, OPT_I64),
        F::new("kernel", true, OPT_I64),
        F::named("kerneltcp", "kernelTCP", true, OPT_I64),
        F::new("swappiness", true, OPT_U64),
        F::named("disableoomkiller", "disableOOMKiller", true, OPT_BOOL),
        F::named("usehierarchy", "useHierarchy", true, OPT_BOOL),
        F::named("checkbeforeupdate", "checkBeforeUpdate", true, OPT_BOOL),
    ],
};

static LINUX_CPU: GoStruct = GoStruct {
    name: "specs.LinuxCPU",
    fields: &[
        F::new("shares", true, OPT_U64),
        F::new("quota", true, OPT_I64),
        F::new("burst", true, OPT_U64),
        F::new("period", true, OPT_U64),
        F::named("realtimeruntime", "realtimeRuntime", true, OPT_I64),
        F::named("realtimeperiod", "realtimePeriod", true, OPT_U64),
        F::new("cpus", true, T::String),
        F::new("mems", true, T::String),
        F::new("idle", true, OPT_I64),
    ],
};

static LINUX_PIDS: GoStruct = GoStruct {
    name: "specs.LinuxPids",
    fields: &[F::new("limit", false, T::Int(64))],
};

static LINUX_BLOCK_IO: GoStruct = GoStruct {
    name: "specs.LinuxBlockIO",
    fields: &[
        F::new("weight", true, OPT_U16),
        F::named("leafweight", "leafWeight", true, OPT_U16),
        F::named(
            "weightdevice",
            "weightDevice",
            true,
            T::Slice(&T::Struct(&LINUX_WEIGHT_DEVICE)),
        ),
        F::named(
            "throttlereadbpsdevice",
            "throttleReadBpsDevice",
            true,
            T::Slice(&T::Struct(&LINUX_THROTTLE_DEVICE)),
        ),
        F::named(
            "throttlewritebpsdevice",
            "throttleWriteBpsDevice",
            true,
            T::Slice(&T::Struct(&LINUX_THROTTLE_DEVICE)),
        ),
        F::named(
            "throttlereadiopsdevice",
            "throttleReadIOPSDevice",
            true,
            T::Slice(&T::Struct(&LINUX_THROTTLE_DEVICE)),
        ),
        F::named(
            "throttlewriteiopsdevice",
            "throttleWriteIOPSDevice",
            true,
            T::Slice(&T::Struct(&LINUX_THROTTLE_DEVICE)),
        ),
    ],
};

static LINUX_BLOCK_IO_DEVICE: GoStruct = GoStruct {
    name: "specs.LinuxBlockIODevice",
    fields: &[
        F::new("major", false, T::Int(64)),
        F::new("minor", false, T::Int(64)),
    ],
};

static LINUX_WEIGHT_DEVICE: GoStruct = GoStruct {
    name: "specs.LinuxWeightDevice",
    fields: &[
        F::embedded("linuxblockiodevice", T::Struct(&LINUX_BLOCK_IO_DEVICE)),
        F::new("weight", true, OPT_U16),
        F::named("leafweight", "leafWeight", true, OPT_U16),
    ],
};

static LINUX_THROTTLE_DEVICE: GoStruct = GoStruct {
    name: "specs.LinuxThrottleDevice",
    fields: &[
        F::embedded("linuxblockiodevice", T::Struct(&LINUX_BLOCK_IO_DEVICE)),
        F::new("rate", false, T::Uint(64)),
    ],
};

static LINUX_HUGEPAGE_LIMIT: GoStruct = GoStruct {
    name: "specs.LinuxHugepageLimit",
    fields: &[
        F::named("pagesize", "pageSize", false, T::String),
        F::new("limit", false, T::Uint(64)),
    ],
};

static LINUX_NETWORK: GoStruct = GoStruct {
    name: "specs.LinuxNetwork",
    fields: &[
        F::named("classid", "classID", true, OPT_U32),
        F::new(
            "priorities",
            true,
            T::Slice(&T::Struct(&LINUX_INTERFACE_PRIORITY)),
        ),
    ],
};

static LINUX_INTERFACE_PRIORITY: GoStruct = GoStruct {
    name: "specs.LinuxInterfacePriority",
    fields: &[
        F::new("name", false, T::String),
        F::new("priority", false, T::Uint(32)),
    ],
};

static LINUX_RDMA: GoStruct = GoStruct {
    name: "specs.LinuxRdma",
    fields: &[
        F::named("hcahandles", "hcaHandles", true, OPT_U32),
        F::named("hcaobjects", "hcaObjects", true, OPT_U32),
    ],
};

/// A decoded `config`: what linuxkit would hold in `pkgInfo.Config`, and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    label: String,
}

impl ImageConfig {
    /// The config decoded into a non-nil `*moby.ImageConfig`, marshalled as linuxkit does; the
    /// error is `encoding/json`'s (a NaN `uid`, a mapping with a non-string key).
    pub(crate) fn from_value(value: &GoValue) -> Result<Self, String> {
        let label = super::go_json::marshal(value, &T::Struct(&IMAGE_CONFIG))?;
        Ok(ImageConfig { label })
    }

    /// The `org.mobyproject.config` label: `json.Marshal` of linuxkit's `ImageConfig`.
    pub fn label_json(&self) -> &str {
        &self.label
    }
}
