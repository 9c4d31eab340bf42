#!/usr/bin/env python3
"""Checks the library's dependency tree against the RustSec advisories kept in audit/advisory-db.

The tree is what `cargo tree -p cloakroom --all-features -e normal,build` lists: every crate the
library can pull in, with its exact version. An advisory applies when the crate's version is
neither patched nor unaffected by it (a withdrawn advisory never applies). A vulnerability
fails the check; an informational one (unmaintained, unsound, notice) is only reported.

Usage:
  scripts/audit.py                 the check (exit 1 when a vulnerability applies)
  scripts/audit.py --self-check    shows the check can fail: time 0.3.45 falls under
                                   RUSTSEC-2026-0009 and 0.3.55 does not

Python 3.11 or later (tomllib), standard library only. No network: see audit/README.md.
"""

import os
import re
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATABASE = os.path.join(ROOT, "audit", "advisory-db", "crates")

# Vulnerabilities that cannot reach the library, each with why. Only the exact crate and
# advisory are accepted: another advisory for the same crate still fails the check.
ACCEPTED = {
    ("rsa", "RUSTSEC-2023-0071"):
        "sqlx's MySQL driver (feature `mysql`) only encrypts the password with the server's "
        "public key (caching_sha2_password and sha256_password without TLS); the Marvin attack "
        "recovers a private key from the timing of decryptions or signatures, which it never makes",
}


def parse_version(text):
    """(major, minor, patch, is_release) from `1.2.3` or `1.2.3-beta.1`; build metadata dropped."""
    core, _, pre = text.split("+")[0].partition("-")
    parts = [int(p) for p in core.split(".")]
    while len(parts) < 3:
        parts.append(0)
    # A pre-release sorts before its release.
    return (parts[0], parts[1], parts[2], 0 if pre else 1)


def comparator_bounds(comparator):
    """One comparator (`>= 0.3.47`, `^0.1`, `~1.2`, `= 1.0.0`, `1.2`) as (low, low_inclusive,
    high) where a version v matches when low <= v (or <) and v < high; None for no bound."""
    m = re.fullmatch(r"\s*(>=|<=|>|<|=|\^|~)?\s*(\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?)\s*", comparator)
    if not m:
        raise ValueError(f"cannot read the version requirement {comparator!r}")
    op, text = m.group(1) or "^", m.group(2)
    given = len(text.split("-")[0].split("."))
    version = parse_version(text)
    major, minor, patch = version[:3]
    if op == ">=":
        return version, True, None
    if op == ">":
        return version, False, None
    if op == "<":
        return None, True, version
    if op == "<=":
        return None, True, (major, minor, patch + 1, 0)
    if op == "=" and given == 3:
        return version, True, (major, minor, patch + 1, 0)
    if op == "~" or op == "=":
        high = (major + 1, 0, 0, 0) if given == 1 else (major, minor + 1, 0, 0)
        return version, True, high
    # Caret: the leftmost non-zero part given may not change.
    if major > 0 or given == 1:
        high = (major + 1, 0, 0, 0)
    elif minor > 0 or given == 2:
        high = (0, minor + 1, 0, 0)
    else:
        high = (0, 0, patch + 1, 0)
    return version, True, high


def matches(version, requirement):
    """Whether `version` (parsed) satisfies `requirement` (comparators joined by commas)."""
    for comparator in requirement.split(","):
        low, inclusive, high = comparator_bounds(comparator)
        if low is not None and (version < low or (version == low and not inclusive)):
            return False
        if high is not None and version >= high:
            return False
    return True


def advisories(package):
    """The advisories of `package` in the database, each as its TOML table."""
    folder = os.path.join(DATABASE, package)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".md"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            text = f.read()
        block = re.search(r"```toml\n(.*?)\n```", text, re.S)
        if not block:
            raise ValueError(f"{name}: no TOML block")
        found.append(tomllib.loads(block.group(1)))
    return found


def applying(package, version_text):
    """The advisories that apply to `package` at `version_text`."""
    version = parse_version(version_text)
    hits = []
    for advisory in advisories(package):
        if advisory["advisory"].get("withdrawn"):
            continue
        versions = advisory.get("versions", {})
        safe = versions.get("patched", []) + versions.get("unaffected", [])
        if not any(matches(version, requirement) for requirement in safe):
            hits.append(advisory)
    return hits


def library_tree():
    """(name, version) of every crate in the library's normal and build dependency tree."""
    out = subprocess.run(
        ["cargo", "tree", "-p", "cloakroom", "--all-features", "-e", "normal,build",
         "--prefix", "none", "--format", "{p}"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    crates = set()
    for line in out.stdout.splitlines():
        m = re.match(r"(\S+) v(\S+)", line.strip())
        if m:
            crates.add((m.group(1), m.group(2)))
    return sorted(crates)


def self_check():
    """The check must be able to fail: a known vulnerable version, and its fix."""
    vulnerable = [a["advisory"]["id"] for a in applying("time", "0.3.45")]
    fixed = [a["advisory"]["id"] for a in applying("time", "0.3.55")]
    cases = [
        ("time 0.3.45 falls under RUSTSEC-2026-0009", "RUSTSEC-2026-0009" in vulnerable),
        ("time 0.3.55 does not", "RUSTSEC-2026-0009" not in fixed),
        ("^0.1 takes 0.1.9, not 0.2.0",
         matches(parse_version("0.1.9"), "^0.1") and not matches(parse_version("0.2.0"), "^0.1")),
        (">= 0.3.6, < 0.3.47 takes 0.3.6, not 0.3.47",
         matches(parse_version("0.3.6"), ">= 0.3.6, < 0.3.47")
         and not matches(parse_version("0.3.47"), ">= 0.3.6, < 0.3.47")),
        ("a pre-release sorts before its release",
         matches(parse_version("1.0.0-rc.1"), "< 1.0.0")),
    ]
    failed = [what for what, ok in cases if not ok]
    for what, ok in cases:
        print(f"[audit] self-check: {what}: {'ok' if ok else 'FAILED'}")
    return 1 if failed else 0


def main():
    if not os.path.isdir(DATABASE):
        print(f"[audit] no advisory database at {DATABASE}", file=sys.stderr)
        return 2
    if sys.argv[1:] == ["--self-check"]:
        return self_check()
    if sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    crates = library_tree()
    vulnerabilities, notes, accepted = [], [], []
    for name, version in crates:
        for advisory in applying(name, version):
            entry = advisory["advisory"]
            line = f"{name} {version}: {entry['id']} ({entry.get('url', 'no url')})"
            reason = ACCEPTED.get((name, entry["id"]))
            if reason:
                accepted.append(f"{line}: {reason}")
                continue
            (notes if entry.get("informational") else vulnerabilities).append(
                line + (f" [{entry['informational']}]" if entry.get("informational") else ""))
    for line in notes:
        print(f"[audit] informational: {line}")
    for line in accepted:
        print(f"[audit] accepted: {line}")
    for line in vulnerabilities:
        print(f"[audit] VULNERABLE: {line}")
    print(f"[audit] {len(crates)} crates in the library's tree, {len(vulnerabilities)} "
          f"vulnerabilities, {len(notes)} informational advisories")
    return 1 if vulnerabilities else 0


if __name__ == "__main__":
    sys.exit(main())
