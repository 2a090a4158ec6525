#!/usr/bin/env python3
"""Checks that no code compiled with an ISA family's flags can be reached except through its table.

Each csrc/isa/<family>.cpp is compiled with its own flags (-mavx512f, -mavx2, ...). A function
with external linkage that such an object defines and another object also defines -- an inline
function or template instantiation (a weak COMDAT symbol) -- is merged by the linker into one
copy, possibly the AVX-512 one, which every caller then runs: SIGILL on a CPU without the ISA.
And a non-ISA object calling into an ISA object directly would bypass cpu_has().

    python tools/check_isa_symbols.py build/asan     # a CMake build folder (sanitize.sh's)

Fails (exit 1) when an ISA object exports a symbol another object also defines, or when a
non-ISA object references an ISA object's symbol other than its `<family>_family()` entry.
"""
from __future__ import annotations

import pathlib
import subprocess
import sys

DEFINED = set("TWVuBDR")  # nm types of an external definition (u: a GNU unique object)


def symbols(obj: pathlib.Path) -> tuple[set[str], set[str]]:
    """(external definitions, undefined references) of one object file."""
    out = subprocess.run(["nm", "-P", str(obj)], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind in DEFINED and not name.startswith("DW.ref."):
            # DW.ref.*: the exception tables' pointer to the C++ personality routine, data
            # every object with unwinding code shares, never code built with the ISA's flags.
            defined.add(name)
    return defined, undefined


def demangle(names: list[str]) -> list[str]:
    if not names:
        return []
    return subprocess.run(["c++filt"], input="\n".join(names), check=True, capture_output=True,
                          text=True).stdout.splitlines()


def main(build_dir: str) -> int:
    objects = sorted(pathlib.Path(build_dir).rglob("*.o"))
    isa = [o for o in objects if o.parent.name == "isa" and "fastconv_kernels" in str(o)]
    rest = [o for o in objects if o not in isa]
    if not isa or not rest:
        print(f"check_isa_symbols: no ISA objects under {build_dir}; build first", file=sys.stderr)
        return 1
    table = {o: symbols(o) for o in objects}
    problems = []
    for obj in isa:
        exported = table[obj][0]
        entries = {s for s in exported if s.endswith("_familyEv")}  # fastconv::isa::<x>_family()
        for other in objects:
            if other == obj:
                continue
            shared = sorted(exported & table[other][0])
            problems += [f"{obj.name} and {other.name} both define {d}" for d in demangle(shared)]
            if other in rest:
                called = sorted((exported - entries) & table[other][1])
                problems += [f"{other.name} calls {d} of {obj.name} directly" for d in demangle(called)]
    for p in problems:
        print("check_isa_symbols:", p, file=sys.stderr)
    print(f"check_isa_symbols: {len(isa)} ISA objects, {len(rest)} others, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/asan"))
