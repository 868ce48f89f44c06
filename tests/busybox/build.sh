#!/usr/bin/env bash
# Builds a static busybox WITH adduser/addgroup/deluser/delgroup/chpasswd (Debian's busybox
# packages leave those out) from Debian's own source package, for the busybox-only accounts
# test. The source comes through a private apt sources list with a deb-src line for the
# machine's own mirror; the result is cached, so later runs cost nothing.
# Prints the path of the built binary.
set -euo pipefail
CACHE=${GCE_GUEST_TEST_CACHE:-/var/cache/gce-guest-tests}
OUT="$CACHE/busybox-full/busybox"
if [ -x "$OUT" ] && "$OUT" adduser --help >/dev/null 2>&1; then
  echo "$OUT"
  exit 0
fi
mkdir -p "$CACHE/apt/lists/partial" "$CACHE/src" "$CACHE/busybox-full"
command -v dpkg-source >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null; }

# The machine's own mirror and suite, from its deb822 or one-line sources.
uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | grep -v security | head -1 | awk '{print $2}')
suite=$(grep -hsE '^Suites:' /etc/apt/sources.list.d/*.sources | head -1 | awk '{print $2}')
if [ -z "$uri" ]; then
  read -r _ uri suite _ < <(grep -hsE '^deb ' /etc/apt/sources.list | grep -v security | head -1)
fi
: "${uri:?no Debian mirror found in the apt sources}" "${suite:=bookworm}"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main" > "$CACHE/apt/sources.list"
APT=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
     -o "Dir::State::Lists=$CACHE/apt/lists" -o "APT::Sandbox::User=root")
apt-get "${APT[@]}" update -qq >&2
cd "$CACHE/src"
rm -rf busybox-*/
apt-get "${APT[@]}" source -qq busybox >&2
cd busybox-*/

make defconfig >/dev/null
set_opt() { # set_opt NAME y|n
  sed -i -e "/^CONFIG_$1=/d" -e "/^# CONFIG_$1 is not set/d" .config
  if [ "$2" = y ]; then echo "CONFIG_$1=y" >> .config; else echo "# CONFIG_$1 is not set" >> .config; fi
}
set_opt STATIC y
for o in ADDUSER ADDGROUP DELUSER DELGROUP CHPASSWD FEATURE_SHADOWPASSWDS USE_BB_SHADOW \
         USE_BB_PWD_GRP FEATURE_ADDUSER_TO_GROUP FEATURE_DEL_USER_FROM_GROUP; do
  set_opt "$o" y
done
# Options that do not build statically or are not wanted here.
for o in TC FEATURE_TC_INGRESS; do set_opt "$o" n; done
(yes '' || true) | make oldconfig >/dev/null 2>&1
make -j"$(nproc)" busybox >/dev/null 2>"$CACHE/busybox-full/build.log" || { tail -30 "$CACHE/busybox-full/build.log" >&2; exit 1; }
install -m 0755 busybox "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
