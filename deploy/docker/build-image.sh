#!/usr/bin/env bash
# Builds the `chorus` container image without pulling anything: a root
# filesystem with the binary, the shared libraries `ldd` says it links
# (Debian's librocksdb and its compression libraries, glibc, libstdc++),
# the dynamic loader, and /etc/passwd with the unprivileged user 10001.
#
#   bash deploy/docker/build-image.sh [BINARY] [TAG]
#
# BINARY defaults to target/release/chorus (built if missing); TAG to
# chorus:latest.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/chorus}"
tag="${2:-chorus:latest}"
if [ ! -x "$bin" ]; then
    if [ "$bin" = "target/release/chorus" ]; then
        cargo build --release -p chorus-server
    else
        echo "no executable at $bin" >&2
        exit 1
    fi
fi
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
install -D -m 0755 "$bin" "$root/usr/local/bin/chorus"
# Every library the binary needs, at the path the loader looks for it.
ldd "$bin" | awk '/=> \// {print $3} /^[[:space:]]*\// {print $1}' | sort -u | while read -r lib; do
    cp -L --parents "$lib" "$root"
done
mkdir -p "$root/etc/chorus" "$ctx/data" "$ctx/tmp"
chmod 1777 "$ctx/tmp"
printf 'root:x:0:0:root:/:/sbin/nologin\nchorus:x:10001:10001:chorus:/data:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nchorus:x:10001:\n' >"$root/etc/group"
cp deploy/docker/Dockerfile "$ctx/Dockerfile"
docker build --quiet -t "$tag" "$ctx" >/dev/null
echo "built $tag from $bin ($(docker image inspect -f '{{.Size}}' "$tag") bytes)"
