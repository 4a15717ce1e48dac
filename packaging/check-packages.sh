#!/usr/bin/env bash
# Checks the built .deb and .rpm: contents, modes, conffile markings, scripts; installs
# the .deb on this machine (no running systemd needed), checks the installed files, the
# unit (systemd-analyze verify, security exposure ≤ 2.0), an upgrade keeping the admin's
# edits, removal keeping config and state, and purge removing them.
# Needs root, dpkg, rpm, systemd-analyze. Leaves the machine as it found it.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "✗ $*" >&2; exit 1; }
ok() { echo "✓ $*"; }

deb=$(ls target/debian/fb-openchannel_*.deb | head -n1)
rpm=$(ls target/generate-rpm/fb-openchannel-*.rpm | head -n1)
[ -f "$deb" ] || fail "no .deb: run packaging/build-packages.sh"
[ -f "$rpm" ] || fail "no .rpm: run packaging/build-packages.sh"

# --- .deb contents -------------------------------------------------------------------
listing=$(dpkg-deb -c "$deb")
expect_deb() { # mode path
    grep -qE "^$1 (root/root|0/0) .* \./$2\$" <<<"$listing" || { echo "$listing"; fail ".deb: expected $1 $2"; }
}
expect_deb '-rwxr-xr-x' 'usr/bin/fb-openchannel'
expect_deb '-rw-r-----' 'etc/fb-openchannel/config.toml'
expect_deb '-rw-r--r--' 'usr/lib/systemd/system/fb-openchannel.service'
expect_deb '-rw-r--r--' 'usr/lib/sysusers.d/fb-openchannel.conf'
expect_deb '-rw-r--r--' 'usr/share/man/man1/fb-openchannel.1.gz'
expect_deb '-rw-r--r--' 'usr/share/bash-completion/completions/fb-openchannel'
expect_deb '-rw-r--r--' 'usr/share/zsh/vendor-completions/_fb-openchannel'
expect_deb '-rw-r--r--' 'usr/share/fish/vendor_completions.d/fb-openchannel.fish'
ok ".deb contents and modes"
info=$(dpkg-deb -I "$deb")
dpkg-deb -f "$deb" Depends | grep -q libc6 && dpkg-deb -f "$deb" Depends | grep -q procps || fail ".deb: dependencies: $(dpkg-deb -f "$deb" Depends)"
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = "/etc/fb-openchannel/config.toml" ] || fail ".deb: config is not the only conffile"
grep -q postinst <<<"$info" && grep -q postrm <<<"$info" || fail ".deb: maintainer scripts missing"
ok ".deb conffiles, dependencies, maintainer scripts"

# --- .rpm contents -------------------------------------------------------------------
dump=$(rpm -qlp --dump "$rpm" 2>/dev/null)
expect_rpm() { # path mode owner group isconfig
    awk -v p="$1" -v m="$2" -v o="$3" -v g="$4" -v c="$5" \
        '$1 == p && $5 == m && $6 == o && $7 == g && $8 == c { found = 1 } END { exit !found }' <<<"$dump" \
        || { echo "$dump"; fail ".rpm: expected $*"; }
}
expect_rpm /usr/bin/fb-openchannel 0100755 root root 0
expect_rpm /etc/fb-openchannel/config.toml 0100640 root fb-openchannel 1
expect_rpm /usr/lib/systemd/system/fb-openchannel.service 0100644 root root 0
expect_rpm /usr/lib/sysusers.d/fb-openchannel.conf 0100644 root root 0
expect_rpm /usr/share/man/man1/fb-openchannel.1.gz 0100644 root root 0
[ "$(rpm -qpc "$rpm" 2>/dev/null)" = "/etc/fb-openchannel/config.toml" ] || fail ".rpm: config is not the only %config file"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" 2>/dev/null | grep -q '^cn /etc/fb-openchannel/config.toml' \
    || fail ".rpm: config is not %config(noreplace)"
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
grep -q useradd <<<"$scripts" && grep -q try-restart <<<"$scripts" || fail ".rpm: scriptlets missing"
ok ".rpm contents, modes, %config(noreplace), scriptlets"
rpmroot=$(mktemp -d)
rpm -i --root "$rpmroot" --nodeps --noscripts "$rpm" 2>/dev/null
[ -x "$rpmroot/usr/bin/fb-openchannel" ] || fail ".rpm: does not install"
rm -rf "$rpmroot"
ok ".rpm installs into a scratch root"

# --- install the .deb on this machine -------------------------------------------------
if dpkg -s fb-openchannel >/dev/null 2>&1; then dpkg --purge fb-openchannel >/dev/null; fi
dpkg -i "$deb" >/dev/null
getent passwd fb-openchannel >/dev/null || fail "install: no fb-openchannel user"
[ "$(stat -c '%U:%G %a' /etc/fb-openchannel/config.toml)" = "root:fb-openchannel 640" ] \
    || fail "install: config is $(stat -c '%U:%G %a' /etc/fb-openchannel/config.toml)"
[ "$(systemctl is-enabled fb-openchannel 2>/dev/null || true)" = "disabled" ] || fail "install: the unit must not be enabled by surprise"
ok "installed: user, config root:fb-openchannel 0640, unit not enabled"

set +e
out=$(/usr/bin/fb-openchannel check-config 2>&1); rc=$?
set -e
[ $rc -eq 1 ] || fail "check-config on the example config should fail on its placeholders (rc $rc)"
keys=$(grep -oE '^/etc/fb-openchannel/config.toml:[0-9]+: [a-z_.]+' <<<"$out" | awk '{print $2}' | sort | tr '\n' ' ')
[ "$keys" = "facebook.app_secret facebook.verify_token motion.api_key page.access_token page.reply_token public.tls_cert public.tls_key " ] \
    || { echo "$out"; fail "check-config named other problems: $keys"; }
ok "installed check-config fails only on the placeholders and the certificate it names"

systemd-analyze verify /usr/lib/systemd/system/fb-openchannel.service || fail "systemd-analyze verify"
ok "systemd-analyze verify"
exposure=$(systemd-analyze security --offline=true /usr/lib/systemd/system/fb-openchannel.service 2>/dev/null | tail -n1)
echo "  $exposure"
systemd-analyze security --offline=true --threshold=20 /usr/lib/systemd/system/fb-openchannel.service >/dev/null \
    || fail "systemd-analyze security: exposure above 2.0"
ok "systemd-analyze security: exposure ≤ 2.0"

# An upgrade (here: the same package again) keeps the admin's edits.
echo "# edited by the admin" >> /etc/fb-openchannel/config.toml
dpkg -i "$deb" >/dev/null
grep -q "edited by the admin" /etc/fb-openchannel/config.toml || fail "upgrade overwrote the config"
ok "upgrade keeps the admin's config"

mkdir -p /var/lib/fb-openchannel && touch /var/lib/fb-openchannel/state.db
dpkg -r fb-openchannel >/dev/null
[ -f /etc/fb-openchannel/config.toml ] && [ -f /var/lib/fb-openchannel/state.db ] || fail "remove must keep config and state"
ok "remove keeps config and state"
dpkg --purge fb-openchannel >/dev/null
[ ! -e /etc/fb-openchannel ] && [ ! -e /var/lib/fb-openchannel ] || fail "purge must remove config and state"
ok "purge removes config and state"
userdel fb-openchannel 2>/dev/null || true
groupdel fb-openchannel 2>/dev/null || true

if command -v lintian >/dev/null 2>&1; then
    echo "lintian (advisory):"
    lintian --suppress-tags no-manual-page "$deb" 2>&1 | sed 's/^/  /' || true
fi
echo "packages OK"
