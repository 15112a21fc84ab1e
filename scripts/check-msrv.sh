#!/usr/bin/env bash
# Checks that the workspace's `rust-version` is true for its lock file: no package that a build
# or test of the workspace on this platform resolves (dependencies, build- and dev-dependencies)
# declares a higher `rust-version`. Prints the packages that need the most.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
platform="$(rustc -vV | sed -n 's/^host: //p')"
cargo metadata --format-version 1 --locked --filter-platform "$platform" | python3 -c '
import json, sys
m = json.load(sys.stdin)
ver = lambda s: tuple(int(x) for x in (s or "0").split("."))
members = set(m["workspace_members"])
resolved = {n["id"] for n in m["resolve"]["nodes"]}
declared = {ver(p.get("rust_version")) for p in m["packages"] if p["id"] in members}
if len(declared) != 1:
    sys.exit(f"check-msrv: members declare different rust-versions: {sorted(declared)}")
msrv = declared.pop()
need = sorted(((ver(p.get("rust_version")), p["name"], p["version"]) for p in m["packages"]
               if p["id"] in resolved and p["id"] not in members), reverse=True)
top = need[0][0]
show = lambda v: ".".join(map(str, v))
print(f"check-msrv: workspace rust-version {show(msrv)}; dependencies need up to {show(top)}:",
      ", ".join(f"{n} {v} ({show(r)})" for r, n, v in need[:3]))
if top > msrv:
    sys.exit(f"check-msrv: FAIL: raise rust-version to {show(top)} or pin older dependencies")
'
