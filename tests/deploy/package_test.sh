#!/usr/bin/env bash
# The Debian package, installed for real on this machine, as docs/deploy.md tells an
# administrator to: package the dev build (tools/package dev: nothing is compiled), lintian,
# dpkg -i, the files, conffile, user and directories it must make, systemd-analyze verify on
# the unit, --check-config on the shipped config; then the config edited for a loopback sshd
# and the package installed again over it (an upgrade keeps the edits), the INSTALLED server
# started as the cmdcast user with a notify socket (READY=1 once it listens), a command run
# through it with the installed CLI, a reload, the audit database backed up; then dpkg --purge
# and what must go and what must stay.
# Needs root; exits 77 (skipped) without. Leaves the machine as it found it, on failure too.
# A cmdcast package, user or /var/lib/cmdcast that this test did not make is never touched:
# the test refuses to run instead.
set -euo pipefail
top="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$top"
# Debian's python3 (the one first on PATH may be another).
python=/usr/bin/python3
marker=/var/tmp/cmdcast-package-test.installed   # this test's install, to undo after a crash

step() { echo "== $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
expect_eq() { # what actual expected
  [ "$2" = "$3" ] || fail "$1: got \"$2\", expected \"$3\""
}

if [ "$(id -u)" != 0 ]; then
  echo "SKIP: the package test installs a package and makes a system user: it needs root"
  exit 77
fi

work="$(mktemp -d /tmp/cmdcast-package-test.XXXXXX)"
chmod 755 "$work"  # sshd reads authorized_keys here as cmdcast-test; the server sends to the notify socket
pids=()

# Undoes what this test installed: the package, and the user and state directory its
# postinst made (a purge leaves those on purpose).
undo_install() {
  if dpkg-query -W -f='${db:Status-Status}' cmdcast 2>/dev/null | grep -qv '^not-installed$'; then
    dpkg --purge cmdcast >/dev/null 2>&1 || echo "cleanup: dpkg --purge cmdcast failed" >&2
  fi
  if getent passwd cmdcast >/dev/null; then userdel cmdcast || true; fi
  if getent group cmdcast >/dev/null; then groupdel cmdcast || true; fi
  rm -rf /var/lib/cmdcast
  rm -f "$marker"
}

cleanup() {
  local status=$?
  set +e
  # sshd's per-connection children first, then what this test started itself (quietly:
  # bash would report each as "Killed")
  {
    for p in "${pids[@]}"; do
      for child in $(ps -o pid= --ppid "$p"); do kill -KILL "$child"; done
      kill -KILL "$p"
    done
    for p in "${pids[@]}"; do wait "$p"; done
  } 2>/dev/null
  if [ "$status" != 0 ]; then
    for log in server.log sshd.log notify.log; do
      [ -s "$work/$log" ] && { echo "--- $log"; tail -n 40 "$work/$log"; }
    done
  fi
  [ -f "$marker" ] && undo_install
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for_port() { # port what
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  fail "$2 does not accept connections on port $1"
}

if [ -f "$marker" ]; then
  step "an earlier run of this test was interrupted: undoing its install"
  undo_install
fi
# Never trample a real installation: its config, audit records and SSH key.
status="$(dpkg-query -W -f='${db:Status-Status}' cmdcast 2>/dev/null || true)"
if [ -n "$status" ] && [ "$status" != not-installed ]; then
  fail "a cmdcast package is already on this machine (dpkg status: $status), not installed by this test;" \
    "the test installs and purges its own. Remove it first (dpkg --purge cmdcast) or run the test on another machine"
fi
if getent passwd cmdcast >/dev/null || getent group cmdcast >/dev/null || [ -e /var/lib/cmdcast ]; then
  fail "the cmdcast user or group or /var/lib/cmdcast exist already (an earlier install keeps them on purge);" \
    "this test would use and then delete them. Remove them first (deluser cmdcast; rm -r /var/lib/cmdcast)"
fi

step "tools/package dev"
deb="$(CMDCAST_PACKAGE_DIR="$work/package" tools/package dev)"  # a package of its own
[ -f "$deb" ] || fail "tools/package made no package"
version="$(dpkg-deb -f "$deb" Version)"
echo "$deb ($version)"

step "lintian"
lintian_status=0
lintian --fail-on error --info "$deb" >"$work/lintian.log" 2>&1 || lintian_status=$?
grep -v '^running with root privileges' "$work/lintian.log" | grep -v '^N: ' || true
[ "$lintian_status" = 0 ] || fail "lintian reports errors (exit $lintian_status)"

step "dpkg -i"
echo "test-install" >"$marker"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i $deb failed"; }

step "the files"
for f in /usr/bin/cmdcast-server /usr/bin/cmdcast /usr/bin/cmdcast-desktop \
  /usr/share/cmdcast/web/index.html /usr/share/cmdcast/web/index.js /usr/share/cmdcast/web/index.js.gz \
  /usr/share/cmdcast/web/index.wasm /usr/share/cmdcast/web/index.wasm.gz \
  /lib/systemd/system/cmdcast.service /etc/cmdcast/cmdcast.toml \
  /usr/share/man/man8/cmdcast-server.8.gz /usr/share/man/man1/cmdcast.1.gz /usr/share/man/man1/cmdcast-desktop.1.gz \
  /usr/share/doc/cmdcast/copyright /usr/share/doc/cmdcast/changelog.gz /usr/share/doc/cmdcast/deploy.md; do
  [ -f "$f" ] || fail "$f is not installed"
done
if [ -f deploy/nginx/cmdcast.conf ]; then
  cmp -s deploy/nginx/cmdcast.conf /usr/share/doc/cmdcast/examples/nginx-cmdcast.conf ||
    fail "the nginx site is not installed as /usr/share/doc/cmdcast/examples/nginx-cmdcast.conf"
fi
for page in cmdcast-server cmdcast cmdcast-desktop; do
  man -w "$page" >/dev/null || fail "man $page finds no page"
done
# The web client as built, byte for byte
for f in index.html index.js index.wasm index.wasm.gz; do
  cmp -s "build/wasm/web/$f" "/usr/share/cmdcast/web/$f" || fail "/usr/share/cmdcast/web/$f differs from build/wasm/web/$f"
done
dpkg-query -W -f='${Conffiles}\n' cmdcast | grep -q '^ /etc/cmdcast/cmdcast.toml [0-9a-f]\{32\}$' ||
  fail "/etc/cmdcast/cmdcast.toml is not a conffile"
expect_eq "cmdcast --version" "$(/usr/bin/cmdcast --version)" "cmdcast $version"
expect_eq "cmdcast-desktop --version" "$(/usr/bin/cmdcast-desktop --version)" "cmdcast $version"
/usr/bin/cmdcast-server --version | grep -qF "$version" || fail "cmdcast-server --version does not say $version"
/usr/bin/cmdcast --help | grep -q '^usage: cmdcast run' || fail "cmdcast --help prints no usage on stdout"

step "the cmdcast user and /var/lib/cmdcast"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd cmdcast) || fail "postinst made no cmdcast user"
[ "$uid" -lt 1000 ] || fail "cmdcast is not a system user (uid $uid)"
expect_eq "cmdcast's home" "$home" /var/lib/cmdcast
expect_eq "cmdcast's shell" "$shell" /usr/sbin/nologin
expect_eq "cmdcast's group" "$(id -gn cmdcast)" cmdcast
expect_eq "/var/lib/cmdcast" "$(stat -c '%U:%G %a' /var/lib/cmdcast)" "cmdcast:cmdcast 750"
expect_eq "the server's key" "$(stat -c '%U %a' /var/lib/cmdcast/id_ed25519)" "cmdcast 600"
expect_eq "known_hosts" "$(stat -c '%U %s' /var/lib/cmdcast/known_hosts)" "cmdcast 0"
expect_eq "/etc/cmdcast/cmdcast.toml" "$(stat -c '%U:%G %a' /etc/cmdcast/cmdcast.toml)" "root:cmdcast 640"

step "systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/cmdcast.service >"$work/verify.log" 2>&1 || true
cat "$work/verify.log"
if grep -q 'cmdcast' "$work/verify.log"; then fail "systemd-analyze verify finds problems in cmdcast.service"; fi

as_cmdcast() { setpriv --reuid=cmdcast --regid=cmdcast --init-groups -- "$@"; }

step "cmdcast-server --check-config on the shipped config (as cmdcast, as the service would)"
as_cmdcast /usr/bin/cmdcast-server --check-config /etc/cmdcast/cmdcast.toml ||
  fail "the shipped /etc/cmdcast/cmdcast.toml does not pass --check-config"

step "a machine to run on: a loopback sshd that lets the server's key in"
ssh_port="$(free_port)"
ssh-keygen -q -t ed25519 -N '' -f "$work/hostkey"
cp /var/lib/cmdcast/id_ed25519.pub "$work/authorized_keys"
chmod 644 "$work/authorized_keys"
cat >"$work/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/hostkey
AuthorizedKeysFile $work/authorized_keys
AllowUsers cmdcast-test
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $work/sshd.pid
LogLevel VERBOSE
EOF
mkdir -p /run/sshd
getent passwd cmdcast-test >/dev/null || fail "no user cmdcast-test: run tools/setup"
/usr/sbin/sshd -D -f "$work/sshd_config" -E "$work/sshd.log" &
pids+=($!)
wait_for_port "$ssh_port" sshd
# The host key, recorded as docs/deploy.md says.
ssh-keyscan -p "$ssh_port" -t ed25519 127.0.0.1 2>/dev/null >>/var/lib/cmdcast/known_hosts
grep -q "^\[127.0.0.1\]:$ssh_port ssh-ed25519 " /var/lib/cmdcast/known_hosts || fail "ssh-keyscan recorded no host key"

step "the config, edited as an administrator would"
http_port="$(free_port)"
sed -i -e "s/^listen = \"127.0.0.1:8080\"/listen = \"127.0.0.1:$http_port\"/" \
  -e 's/^anonymous = "viewer"/anonymous = "operator"/' /etc/cmdcast/cmdcast.toml
grep -q "^listen = \"127.0.0.1:$http_port\"" /etc/cmdcast/cmdcast.toml || fail "the shipped config has no listen line to edit"
grep -q '^anonymous = "operator"' /etc/cmdcast/cmdcast.toml || fail "the shipped config has no anonymous line to edit"
cat >>/etc/cmdcast/cmdcast.toml <<EOF

[[machines]]
id = "loopback"
host = "127.0.0.1"
port = $ssh_port
user = "cmdcast-test"
identity = "/var/lib/cmdcast/id_ed25519"
known_hosts = "/var/lib/cmdcast/known_hosts"

[actions.hello]
command = "echo hello from {who}"
params = { who = "^[a-z-]{1,32}$" }

[actions.fail]
command = "echo about to fail >&2; exit 3"
EOF
as_cmdcast /usr/bin/cmdcast-server --check-config /etc/cmdcast/cmdcast.toml || fail "the edited config does not pass --check-config"

step "dpkg -i again, as an upgrade would: the edits, the key and known_hosts stay"
state_before="$(sha256sum /etc/cmdcast/cmdcast.toml /var/lib/cmdcast/id_ed25519 /var/lib/cmdcast/known_hosts)"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i over the installed package failed"; }
expect_eq "the config, key and known_hosts after the upgrade" \
  "$(sha256sum /etc/cmdcast/cmdcast.toml /var/lib/cmdcast/id_ed25519 /var/lib/cmdcast/known_hosts)" "$state_before"
expect_eq "/var/lib/cmdcast after the upgrade" "$(stat -c '%U:%G %a' /var/lib/cmdcast)" "cmdcast:cmdcast 750"
expect_eq "/etc/cmdcast/cmdcast.toml after the upgrade" "$(stat -c '%U:%G %a' /etc/cmdcast/cmdcast.toml)" "root:cmdcast 640"

step "the installed server, as cmdcast, with a notify socket"
# Listens as systemd would for Type=notify; exits once READY=1 came.
cat >"$work/notify.py" <<'EOF'
import os, socket, sys
path, bound = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
open(bound, "w").close()
s.settimeout(30)
while True:
    message = s.recv(4096).decode()
    print(message.replace("\n", " "), flush=True)
    if "READY=1" in message.split("\n"):
        break
EOF
"$python" "$work/notify.py" "$work/notify.sock" "$work/notify.bound" >"$work/notify.log" 2>&1 &
notify_pid=$!
pids+=("$notify_pid")
for _ in $(seq 100); do [ -e "$work/notify.bound" ] && break; sleep 0.05; done
[ -e "$work/notify.bound" ] || fail "the notify socket listener did not start"
# The service's environment: its working directory, its user, nothing inherited.
(cd /var/lib/cmdcast && exec env -i PATH=/usr/bin:/bin NOTIFY_SOCKET="$work/notify.sock" \
  setpriv --reuid=cmdcast --regid=cmdcast --init-groups -- \
  /usr/bin/cmdcast-server --config /etc/cmdcast/cmdcast.toml) >"$work/server.log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 300); do
  kill -0 "$notify_pid" 2>/dev/null || break
  kill -0 "$server_pid" 2>/dev/null || fail "cmdcast-server exited at start"
  sleep 0.05
done
wait "$notify_pid" || fail "no READY=1 on the notify socket within 30 s"
# Ready means listening: no retry here.
expect_eq "/healthz right after READY=1" "$(curl -s --max-time 5 "http://127.0.0.1:$http_port/healthz")" ok
expect_eq "the server's user" "$(ps -o user= -p "$server_pid")" cmdcast

step "a command through it with the installed CLI"
cli_status=0
out="$(/usr/bin/cmdcast run "http://127.0.0.1:$http_port" loopback hello who=package-test 2>"$work/cli.err")" || cli_status=$?
cat "$work/cli.err" >&2
expect_eq "cmdcast run ... hello: output" "$out" "hello from package-test"
expect_eq "cmdcast run ... hello: exit status" "$cli_status" 0
cli_status=0
/usr/bin/cmdcast run "http://127.0.0.1:$http_port" loopback fail >"$work/cli.out" 2>"$work/cli.err" || cli_status=$?
expect_eq "cmdcast run ... fail: exit status" "$cli_status" 3
grep -q "about to fail" "$work/cli.err" || fail "cmdcast run ... fail: no stderr line (got: $(cat "$work/cli.err"))"

step "a new action, then systemctl reload's SIGHUP (ExecReload)"
cat >>/etc/cmdcast/cmdcast.toml <<'EOF'

[actions.kernel]
command = "uname -s"
EOF
as_cmdcast /usr/bin/cmdcast-server --check-config /etc/cmdcast/cmdcast.toml || fail "the config with a new action does not pass --check-config"
kill -HUP "$server_pid"
reloaded=""
for _ in $(seq 100); do
  reloaded="$(/usr/bin/cmdcast run "http://127.0.0.1:$http_port" loopback kernel 2>/dev/null)" && break
  kill -0 "$server_pid" 2>/dev/null || fail "cmdcast-server exited on SIGHUP"
  sleep 0.1
done
expect_eq "the action added by the reload" "$reloaded" Linux

step "the audit database, backed up as docs/deploy.md says"
expect_eq "the audit database" "$(stat -c %U /var/lib/cmdcast/cmdcast.db)" cmdcast
sqlite3 /var/lib/cmdcast/cmdcast.db ".backup '$work/backup.db'"
expect_eq "the backup's integrity" "$(sqlite3 "$work/backup.db" 'PRAGMA integrity_check')" ok
expect_eq "runs of hello in the backup" "$(sqlite3 "$work/backup.db" "SELECT count(*) FROM executions WHERE action_type = 'hello'")" 1

step "stop it (SIGTERM)"
kill -TERM "$server_pid"
server_status=0
wait "$server_pid" || server_status=$?
expect_eq "cmdcast-server's exit status after SIGTERM" "$server_status" 0

step "dpkg --purge"
dpkg --purge cmdcast >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg --purge cmdcast failed"; }
for f in /usr/bin/cmdcast-server /usr/bin/cmdcast /usr/bin/cmdcast-desktop /usr/share/cmdcast \
  /lib/systemd/system/cmdcast.service /etc/cmdcast /usr/share/doc/cmdcast; do
  [ ! -e "$f" ] || fail "$f is still there after the purge"
done
getent passwd cmdcast >/dev/null || fail "the purge removed the cmdcast user (it must stay)"
for f in /var/lib/cmdcast/cmdcast.db /var/lib/cmdcast/id_ed25519 /var/lib/cmdcast/known_hosts; do
  [ -f "$f" ] || fail "the purge removed $f (/var/lib/cmdcast must stay)"
done

step "leave the machine as it was"
undo_install
echo "package test: ok"
