"""Print what failed in the logs of `cargo test` runs, last, where a CI log's tail shows it.

`make test` runs its test binaries side by side and keeps each run's output in
target/test-logs/; when one fails, this prints every failed test by name with the end of
its output (the panic's message and place), so the reason is in the last lines of the log
rather than thousands of lines above the builds that ran after it.

    python3 dev/failed_tests.py target/test-logs/*.log
"""

import re
import sys

# Lines of each failed test's output to print: its panic and what led to it.
TAIL = 25
SECTION = re.compile(r"^---- (\S+) stdout ----$")
RESULT = re.compile(r"^test result: FAILED\.")
FAILED_LINE = re.compile(r"^test (\S+) \.\.\. FAILED$")


def failures(text):
    """(name, the last lines of its output) for every failed test in one log."""
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = SECTION.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not SECTION.match(lines[j]) and lines[j] != "failures:":
            j += 1
        body = [line for line in lines[i + 1 : j] if line.strip()]
        # The panic's message, not the frames of its backtrace (they stay in the log).
        if "stack backtrace:" in body:
            body = body[: body.index("stack backtrace:")] + ["(backtrace in the log)"]
        found.append((m.group(1), body[-TAIL:]))
        i = j
    # A test that failed without a section of its own (a timeout, a crash of the binary).
    named = {name for name, _ in found}
    for line in lines:
        m = FAILED_LINE.match(line)
        if m and m.group(1) not in named:
            found.append((m.group(1), []))
            named.add(m.group(1))
    return found


def report(paths):
    out = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as err:
            out.append(f"{path}: cannot read ({err.strerror})")
            continue
        found = failures(text)
        crashed = not found and any(RESULT.match(l) for l in text.splitlines())
        for name, tail in found:
            out.append(f"FAILED {name}  ({path})")
            out.extend(f"    {line}" for line in tail)
        if crashed:
            out.append(f"FAILED (no test named) ({path})")
        if not found and "error: test failed" in text:
            out.append(f"{path}: a test binary failed; its last lines:")
            out.extend(f"    {line}" for line in text.splitlines()[-TAIL:])
    return out


if __name__ == "__main__":
    lines = report(sys.argv[1:])
    print("\n".join(["", "==== what failed ===="] + (lines or ["nothing named in the logs"])))
