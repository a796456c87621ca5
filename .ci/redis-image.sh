#!/usr/bin/env bash
# Build a local Redis image with no registry: Debian's redis-server plus the libraries `ldd`
# lists, packed into a rootfs tar and `docker import`ed. Idempotent: skips an existing image.
# Usage: .ci/redis-image.sh [image]   (default devinit-test/redis:7)
set -euo pipefail
IMAGE="${1:-devinit-test/redis:7}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE already exists"
  exit 0
fi
BIN="$(command -v redis-server)" || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
BIN="$(readlink -f "$BIN")"

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
chmod 755 "$ROOT"  # mktemp makes it 0700: the image root must be traversable by the redis user
mkdir -p "$ROOT/usr/bin" "$ROOT/data" "$ROOT/etc" "$ROOT/tmp"
cp "$BIN" "$ROOT/usr/bin/redis-server"
# Every shared library the binary loads, and the dynamic loader, at their own paths.
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
# A non-root user for Redis; /data belongs to it so a fresh named volume is writable.
printf 'root:x:0:0:root:/root:/sbin/nologin\nredis:x:999:999:redis:/data:/sbin/nologin\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nredis:x:999:\n' >"$ROOT/etc/group"
chmod 1777 "$ROOT/tmp"

tar --numeric-owner --owner=0 --group=0 -C "$ROOT" --exclude=./data -cf "$ROOT.tar" .
tar --numeric-owner --owner=999 --group=999 -C "$ROOT" -rf "$ROOT.tar" ./data
docker import \
  --change 'CMD ["redis-server"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'USER 999:999' \
  --change 'WORKDIR /data' \
  --change 'VOLUME /data' \
  --change 'EXPOSE 6379' \
  "$ROOT.tar" "$IMAGE" >/dev/null
rm -f "$ROOT.tar"
echo "built $IMAGE"
