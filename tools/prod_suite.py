"""Run the production-shape suite (prodtests/): a real odoo-bin, driven from outside.

Called by ``tools/test`` (unless SKIP_PROD_SUITE=1) under the repository's test virtualenv. It finds
Odoo as ``tools/odoo_suite.py`` does (``ODOO_SRC``, ``ODOO_PY``, ``PGUSER``), installs the
addon's packages into Odoo's environment, and gevent, which ``odoo-bin --workers`` needs for
its long-polling process (Odoo's own requirement, pinned as Odoo pins it). The suite then
creates its own database, starts ``odoo-bin --workers=2 --max-cron-threads=1`` on it and
drops both at the end. Logs: var/prodtests/.

Exit status: 0 passed, 1 failed, 3 skipped (no Odoo 19 here; the reason on one line).
Extra arguments go to pytest, e.g. ``-k revoked`` or ``-x``.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.odoo_suite import (
    REPO,
    SKIPPED,
    ensure_addon_requirements,
    find_odoo,
)

# odoo-bin's requirements.txt pins gevent per Python version; these are its pins.
GEVENT_PINS = {(3, 10): "21.8.0", (3, 11): "22.10.2", (3, 12): "24.2.1"}


def ensure_gevent(python):
    """odoo-bin with workers spawns a long-polling process that imports gevent."""
    if not subprocess.run(
        [python, "-c", "import gevent"], capture_output=True, check=False
    ).returncode:
        return
    version = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pin = GEVENT_PINS.get((int(version[0]), int(version[1])), "24.11.1")
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
        constraints.write(frozen)
        constraints.flush()
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "-c", constraints.name, f"gevent=={pin}"],
            check=True,
        )


def main():
    try:
        _src, python = find_odoo()
    except LookupError as exc:
        print(f"Production-shape suite skipped: {exc}.")
        return SKIPPED
    ensure_addon_requirements(python)
    ensure_gevent(python)
    started = time.monotonic()
    code = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", "prodtests/pytest.ini", "prodtests", *sys.argv[1:]],
        cwd=REPO,
        check=False,
    ).returncode
    print(f"Production-shape suite: {time.monotonic() - started:.0f} s, pytest exit {code}")
    if code == 5:  # pytest: no tests collected (all skipped at session start)
        print("Production-shape suite skipped: pytest collected nothing.")
        return SKIPPED
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
