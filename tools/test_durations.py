"""Print the slowest tests of Odoo runs from their logs.

Usage: python tools/test_durations.py [--top N] LOG...

Odoo logs "Starting Class.test_method ..." when a test begins; a test lasts until the next
test of the same process begins, or until the process logs the end of its tests.
"""

import argparse
import datetime
import re
import sys

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\d+) \w+ \S+ (\S+): (.*)$")
START = re.compile(r"^Starting (\S+) \.\.\.")
END = re.compile(r"(post-tests|at-install tests|tests) in [\d.]+s|tests when loading database")


def durations(lines):
    """(seconds, test) of each test in an Odoo log."""
    running = {}  # pid -> (start, name)
    found = []
    for line in lines:
        match = LINE.match(line)
        if not match:
            continue
        stamp, pid, logger, message = match.groups()
        moment = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
        start = START.match(message)
        if start or END.search(message):
            if pid in running:
                began, name = running.pop(pid)
                found.append(((moment - began).total_seconds(), name))
            if start:
                module = logger.removeprefix("odoo.addons.").split(".")[0]
                running[pid] = (moment, f"{module}: {start.group(1)}")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("logs", nargs="+")
    options = parser.parse_args(argv)
    found = []
    for path in options.logs:
        with open(path, encoding="utf-8", errors="replace") as log:
            found += durations(log)
    if not found:
        return 0
    print(f"\nslowest {options.top} Odoo tests of {len(found)}:")
    for seconds, name in sorted(found, reverse=True)[: options.top]:
        print(f"  {seconds:7.2f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
