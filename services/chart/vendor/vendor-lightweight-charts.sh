#!/usr/bin/env bash
# Re-vendors TradingView Lightweight Charts for the chart page from the npm
# registry: `npm pack` of the pinned version, checked against the pinned
# sha256 of the tarball, then its standalone production ES module build and
# its LICENSE copied next to this script. The page is served from the binary
# (include_bytes!), so nothing is fetched at run time.
#
# To move to another version: set VERSION, run `$0 --print-sha256` to see
# the new tarball's sha256, read the upstream changelog, set SHA256 to it,
# run again, and update lightweight-charts/README.md (version, sha256s) and
# the NOTICE year.
set -euo pipefail

VERSION=5.3.0
SHA256=7d9e9ab2b1a91db18a916fd5d5e17d7dd19a7dc7da022fd0d23f06bdd92ecc2a

here="$(cd "$(dirname "$0")" && pwd)/lightweight-charts"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "lightweight-charts@$VERSION" >/dev/null)
tarball="$work/lightweight-charts-$VERSION.tgz"
actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [ "${1:-}" = "--print-sha256" ]; then
  echo "lightweight-charts-$VERSION.tgz sha256 $actual"
  exit 0
fi
if [ "$actual" != "$SHA256" ]; then
  echo "vendor-lightweight-charts.sh: lightweight-charts-$VERSION.tgz has sha256 $actual, expected $SHA256" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
mkdir -p "$here"
cp "$work/package/dist/lightweight-charts.standalone.production.mjs" "$here/"
cp "$work/package/LICENSE" "$here/LICENSE"
grep -q "Lightweight Charts™ v$VERSION" "$here/lightweight-charts.standalone.production.mjs" || {
  echo "vendor-lightweight-charts.sh: the build's banner does not name v$VERSION" >&2
  exit 1
}
echo "vendored lightweight-charts $VERSION (tarball sha256 $actual) into $here"
echo "build sha256: $(sha256sum "$here/lightweight-charts.standalone.production.mjs" | cut -d' ' -f1)"
