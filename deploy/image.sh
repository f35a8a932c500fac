#!/usr/bin/env bash
# Builds the image `baton:local` from this checkout's own binaries, with
# nothing pulled from a registry: baton-node and batonctl plus the shared
# libraries they link (glibc), imported as a root filesystem.
#
#   deploy/image.sh            release binaries
#   deploy/image.sh --debug    the debug binaries (what the tests build)
#
# Users with registry access build deploy/Dockerfile instead; both images
# have the same layout (binaries in /usr/local/bin, data in /var/lib/baton,
# entrypoint baton-node).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
[ "${1:-}" = --debug ] && profile=debug
tag="${BATON_IMAGE:-baton:local}"
if ! docker info >/dev/null 2>&1; then
  echo "deploy/image.sh: no Docker engine answers (docker info failed)" >&2
  exit 1
fi
if [ "$profile" = release ]; then
  cargo build --release -p baton-node -p baton-client --bins
else
  cargo build -p baton-node -p baton-client --bins
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -d "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/var/lib/baton"
chmod 1777 "$root/tmp"
for bin in baton-node batonctl; do
  install "target/$profile/$bin" "$root/usr/local/bin/$bin"
  # The libraries the binary links, at the paths its loader looks for them.
  for lib in $(ldd "target/$profile/$bin" | grep -o '/[^ ]*'); do
    install -D "$(readlink -f "$lib")" "$root$lib"
  done
done
echo 'baton:x:10001:10001:baton:/var/lib/baton:/nonexistent' >"$root/etc/passwd"
echo 'baton:x:10001:' >"$root/etc/group"
# Named volumes start with the ownership of the image's directory.
chown 10001:10001 "$root/var/lib/baton"
tar -C "$root" -c . | docker import \
  --change 'ENTRYPOINT ["/usr/local/bin/baton-node"]' \
  --change 'ENV BATON_DATA_DIR=/var/lib/baton' \
  --change 'WORKDIR /var/lib/baton' \
  --change 'USER 10001' \
  --change 'EXPOSE 7400 7480' \
  - "$tag" >/dev/null
echo "built $tag from target/$profile (baton-node, batonctl)"
