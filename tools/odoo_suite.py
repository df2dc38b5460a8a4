"""Run the addon's Odoo suite, and Odoo's own mail tests beside it, in a real Odoo 19.

Called by ``tools/test``. It uses an Odoo that is already installed: the source
tree from ``ODOO_SRC`` (default /opt/odoo19) and its interpreter from ``ODOO_PY``
(default /opt/odoo19venv/bin/python). Each run gets a new database on the local
PostgreSQL, dropped afterwards. Exit status: 0 passed, 1 failed, 3 skipped
(no Odoo 19 here; the reason is printed on one line).
"""

import argparse
import concurrent.futures
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADDON = "microsoft_outlook_graph"
# Bridge modules kept in bridges/: installed and tested beside the addon, in the same run.
BRIDGES = ["microsoft_outlook_graph_mass_mailing"]
REPO = Path(__file__).resolve().parent.parent
VAR = REPO / "var"
SKIPPED = 3

# Odoo's own tests that must keep passing with this addon installed. They run
# twice: at load time as Odoo runs them (each module's at-install tests with only
# its dependencies loaded), and again with every module loaded (see
# odoo_test_runner.py). base's mail server tests are left out: they assume that
# mail is not installed and fail with mail alone.
COMPAT_MODULES = ["microsoft_outlook", "google_gmail", "test_mail"]
COMPAT_TAGS = ",".join(
    [
        "/microsoft_outlook",
        "/google_gmail",
        "/mail:TestFetchmail",
        "/mail:TestIrMailServer",
        "/mail:TestPersonalServer",
        "/mail:MailCase",
        "/test_mail:TestMailMail",
        "/test_mail:TestMailMailServer",
        "/test_mail:TestMailMailRace",
    ]
)
# Browsers Odoo's test runner looks for on Linux, in its order.
CHROME_NAMES = ("google-chrome", "chromium", "chromium-browser", "google-chrome-stable")
RESULT_LINE = re.compile(r"(\d+) failed, (\d+) error\(s\) of (\d+) tests when loading database")


def find_odoo():
    """Return (source dir, python) of an installed Odoo 19, or raise LookupError."""
    src = Path(os.environ.get("ODOO_SRC") or "/opt/odoo19")
    python = os.environ.get("ODOO_PY") or "/opt/odoo19venv/bin/python"
    if not (src / "odoo-bin").is_file():
        raise LookupError(f"no Odoo source tree at {src} (set ODOO_SRC)")
    if not shutil.which(python) and not Path(python).is_file():
        raise LookupError(f"no Odoo interpreter at {python} (set ODOO_PY)")
    probe = subprocess.run(
        [python, "-c", "import odoo.release as r; print(r.version_info[0])"],
        cwd=src,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode or probe.stdout.strip() != "19":
        raise LookupError(f"{python} cannot import Odoo 19 from {src}")
    return src, python


def ensure_addon_requirements(python):
    """Install the addon's and the sandbox's packages into Odoo's environment.

    Odoo's own pins are frozen as constraints so that nothing of Odoo changes.
    """
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    missing = subprocess.run(
        [python, "-c", "import msal, trustme, cryptography, requests, websocket"],
        capture_output=True,
        check=False,
    )
    if not missing.returncode:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(frozen)
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            constraints.name,
            "-r",
            str(REPO / "requirements.txt"),
            "trustme",
            "websocket-client",
        ],
        check=True,
    )
    os.unlink(constraints.name)


def ensure_browser():
    """Install Debian's chromium for the browser tours when no Chrome is on PATH.

    Only as root on a machine with apt-get; elsewhere, or when the install fails,
    the tours skip and say why (tests/test_tours.py).
    """
    if any(shutil.which(name) for name in CHROME_NAMES):
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print("No Chrome or Chromium on PATH: the browser tours will be skipped.")
        return
    print("No Chrome or Chromium on PATH: installing Debian's chromium for the browser tours.")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    for attempt in range(2):
        if attempt:  # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, check=False)
        if not done.returncode:
            return
    print(f"  apt-get install chromium failed (exit {done.returncode}): tours will be skipped.")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def addons_path(src):
    """An addons folder holding this checkout under the addon's name.

    It lives outside the checkout: a link inside it would make the addon contain itself,
    and Odoo's translation export follows links.
    """
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    link_dir = Path(tempfile.gettempdir()) / f"{ADDON}-addons-{checkout}"
    link_dir.mkdir(parents=True, exist_ok=True)
    targets = {ADDON: REPO, **{name: REPO / "bridges" / name for name in BRIDGES}}
    for name, target in targets.items():
        link = link_dir / name
        if not (link.is_symlink() and link.resolve() == target):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    return f"{src}/addons,{src}/odoo/addons,{link_dir}"


def odoo_command(src, python, database, *args, all_modules_loaded=False):
    return [
        python,
        str(REPO / "tools" / "odoo_test_runner.py"),
        f"--odoo-src={src}",
        *(["--all-modules-loaded"] if all_modules_loaded else []),
        "--",
        f"--addons-path={addons_path(src)}",
        f"--database={database}",
        "--db_host=127.0.0.1",
        "--db_user=" + os.environ.get("PGUSER", "root"),
        f"--http-port={free_port()}",
        "--stop-after-init",
        "--log-level=info",
        "--http-interface=127.0.0.1",
        *args,
    ]


def run_odoo(command, log_path, say=print, env=None):
    """Run Odoo, keep its log, return (exit code, log text)."""
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
    text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    say(f"  ({time.monotonic() - started:.0f} s, log: {log_path})")
    return code, text


def dropdb(database):
    """Drop a throwaway database and its filestore, which dropdb alone leaves behind."""
    subprocess.run(
        ["dropdb", "--if-exists", "-h", "127.0.0.1", database], check=False, capture_output=True
    )
    shutil.rmtree(Path.home() / ".local/share/Odoo/filestore" / database, ignore_errors=True)


def report(name, code, text, say=print):
    """Print Odoo's result line and return True when the run passed."""
    results = RESULT_LINE.findall(text)
    problems = [
        line
        for line in text.splitlines()
        if re.search(r" (ERROR|CRITICAL) ", line) or (" WARNING " in line and ADDON in line)
    ]
    for line in problems[:40]:
        say(f"  {line[:400]}")
    if not results:
        say(f"{name}: no Odoo result line (exit {code})")
        return False
    failed, errors, ran = (int(n) for n in results[-1])
    say(f"{name}: {ran - failed - errors} passed, {failed + errors} failed ({ran} tests)")
    return code == 0 and not failed and not errors and ran > 0 and not problems


def _collected(job, *args):
    """Run job with a say() that keeps its lines: (lines, passed)."""
    lines = []
    return lines, job(*args, say=lines.append)


def addon_suite(src, python, stamp, tags, say):
    """Install the addon and its bridges on a new database and run their tests."""
    database = f"mog_test_{stamp}"
    modules = ",".join([ADDON, *BRIDGES])
    say(f"Odoo suite: installing {modules} on a new database and running {tags}")
    try:
        code, text = run_odoo(
            odoo_command(
                src,
                python,
                database,
                f"--init={modules}",
                "--test-enable",
                f"--test-tags={tags}",
            ),
            VAR / f"odoo-suite-{stamp}.log",
            say,
        )
        return report("Odoo suite", code, text, say)
    finally:
        dropdb(database)


def compat_suite(src, python, stamp, say):
    """Odoo's own mail tests with the addon installed and every module loaded."""
    database = f"mog_compat_{stamp}"
    say("Odoo's own mail tests with the addon installed, every module loaded")
    try:
        code, text = run_odoo(
            odoo_command(src, python, database, f"--init={ADDON},{','.join(COMPAT_MODULES)}"),
            VAR / f"odoo-compat-install-{stamp}.log",
            say,
        )
        if code:
            say(f"Odoo's mail tests: install failed (exit {code})")
            return False
        code, text = run_odoo(
            odoo_command(
                src,
                python,
                database,
                "--test-enable",
                f"--test-tags={COMPAT_TAGS}",
                all_modules_loaded=True,
            ),
            VAR / f"odoo-compat-{stamp}.log",
            say,
        )
        return report("Odoo's mail tests", code, text, say)
    finally:
        dropdb(database)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--tags",
        default=",".join(f"/{name}" for name in [ADDON, *BRIDGES]),
        help="Odoo --test-tags for the addon run",
    )
    parser.add_argument("--no-compat", action="store_true", help="skip Odoo's own mail tests")
    options = parser.parse_args()
    try:
        src, python = find_odoo()
    except LookupError as exc:
        print(f"Odoo suite skipped: {exc}.")
        return SKIPPED
    ensure_addon_requirements(python)
    ensure_browser()
    VAR.mkdir(exist_ok=True)
    stamp = f"{os.getpid()}_{int(time.time())}"
    jobs = [(addon_suite, options.tags)]
    if not options.no_compat:
        jobs.append((compat_suite,))
    # The two runs share nothing but PostgreSQL: side by side they take the time of the
    # longer one. Each prints its lines once done, in this order.
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(_collected, job, src, python, stamp, *args) for job, *args in jobs]
        passed = True
        for future in futures:
            lines, ok = future.result()
            print("\n".join(lines), flush=True)
            passed &= ok
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
