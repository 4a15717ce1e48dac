#!/usr/bin/env bash
# Runs the packaged unit under a real systemd: a minimal Debian root (debootstrap, cached
# between runs on the same machine), booted with systemd-nspawn, the .deb installed in
# it. Checks that the service
#   - is `active` as soon as `systemctl start` returns, and answers the webhook handshake
#     on port 443 at once (READY comes after the listeners are bound);
#   - runs as the unprivileged fb-openchannel user with only CAP_NET_BIND_SERVICE;
#   - reloads on `systemctl reload`, and logs to the journal with PAGE_ID fields;
#   - is restarted by the watchdog when frozen with SIGSTOP;
#   - logs a burst of 10,000 deliveries in a few hundred lines, keeping a WARN sent
#     in the middle of it (packaging/nspawn-burst.py plays Facebook and Motion).
# Skips, saying why, only where this machine cannot boot a container.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "SKIPPED systemd-nspawn test: $*"; exit 0; }
# (`cmd | grep -q` is not used: under pipefail, grep -q exits at the first match and a
# writer with more to say dies of SIGPIPE, failing the pipeline on a match.)
fail() { echo "✗ $*" >&2; [ -n "${CT_PID:-}" ] && in_ct journalctl -u fb-openchannel --no-pager -n 50 >&2 || true; exit 1; }
ok() { echo "✓ $*"; }

[ "$(id -u)" = 0 ] || skip "needs root"
deb=$(ls target/debian/fb-openchannel_*.deb 2>/dev/null | head -n1)
[ -f "$deb" ] || fail "no .deb: run packaging/build-packages.sh first"
if ! command -v systemd-nspawn >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get install -y -q debootstrap systemd-container >/dev/null || skip "cannot install debootstrap and systemd-container"
fi
command -v curl >/dev/null || apt-get install -y -q curl >/dev/null
ss -ltn 2>/dev/null | grep ':443 ' >/dev/null && skip "port 443 is taken on this machine"

# The Debian root, built once per machine from the mirror apt already uses.
cache=/var/cache/fb-openchannel-ci
root=$cache/bookworm
if [ ! -x "$root/usr/lib/systemd/systemd" ] || [ ! -x "$root/usr/bin/curl" ] || [ ! -x "$root/bin/kill" ]; then
    mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)
    rm -rf "$root" && mkdir -p "$cache"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,ca-certificates,openssl,procps \
        bookworm "$root" ${mirror:+"$mirror"} >/dev/null || skip "debootstrap failed (no access to the Debian mirror?)"
fi
ok "Debian root ready"

# What goes into the container: the package, a config, a throwaway certificate.
work=$(mktemp -d)
trap 'stop_ct; rm -rf "$work"' EXIT
cp "$deb" "$work/fb-openchannel.deb"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -keyout "$work/privkey.pem" -out "$work/fullchain.pem" 2>/dev/null
cat > "$work/config.toml" <<'TOML'
[public]
listen = "127.0.0.1:443"
[local]
listen = "127.0.0.1:18089"
[facebook]
app_secret = "nspawn-app-secret"
verify_token = "nspawn-verify-token"
graph_url = "http://127.0.0.1:9"
[motion]
api_key = "nspawn-api-key"
[delivery]
retry_initial = "1s"
[[page]]
id = "1234567890"
access_token = "nspawn-page-token"
receive_url = "http://127.0.0.1:9/api/openchannel/accounts/1/notify"
reply_token = "nspawn-reply-token"
TOML

CT_PID=
in_ct() { nsenter -t "$CT_PID" -a "$@"; }
stop_ct() {
    if [ -n "${CT_PID:-}" ]; then
        in_ct systemctl poweroff >/dev/null 2>&1 || true
        wait "$NSPAWN_PID" 2>/dev/null || true
        CT_PID=
    fi
}

systemd-nspawn -D "$root" -x -b --register=no --keep-unit --console=passive -M fbo-ci \
    --bind-ro="$work:/mnt/fbo" >"$work/nspawn.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 1 300); do
    CT_PID=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
    if [ -n "$CT_PID" ]; then
        state=$(in_ct systemctl is-system-running 2>/dev/null || true)
        case "$state" in running|degraded) break ;; esac
    fi
    kill -0 "$NSPAWN_PID" 2>/dev/null || { cat "$work/nspawn.log"; CT_PID=; skip "systemd-nspawn could not boot a container here"; }
    sleep 0.1
done
[ -n "$CT_PID" ] || skip "the container did not boot in 30 s"
ok "container booted (systemd $(in_ct systemctl --version | head -n1 | awk '{print $2}'))"

in_ct dpkg -i /mnt/fbo/fb-openchannel.deb >/dev/null || fail "dpkg -i failed (dependencies missing from the root?)"
in_ct install -m 0640 -o root -g fb-openchannel /mnt/fbo/config.toml /etc/fb-openchannel/config.toml
in_ct install -m 0640 -o root -g fb-openchannel /mnt/fbo/fullchain.pem /mnt/fbo/privkey.pem /etc/fb-openchannel/tls/
# A short watchdog for the freeze test below (the shipped unit says 30 s).
in_ct mkdir -p /etc/systemd/system/fb-openchannel.service.d
printf '[Service]\nWatchdogSec=3s\nRestartSec=1s\n' | in_ct tee /etc/systemd/system/fb-openchannel.service.d/ci.conf >/dev/null
in_ct systemctl daemon-reload
[ "$(in_ct systemctl is-enabled fb-openchannel || true)" = disabled ] || fail "the package enabled the unit by itself"

handshake() {
    curl -sk --max-time 5 "https://127.0.0.1:443/webhook?hub.mode=subscribe&hub.verify_token=nspawn-verify-token&hub.challenge=$1"
}
in_ct systemctl start fb-openchannel || fail "systemctl start failed"
[ "$(in_ct systemctl is-active fb-openchannel)" = active ] || fail "not active after start returned"
[ "$(handshake 4711)" = 4711 ] || fail "no handshake answer right after start (READY before the listener?)"
ok "active only after READY; serves the handshake on 443 at once"

pid=$(in_ct systemctl show -p MainPID --value fb-openchannel)
user=$(in_ct ps -o user= -p "$pid" 2>/dev/null || in_ct stat -c %U "/proc/$pid")
[ "$user" = fb-openchannel ] || fail "runs as $user"
capeff=$(in_ct awk '/^CapEff/ {print $2}' "/proc/$pid/status")
[ "$capeff" = 0000000000000400 ] || fail "effective capabilities $capeff (want only CAP_NET_BIND_SERVICE)"
ok "runs as fb-openchannel with only CAP_NET_BIND_SERVICE"

# A signed webhook: its delivery fails (no Motion here) and is logged with PAGE_ID.
body='{"object":"page","entry":[{"id":"1234567890","time":1,"messaging":[{"sender":{"id":"42"},"recipient":{"id":"1234567890"},"timestamp":1,"message":{"mid":"m.ct","text":"hi"}}]}]}'
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac nspawn-app-secret | awk '{print $NF}')
code=$(curl -sk -o /dev/null -w '%{http_code}' -H "x-hub-signature-256: sha256=$sig" -d "$body" https://127.0.0.1:443/webhook)
[ "$code" = 200 ] || fail "signed webhook answered $code"
for _ in $(seq 1 100); do
    in_ct journalctl -u fb-openchannel PAGE_ID=1234567890 --no-pager -o cat 2>/dev/null | grep "delivery to Motion failed" >/dev/null && break
    sleep 0.1
done
in_ct journalctl -u fb-openchannel PAGE_ID=1234567890 --no-pager -o cat | grep "delivery to Motion failed" >/dev/null \
    || fail "journalctl PAGE_ID=… finds no delivery line"
in_ct journalctl -u fb-openchannel -p warning --no-pager -o cat | grep "delivery to Motion failed" >/dev/null \
    || fail "the retry warning is not logged at priority warning"
ok "journal: PAGE_ID field and priorities"

in_ct systemctl reload fb-openchannel || fail "systemctl reload failed"
for _ in $(seq 1 50); do
    in_ct journalctl -u fb-openchannel --no-pager -o cat | grep "config reloaded" >/dev/null && break
    sleep 0.1
done
in_ct journalctl -u fb-openchannel --no-pager -o cat | grep "config reloaded" >/dev/null || fail "no reload in the journal"
[ "$(handshake 4712)" = 4712 ] || fail "no handshake after reload"
ok "systemctl reload re-reads the config, still serving"

in_ct systemctl kill -s SIGSTOP fb-openchannel
for _ in $(seq 1 150); do
    restarts=$(in_ct systemctl show -p NRestarts --value fb-openchannel)
    [ "${restarts:-0}" -ge 1 ] && [ "$(in_ct systemctl is-active fb-openchannel)" = active ] && break
    sleep 0.2
done
[ "${restarts:-0}" -ge 1 ] || fail "the watchdog did not restart the frozen daemon"
in_ct journalctl -u fb-openchannel --no-pager | grep -i watchdog >/dev/null || fail "no watchdog timeout in the journal"
[ "$(handshake 4713)" = 4713 ] || fail "no handshake after the watchdog restart"
ok "frozen with SIGSTOP → watchdog timeout → restarted"

# A burst of 10,000 deliveries with a WARN in the middle: per-item lines are summarised,
# and the warning reaches the journal (journald drops nothing of ours).
command -v python3 >/dev/null || apt-get install -y -q python3 >/dev/null
in_ct sed -i -e 's|^receive_url = .*|receive_url = "http://127.0.0.1:18090/api/openchannel/accounts/1/notify"|' \
    -e 's|^graph_url = .*|graph_url = "http://127.0.0.1:18090"|' /etc/fb-openchannel/config.toml
in_ct systemctl restart fb-openchannel || fail "restart with the burst config failed"
since=$(in_ct date '+%Y-%m-%d %H:%M:%S')
python3 packaging/nspawn-burst.py 18090 https://127.0.0.1:443/webhook nspawn-app-secret 1234567890 10000 \
    || fail "the burst did not reach Motion"
for _ in $(seq 1 150); do
    in_ct journalctl -u fb-openchannel --since "$since" --no-pager -o cat | grep "more items delivered" >/dev/null && break
    sleep 0.2
done
journal=$(in_ct journalctl -u fb-openchannel --since "$since" --no-pager -o cat)
lines=$(printf '%s\n' "$journal" | wc -l)
grep -q "more items delivered" <<<"$journal" || fail "no summary of the delivered items"
in_ct journalctl -u fb-openchannel --since "$since" -p warning --no-pager -o cat | grep "webhook refused with 403" >/dev/null \
    || fail "the warning during the burst did not reach the journal"
in_ct journalctl --since "$since" --no-pager -o cat | grep "Suppressed .* messages from fb-openchannel" >/dev/null \
    && fail "journald suppressed lines of the daemon"
[ "$lines" -lt 1000 ] || fail "$lines journal lines for 10,000 deliveries"
ok "10,000 deliveries: $lines journal lines, the WARN in the middle kept, nothing suppressed by journald"

exposure=$(in_ct systemd-analyze security fb-openchannel --no-pager 2>/dev/null | tail -n1 || true)
echo "  inside the container: $exposure"
echo "systemd-nspawn test OK"
