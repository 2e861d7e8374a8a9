#!/usr/bin/env bash
# dev-env.sh: install (from Debian) and start what lkpkg's tests need. Idempotent.
#
# What it provides, and the variables it writes to "$LKPKG_DEV_STATE/env" (source it):
#   - dockerd 26.1 (trixie's docker.io, containerd image store), the default engine at unix:///var/run/docker.sock;
#   - a second dockerd (its own bridge lkpkg-d2): unix://$STATE/docker2/docker.sock and tcp://127.0.0.1:$LKPKG_DOCKER2_PORT
#     (LKPKG_TEST_DOCKER2_HOST, LKPKG_TEST_DOCKER2_TCP);
#   - qemu-user-static + binfmt-support, binfmt_misc mounted, qemu-aarch64 enabled;
#   - docker-registry on 127.0.0.1:$LKPKG_REGISTRY_PORT (LKPKG_TEST_REGISTRY);
#   - htpasswd and openssl (the registry tests start their own TLS + basic-auth registry);
#   - GNU time (/usr/bin/time: the memory tests read a command's peak RSS);
#   - skopeo; static busybox for amd64 (/bin/busybox) and arm64 (LKPKG_TEST_BUSYBOX_ARM64);
#   - sshd on 127.0.0.1:$LKPKG_SSHD_PORT accepting a generated key (LKPKG_TEST_SSH_*).
# Every process it starts is listed in "$STATE/started" (pid per line) so that a caller
# (scripts/test.sh) stops exactly what was started, and nothing it found already running.
set -euo pipefail

STATE=${LKPKG_DEV_STATE:-/var/lib/lkpkg-dev}
DOCKER2_PORT=${LKPKG_DOCKER2_PORT:-23751}
REGISTRY_PORT=${LKPKG_REGISTRY_PORT:-5000}
SSHD_PORT=${LKPKG_SSHD_PORT:-2222}
mkdir -p "$STATE"
touch "$STATE/started"

log() { echo "dev-env: $*" >&2; }

need_apt_update=1
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if ((need_apt_update)); then
    apt-get update -qq >&2
    need_apt_update=0
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# --- Docker Engine 26.1 (and buildx) from Debian's trixie suite, nothing else from it ---
# bookworm's docker.io (20.10) has no BuildKit that can export images; trixie's 26.1 with the
# containerd image store has. The trixie source reuses the mirror this machine's bookworm source
# names, and the pin gives trixie's packages priority -1 (never installed) except these two.
TRIXIE_LIST=/etc/apt/sources.list.d/lkpkg-trixie.sources
if [ ! -f "$TRIXIE_LIST" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { log "cannot find the Debian mirror in apt's sources"; exit 3; }
  cat >"$TRIXIE_LIST" <<SRC
Types: deb
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat >/etc/apt/preferences.d/lkpkg-trixie <<PIN
Package: docker.io docker-buildx
Pin: release n=trixie
Pin-Priority: 990

Package: *
Pin: release n=trixie
Pin-Priority: -1
PIN
  need_apt_update=1
fi
docker_version_ok() {
  dpkg-query -W -f='${Version}' docker.io 2>/dev/null | grep -q '^26\.'
}
if ! docker_version_ok || ! dpkg-query -W -f='${Status}' docker-buildx 2>/dev/null | grep -q "install ok installed"; then
  apt-get update -qq >&2
  need_apt_update=0
  log "installing docker.io and docker-buildx from trixie"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io docker-buildx >&2
fi
docker_version_ok || { log "docker.io 26.x did not install"; exit 3; }

apt_install qemu-user-static binfmt-support docker-registry skopeo busybox-static \
  openssh-server openssh-client iproute2 ca-certificates apache2-utils openssl time

# --- binfmt_misc, for arm64 builds under emulation ---
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || log "cannot mount binfmt_misc"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || log "warning: qemu-aarch64 is not registered"

# --- arm64 static busybox (a file only; never installed) ---
BUSYBOX_ARM64="$STATE/busybox-arm64"
if [ ! -x "$BUSYBOX_ARM64" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    need_apt_update=1
  fi
  if ((need_apt_update)); then apt-get update -qq >&2; need_apt_update=0; fi
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  (cd "$tmp" && apt-get download -qq busybox-static:arm64 >&2)
  dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$tmp/x"
  install -m 0755 "$tmp/x/bin/busybox" "$BUSYBOX_ARM64"
  rm -rf "$tmp"
fi

started() { echo "$1" >>"$STATE/started"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for SECONDS CMD...
  local n=$(( $1 * 5 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

# Both engines run with the containerd image store: their BuildKit then exports OCI images.
DAEMON_JSON='{"features": {"containerd-snapshotter": true}}'

# --- the default engine ---
if ! docker version >/dev/null 2>&1; then
  log "starting dockerd"
  mkdir -p "$STATE/docker1"
  echo "$DAEMON_JSON" >"$STATE/docker1/daemon.json"
  nohup dockerd --config-file "$STATE/docker1/daemon.json" --iptables=false \
    >"$STATE/docker1/log" 2>&1 &
  started $!
  wait_for 60 docker version || { tail -20 "$STATE/docker1/log" >&2; log "dockerd did not start"; exit 3; }
fi

# --- the second engine (a second builder) ---
D2="$STATE/docker2"
D2_SOCK="unix://$D2/docker.sock"
if ! DOCKER_HOST="$D2_SOCK" docker version >/dev/null 2>&1; then
  log "starting the second dockerd on $D2_SOCK and tcp://127.0.0.1:$DOCKER2_PORT"
  mkdir -p "$D2"
  echo "$DAEMON_JSON" >"$D2/daemon.json"
  # A bridge of its own: a dockerd started with `--bridge none` deletes the host's `docker0`
  # (moby removes the default bridge interface when the bridge is disabled), which leaves the
  # default engine unable to give builds a network.
  if ! ip link show lkpkg-d2 >/dev/null 2>&1; then
    ip link add lkpkg-d2 type bridge
    ip addr add 172.30.255.1/24 dev lkpkg-d2
    ip link set lkpkg-d2 up
  fi
  nohup dockerd --config-file "$D2/daemon.json" --data-root "$D2/data" --exec-root "$D2/exec" --pidfile "$D2/pid" \
    -H "$D2_SOCK" -H "tcp://127.0.0.1:$DOCKER2_PORT" --bridge lkpkg-d2 --iptables=false \
    >"$D2/log" 2>&1 &
  started $!
  wait_for 60 env DOCKER_HOST="$D2_SOCK" docker version \
    || { tail -20 "$D2/log" >&2; log "the second dockerd did not start"; exit 3; }
fi

# --- a registry on loopback ---
if ! port_open "$REGISTRY_PORT"; then
  log "starting docker-registry on 127.0.0.1:$REGISTRY_PORT"
  mkdir -p "$STATE/registry/data"
  cat >"$STATE/registry/config.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REGISTRY_PORT
YML
  nohup docker-registry serve "$STATE/registry/config.yml" >"$STATE/registry/log" 2>&1 &
  started $!
  wait_for 20 port_open "$REGISTRY_PORT" || log "warning: registry did not start"
fi

# --- sshd on loopback with key auth (for ssh:// builders) ---
SSHD="$STATE/sshd"
mkdir -p "$SSHD"
[ -f "$SSHD/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$SSHD/host_key"
[ -f "$SSHD/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$SSHD/client_key"
cp "$SSHD/client_key.pub" "$SSHD/authorized_keys"
chmod 600 "$SSHD/authorized_keys"
if ! port_open "$SSHD_PORT"; then
  mkdir -p /run/sshd
  cat >"$SSHD/sshd_config" <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $SSHD/host_key
AuthorizedKeysFile $SSHD/authorized_keys
PasswordAuthentication no
PermitRootLogin prohibit-password
StrictModes no
PidFile $SSHD/pid
CFG
  /usr/sbin/sshd -f "$SSHD/sshd_config" -E "$SSHD/log"
  wait_for 10 test -s "$SSHD/pid" && started "$(cat "$SSHD/pid")"
fi
cat >"$SSHD/ssh_config" <<CFG
Host lkpkg-test-ssh
  HostName 127.0.0.1
  Port $SSHD_PORT
  User root
  IdentityFile $SSHD/client_key
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
CFG

ip link show docker0 >/dev/null 2>&1 \
  || log "warning: the default engine's bridge docker0 is missing (builds with network: true will fail; restart that dockerd)"
for host in "unix:///var/run/docker.sock" "$D2_SOCK"; do
  driver=$(DOCKER_HOST=$host docker info --format '{{.DriverStatus}}' 2>/dev/null || true)
  case "$driver" in
    *io.containerd.snapshotter*) ;;
    *) log "warning: the engine at $host does not use the containerd image store ($driver)" ;;
  esac
done

cat >"$STATE/env" <<ENV
export LKPKG_TEST_DOCKER2_HOST=$D2_SOCK
export LKPKG_TEST_DOCKER2_TCP=tcp://127.0.0.1:$DOCKER2_PORT
export LKPKG_TEST_REGISTRY=127.0.0.1:$REGISTRY_PORT
export LKPKG_TEST_BUSYBOX=/bin/busybox
export LKPKG_TEST_BUSYBOX_ARM64=$BUSYBOX_ARM64
export LKPKG_TEST_SSH_CONFIG=$SSHD/ssh_config
export LKPKG_TEST_SSH_HOST=lkpkg-test-ssh
ENV
log "ready; variables in $STATE/env"
