#!/usr/bin/env bash
# Reference XMPP servers for Chorus benchmarks: Prosody 0.12.3 and
# ejabberd 23.01 from Debian bookworm packages, configured as comparably as
# possible (see README.md in this directory).
#
#   refserver.sh install
#   refserver.sh start prosody|ejabberd DIR PORT DOMAIN
#   refserver.sh stop  prosody|ejabberd DIR
#
# Everything a server writes (config, cert, data, logs, pid) lives in DIR.
# Nothing in /etc is edited. c2s listens on 127.0.0.1:PORT only (STARTTLS,
# required). ejabberd additionally uses 127.0.0.1:PORT+2 for Erlang
# distribution (epmd-less, needed by `ejabberdctl stop`); PORT+1 is reserved
# for an HTTP listener, which is not enabled.
set -euo pipefail

PROG=$(basename "$0")
READY_TIMEOUT=${READY_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

usage() {
	cat >&2 <<EOF
usage: $PROG install
       $PROG start prosody|ejabberd DIR PORT DOMAIN
       $PROG stop  prosody|ejabberd DIR
EOF
	exit 2
}

# ---------------------------------------------------------------- install

cmd_install() {
	[ "$(id -u)" = 0 ] || die "install must run as root"
	local missing=()
	for p in prosody ejabberd openssl; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		# Forbid maintainer scripts from starting services (no systemd here).
		local had_policy=0
		[ -e /usr/sbin/policy-rc.d ] && had_policy=1
		if [ $had_policy = 0 ]; then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 755 /usr/sbin/policy-rc.d
			trap 'rm -f /usr/sbin/policy-rc.d' EXIT
		fi
		apt-get update -qq || true
		apt-get install -y --no-install-recommends prosody ejabberd openssl
		if [ $had_policy = 0 ]; then
			rm -f /usr/sbin/policy-rc.d
			trap - EXIT
		fi
	else
		log "prosody, ejabberd, openssl already installed"
	fi
	# Undo any autostart that slipped through: the system-wide instances use
	# /etc configs and the standard ports (5222, 5269, 5280, 4369).
	local p
	# (Our own instances always run with --config DIR/... and a unique node.)
	for p in $(pgrep -f '^(/usr/bin/)?lua5\.[0-9]+ /usr/bin/prosody' | while read -r q; do
	               tr '\0' ' ' <"/proc/$q/cmdline" 2>/dev/null | grep -q -- '--config' || echo "$q"; done) \
	         $(pgrep -f 'beam\.smp.*-s(name)? ejabberd@localhost' || true); do
		log "killing package-started server pid $p"
		kill "$p" 2>/dev/null || true
	done
	sleep 1
	# epmd started by the package (not ours: ours are epmd-less)
	if pgrep -x epmd >/dev/null && ! epmd -names 2>/dev/null | grep -q '^name '; then
		epmd -kill >/dev/null 2>&1 || true
	fi
	log "prosody $(dpkg-query -W -f='${Version}' prosody), ejabberd $(dpkg-query -W -f='${Version}' ejabberd)"
}

# ---------------------------------------------------------------- helpers

raise_nofile() {
	# Raise the fd limit to the hard maximum (20000 on the bench machine).
	local hard
	hard=$(ulimit -Hn)
	ulimit -n "$hard"
}

make_cert() { # DIR DOMAIN
	local dir=$1 domain=$2
	mkdir -p "$dir/certs"
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
		-subj "/CN=$domain" \
		-addext "subjectAltName=DNS:$domain,DNS:conference.$domain" \
		-keyout "$dir/certs/$domain.key" -out "$dir/certs/$domain.crt" \
		>/dev/null 2>&1 || die "openssl failed"
	cat "$dir/certs/$domain.crt" "$dir/certs/$domain.key" >"$dir/certs/$domain.pem"
	chmod 640 "$dir/certs/"*
}

# Opens a TCP connection, sends a c2s stream header and expects stream
# features offering STARTTLS.
probe() { # PORT DOMAIN
	python3 - "$1" "$2" <<'PY' >/dev/null 2>&1
import socket, sys
port, domain = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=3)
s.sendall(('<?xml version="1.0"?><stream:stream to="%s" xmlns="jabber:client" '
           'xmlns:stream="http://etherx.jabber.org/streams" version="1.0">' % domain).encode())
buf = b""
while b"</stream:features>" not in buf:
    d = s.recv(4096)
    if not d:
        break
    buf += d
s.close()
sys.exit(0 if b"starttls" in buf else 1)
PY
}

wait_ready() { # NAME DIR PORT DOMAIN LOGFILE... ; $2/pid must exist
	local name=$1 dir=$2 port=$3 domain=$4; shift 4
	local deadline=$((SECONDS + READY_TIMEOUT))
	while :; do
		if probe "$port" "$domain"; then
			return 0
		fi
		local pid=""
		[ -s "$dir/launcher.pid" ] && pid=$(cat "$dir/launcher.pid")
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			fail_with_logs "$name exited during startup" "$@"
		fi
		if [ $SECONDS -ge $deadline ]; then
			fail_with_logs "$name did not answer a stream header on 127.0.0.1:$port within ${READY_TIMEOUT}s" "$@"
		fi
		sleep 0.5
	done
}

fail_with_logs() {
	local msg=$1; shift
	echo "$PROG: error: $msg" >&2
	local f
	for f in "$@"; do
		[ -f "$f" ] || continue
		echo "----- tail of $f -----" >&2
		tail -n 40 "$f" >&2
	done
	exit 1
}

port_free() { # PORT
	python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# The server runs as its service user: every parent of DIR must let it in.
check_reachable() { # USER DIR
	setpriv --reuid="$1" --regid="$1" --clear-groups test -r "$2/." ||
		die "$2 is not reachable by user $1 (a parent directory is not searchable by others); use a DIR under /tmp or /var/tmp"
}

prepare_dir() { # DIR
	local dir=$1
	if [ -e "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
		die "a server is already running from $dir (pid $(cat "$dir/pid"))"
	fi
	# Only ever wipe a directory this script created (marker file).
	if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ] && [ ! -e "$dir/.refserver" ]; then
		die "$dir exists, is not empty and was not created by $PROG; refusing to wipe it"
	fi
	rm -rf "$dir"
	mkdir -p "$dir"
	touch "$dir/.refserver"
}

# ---------------------------------------------------------------- prosody

start_prosody() { # DIR PORT DOMAIN
	local dir=$1 port=$2 domain=$3
	command -v prosody >/dev/null || die "prosody not installed (run: $PROG install)"
	mkdir -p "$dir/data" "$dir/log"
	make_cert "$dir" "$domain"
	cat >"$dir/prosody.cfg.lua" <<EOF
-- Generated by bench/refservers/refserver.sh for a benchmark against Chorus.
-- Prosody 0.12.3 (Debian bookworm).

-- Everything lives in $dir; /etc/prosody is not used.
data_path = "$dir/data"
pidfile = "$dir/prosody.pid"
certificates = "$dir/certs"
-- refserver.sh starts Prosody as the 'prosody' service user (setpriv);
-- Prosody refuses to run as root.

-- Network: epoll backend (the 0.12 default, made explicit).
network_backend = "epoll"
use_libevent = false
-- Listen backlog 1024 (default 128), like ejabberd's listener here and
-- tokio's default in Chorus.
network_settings = {
	tcp_backlog = 1024;
	-- TCP_NODELAY on client sockets, like ejabberd (nodelay: true) and Chorus
	-- (set_nodelay). With Nagle on, the post-STARTTLS stream features waited
	-- ~40 ms for a delayed ACK.
	nagle = false;
}
-- c2s only on loopback:$port. No other listeners:
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { $port }
c2s_interfaces = { "127.0.0.1" }
c2s_direct_tls_ports = { }    -- no XEP-0368 direct-TLS port
s2s_ports = { }               -- no s2s (mod_s2s is also disabled below)
s2s_direct_tls_ports = { }
component_ports = { }         -- no external components
http_ports = { }              -- no HTTP (no BOSH/websocket/upload modules loaded)
https_ports = { }

-- Logging: warnings and errors only, to a file in $dir (benchmark, not debug).
log = { warn = "$dir/log/prosody.log" }

-- TLS required on c2s, certificate from $dir.
c2s_require_encryption = true
s2s_require_encryption = true
allow_unencrypted_plain_auth = false
ssl = {
	certificate = "$dir/certs/$domain.crt";
	key = "$dir/certs/$domain.key";
}

-- Accounts stored as SCRAM-SHA-1 hashes (ejabberd: auth_password_format scram,
-- auth_scram_hash sha). SASL offers SCRAM-SHA-1 and PLAIN (PLAIN only over TLS).
authentication = "internal_hashed"
-- PBKDF2 iterations for new accounts: 4096 like ejabberd (hard-coded) and
-- Chorus (ITERATIONS_DEFAULT); Prosody's default is 10000, which would make
-- registration and SCRAM logins ~2.5x more expensive.
default_iteration_count = 4096
-- File-based storage (Prosody's default; ejabberd uses its default, Mnesia).
storage = "internal"

-- Max stanza size 256 KiB (ejabberd: max_stanza_size 262144). This is also
-- the 0.12 default.
c2s_stanza_size_limit = 262144

-- In-band registration (XEP-0077) for the load generator, no throttling.
allow_registration = true
-- min_seconds_between_registrations is deliberately NOT set: any value
-- (even 0) switches on a per-IP throttle in mod_register_limits. Loopback is
-- also allowlisted, which bypasses the throttle entirely.
registration_allowlist = { "127.0.0.1", "::1" }

-- No c2s rate limiting: mod_limits is not loaded (see modules_enabled).
-- Should it ever be loaded, this keeps it out of the way:
limits = { c2s = { rate = "100mb/s" }; c2sin = { rate = "100mb/s" } }

-- Message archive (XEP-0313) on for every user by default, never expiring.
default_archive_policy = true
archive_expires_after = "never"
-- The internal store caps each archive at 10000 items by default; lift it so
-- a long benchmark does not silently stop (or start truncating) archiving.
storage_archive_item_limit = 100000000
max_archive_query_results = 250

-- Stream management (XEP-0198): resumable for 300 s (same as ejabberd).
smacks_hibernation_time = 300

modules_enabled = {
	-- core protocol
	"roster";        -- rosters (with versioning)
	"saslauth";      -- SASL (SCRAM-SHA-1, PLAIN over TLS)
	"tls";           -- STARTTLS
	"disco";         -- service discovery
	-- presence, message, iq, offline and c2s are auto-loaded by Prosody
	"carbons";       -- XEP-0280 message carbons
	"ping";          -- XEP-0199
	"smacks";        -- XEP-0198 stream management (built in since 0.12)
	"mam";           -- XEP-0313 archive
	"register";      -- XEP-0077 in-band registration (+ register_limits)
	"vcard";         -- XEP-0054 vcard-temp (ejabberd: mod_vcard)
	"private";       -- XEP-0049 private XML storage (ejabberd: mod_private)
	"blocklist";     -- XEP-0191 blocking (ejabberd: mod_blocking)
	"time";          -- XEP-0202
	"version";       -- XEP-0092
	"uptime";        -- XEP-0012 (ejabberd: mod_last)
}
-- Not loaded: limits (rate limiting), pep/pubsub, bosh/websocket/http*,
-- csi, admin_shell/admin_telnet, announce, motd, welcome.
modules_disabled = {
	"s2s";              -- no federation
	"s2s_auth_certs";
}

VirtualHost "$domain"
	ssl = {
		certificate = "$dir/certs/$domain.crt";
		key = "$dir/certs/$domain.key";
	}

-- MUC with room archives on by default (ejabberd: mod_muc, default_room_options mam: true).
Component "conference.$domain" "muc"
	modules_enabled = { "muc_mam" }
	muc_log_by_default = true
	muc_log_all_rooms = false
	muc_log_expires_after = "never"
	max_history_messages = 20      -- ejabberd mod_muc history_size default is 20 too
	restrict_room_creation = false -- anyone may create rooms (ejabberd: access_create all)
EOF
	chown -R prosody:prosody "$dir"
	chmod 750 "$dir"
	check_reachable prosody "$dir"

	# Validate the config before starting (prints nothing useful on success).
	raise_nofile
	cd "$dir"
	# Run as the package's service user; setpriv execs, so the process is
	# lua5.4 itself and inherits the raised fd limit.
	setsid nohup setpriv --reuid=prosody --regid=prosody --init-groups \
		prosody -F --config "$dir/prosody.cfg.lua" \
		>"$dir/log/console.log" 2>&1 </dev/null &
	echo $! >"$dir/launcher.pid"
	wait_ready prosody "$dir" "$port" "$domain" "$dir/log/console.log" "$dir/log/prosody.log"
	# `prosody` is a Lua script: the process started is lua5.4 itself.
	local pid
	pid=$(pgrep -f "prosody -F --config $dir/prosody.cfg.lua" | head -n1)
	[ -n "$pid" ] || pid=$(cat "$dir/launcher.pid")
	echo "$pid" >"$dir/pid"
	log "prosody ($(readlink "/proc/$pid/exe")) ready on 127.0.0.1:$port, nofile=$(awk '/Max open files/{print $4}' "/proc/$pid/limits")"
	echo "$pid"
}

# ---------------------------------------------------------------- ejabberd

ejabberd_node() { # DIR -> unique short node name derived from DIR
	echo "ejabberd-bench-$(printf '%s' "$1" | md5sum | cut -c1-10)@localhost"
}

ejctl() { # DIR args...   (ejabberdctl bound to our config/node/dist port)
	local dir=$1; shift
	setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME="$dir" \
		ejabberdctl --config-dir "$dir/etc" --config "$dir/etc/ejabberd.yml" \
		--ctl-config "$dir/etc/ejabberdctl.cfg" --logs "$dir/log" \
		--spool "$dir/db" --node "$(cat "$dir/node")" "$@"
}

start_ejabberd() { # DIR PORT DOMAIN
	local dir=$1 port=$2 domain=$3
	command -v ejabberdctl >/dev/null || die "ejabberd not installed (run: $PROG install)"
	local http_port=$((port + 1)) dist_port=$((port + 2))
	port_free "$dist_port" || die "Erlang distribution port 127.0.0.1:$dist_port is in use"
	mkdir -p "$dir/etc" "$dir/db" "$dir/log" "$dir/contrib"
	make_cert "$dir" "$domain"
	local node cookie
	node=$(ejabberd_node "$dir")
	cookie=$(openssl rand -hex 16)
	echo "$node" >"$dir/node"
	printf '%s' "$cookie" >"$dir/.erlang.cookie"
	chmod 400 "$dir/.erlang.cookie"

	# ejabberdctl.cfg is sourced by ejabberdctl (bash).
	cat >"$dir/etc/ejabberdctl.cfg" <<EOF
# Generated by refserver.sh. Sourced by ejabberdctl.
# Unique node and cookie per DIR so several instances can coexist.
ERLANG_NODE=$node
# epmd-less distribution on a fixed loopback port (no epmd on 4369 at all).
ERL_DIST_PORT=$dist_port
INET_DIST_INTERFACE=127.0.0.1
# Kernel poll (epoll), enough Erlang processes and ports for 20000 sessions
# (one c2s process and one port per connection, plus headroom).
POLL=true
ERL_PROCESSES=250000
ERL_MAX_PORTS=65536
ERL_MAX_ETS_TABLES=2800
# The cookie is read from $dir/.erlang.cookie (HOME=$dir), not passed on the
# command line.
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_PID_PATH=$dir/ejabberd.pid
CONTRIB_MODULES_PATH=$dir/contrib
CONTRIB_MODULES_CONF_DIR=$dir/contrib/conf
EJABBERD_BYPASS_WARNINGS=true
EOF

	# ejabberdctl points ERL_INETRC at CONFIG_DIR/inetrc; the VM complains if
	# it is missing.
	echo '{lookup, [file, native]}.' >"$dir/etc/inetrc"

	cat >"$dir/etc/ejabberd.yml" <<EOF
# Generated by bench/refservers/refserver.sh for a benchmark against Chorus.
# ejabberd 23.01 (Debian bookworm). Everything lives in $dir.
hosts:
  - "$domain"

# Warnings and errors only, to $dir/log (benchmark, not debug).
loglevel: warning
log_rotate_count: 0

# Self-signed certificate from $dir.
certfiles:
  - "$dir/certs/$domain.pem"
acme:
  auto: false

listen:
  # c2s only, on loopback:$port, STARTTLS required. No s2s, no HTTP
  # listener ($http_port is reserved for one but none is needed).
  -
    port: $port
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: true
    starttls_required: true
    # 256 KiB, like Prosody's c2s_stanza_size_limit.
    max_stanza_size: 262144
    # No traffic shaping on c2s (default config uses 3000 B/s "normal").
    shaper: none
    access: c2s
    # Listen backlog 1024 like Prosody (network_settings.tcp_backlog) and
    # tokio's default in Chorus; ejabberd's default is 5.
    backlog: 1024

# Accounts stored as SCRAM-SHA-1 hashes (Prosody: internal_hashed).
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
# Offer SCRAM-SHA-1(-PLUS) and PLAIN like Prosody; drop X-OAUTH2.
disable_sasl_mechanisms:
  - "X-OAUTH2"
  - "DIGEST-MD5"

# Storage: ejabberd's default, Mnesia in $dir/db (Prosody: internal files).
default_db: mnesia

# In-band registration without any per-IP timeout (default 600 s between
# registrations from one IP).
registration_timeout: infinity

acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
      - ::1/128

access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
  trusted_network:
    allow: loopback

api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"

# Very high shaper in case anything references it; c2s uses none.
shaper:
  normal: 100000000
  fast: 100000000

shaper_rules:
  c2s_shaper: none
  s2s_shaper: none
  # No per-user session cap (Prosody has none).
  max_user_sessions: infinity
  # Offline queue: effectively unlimited (Prosody has no cap).
  max_user_offline_messages: 1000000

# No s2s: no s2s listener and outgoing s2s refused.
s2s_access: none

modules:
  mod_disco: {}
  # Roster versioning on (Prosody always versions rosters).
  mod_roster:
    versioning: true
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  # XEP-0198, resumable for 300 s (Prosody: smacks_hibernation_time 300).
  mod_stream_mgmt:
    resume_timeout: 300
  mod_carboncopy: {}   # XEP-0280 carbons
  mod_ping: {}
  mod_vcard:
    search: false
  mod_private: {}
  mod_privacy: {}
  mod_blocking: {}
  mod_time: {}
  mod_version:
    show_os: false
  mod_last: {}
  # XEP-0313 archive on for everyone by default, Mnesia, never expires.
  mod_mam:
    db_type: mnesia
    default: always
    clear_archive_on_room_destroy: false
    # Page size: ejabberd hard-codes default 50 / max 250 per MAM query;
    # Prosody is set to the same max (max_archive_query_results = 250).
  # XEP-0077 in-band registration, no IP restriction, no CAPTCHA.
  mod_register:
    access: register
    ip_access: all
    captcha_protected: false
    password_strength: 0
  # MUC with room archives on by default (Prosody: muc_mam).
  mod_muc:
    host: "conference.@HOST@"
    access: all
    access_create: all
    access_persistent: all
    access_mam: all
    history_size: 20
    default_room_options:
      mam: true
# Not loaded: mod_pubsub/PEP, mod_http_*, mod_bosh, mod_proxy65, mod_s2s_*,
# mod_client_state, mod_admin_*, mod_announce, mod_caps, mod_push.
EOF
	chown -R ejabberd:ejabberd "$dir"
	chmod 750 "$dir"
	check_reachable ejabberd "$dir"

	raise_nofile
	local epmd_before=0
	pgrep -x epmd >/dev/null && epmd_before=1
	cd "$dir"
	# Run as the package's service user directly: as root, ejabberdctl would
	# go through `su`, whose pam_limits resets the fd limit to 1024.
	setsid nohup setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
		env HOME="$dir" ejabberdctl --config-dir "$dir/etc" --config "$dir/etc/ejabberd.yml" \
		--ctl-config "$dir/etc/ejabberdctl.cfg" --logs "$dir/log" \
		--spool "$dir/db" --node "$node" foreground \
		>"$dir/log/console.log" 2>&1 </dev/null &
	echo $! >"$dir/launcher.pid"
	local t0=$SECONDS
	wait_ready ejabberd "$dir" "$port" "$domain" "$dir/log/console.log" "$dir/log/ejabberd.log" "$dir/log/error.log"
	local pid
	pid=$(pgrep -f "beam\.smp.* -sname $node " | head -n1 || true)
	[ -n "$pid" ] || fail_with_logs "ejabberd answers but no beam.smp for node $node found" "$dir/log/console.log"
	echo "$pid" >"$dir/pid"
	if [ $epmd_before = 0 ] && pgrep -x epmd >/dev/null; then
		pgrep -x epmd >"$dir/epmd.pid"   # we started it; stop will kill it
	fi
	log "ejabberd (beam.smp, node $node) ready on 127.0.0.1:$port after $((SECONDS - t0))s, dist on 127.0.0.1:$dist_port, nofile=$(awk '/Max open files/{print $4}' "/proc/$pid/limits")"
	echo "$pid"
}

# ---------------------------------------------------------------- stop

wait_gone() { # PID TIMEOUT
	local pid=$1 deadline=$((SECONDS + $2))
	while kill -0 "$pid" 2>/dev/null; do
		[ $SECONDS -ge $deadline ] && return 1
		sleep 0.2
	done
	return 0
}

cmd_stop() { # NAME DIR
	local name=$1 dir=$2
	[ -s "$dir/pid" ] || die "no $dir/pid"
	local pid
	pid=$(cat "$dir/pid")
	if ! kill -0 "$pid" 2>/dev/null; then
		log "$name (pid $pid) is not running"
	else
		case $name in
			prosody) kill -TERM "$pid" ;;
			ejabberd) ejctl "$dir" stop >/dev/null 2>&1 || kill -TERM "$pid" ;;
		esac
		if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
			log "$name (pid $pid) did not stop within ${STOP_TIMEOUT}s, killing"
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" 5 || true
		fi
		log "$name (pid $pid) stopped"
	fi
	# The launcher (su / nohup wrapper) exits with the VM; make sure.
	if [ -s "$dir/launcher.pid" ]; then
		local lp
		lp=$(cat "$dir/launcher.pid")
		kill -0 "$lp" 2>/dev/null && { wait_gone "$lp" 5 || kill -KILL "$lp" 2>/dev/null || true; }
	fi
	if [ -s "$dir/epmd.pid" ]; then
		local ep
		ep=$(cat "$dir/epmd.pid")
		if kill -0 "$ep" 2>/dev/null && ! epmd -names 2>/dev/null | grep -q '^name '; then
			kill "$ep" 2>/dev/null || true
			log "stopped epmd (pid $ep)"
		fi
		rm -f "$dir/epmd.pid"
	fi
	rm -f "$dir/pid"
}

# ---------------------------------------------------------------- main

[ $# -ge 1 ] || usage
case $1 in
	install)
		cmd_install
		;;
	start)
		[ $# -eq 5 ] || usage
		name=$2; dir=$3; port=$4; domain=$5
		case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac
		[[ $port =~ ^[0-9]+$ ]] || die "bad port $port"
		[ "$(id -u)" = 0 ] || die "start must run as root (servers drop to their service users)"
		port_free "$port" || die "port 127.0.0.1:$port is in use"
		case $name in
			prosody) prepare_dir "$dir"; start_prosody "$dir" "$port" "$domain" ;;
			ejabberd) prepare_dir "$dir"; start_ejabberd "$dir" "$port" "$domain" ;;
			*) usage ;;
		esac
		;;
	stop)
		[ $# -eq 3 ] || usage
		name=$2; dir=$3
		case $dir in /*) ;; *) dir=$(pwd)/$dir ;; esac
		case $name in prosody|ejabberd) cmd_stop "$name" "$dir" ;; *) usage ;; esac
		;;
	*)
		usage
		;;
esac
