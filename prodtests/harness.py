"""The harness of the production-shape suite: the odoo-bin process, the RPC client, helpers.

See conftest.py for what the suite does and how.
"""

import io
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xmlrpc.client
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandbox import defaults  # noqa: E402
from tools.odoo_suite import (  # noqa: E402
    ADDON,
    addons_path,
    dropdb,
    free_port,
)

VAR = ROOT / "var" / "prodtests"
QUEUE_CRON = "mail.ir_cron_mail_scheduler_action"
FETCH_CRON = "mail.ir_cron_mail_gateway_action"
# Lines of the server log that fail any scenario.
PROBLEM = re.compile(r"Traceback|could not serialize|deadlock detected| (ERROR|CRITICAL) ")
ADMIN_LOGIN = ADMIN_PASSWORD = "admin"  # noqa: S105 - the throwaway database's admin


def wait_for(predicate, timeout, what, step=0.25):
    """Poll predicate until it returns a truthy value; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


# the server process -----------------------------------------------------------------------


def snapshot_addons_path(src, ref, into):
    """An addons path holding the addon as committed at ref (``git archive``), in into.

    For a run that must not see files being edited in the checkout meanwhile.
    """
    addon_dir = Path(into) / ADDON
    addon_dir.mkdir(parents=True)
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", "--format=tar", ref],  # noqa: S607 - git from PATH
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(addon_dir, filter="data")
    return f"{src}/addons,{src}/odoo/addons,{into}"


class OdooServer:
    """odoo-bin with HTTP workers and a cron worker on its own database.

    The addon is the checkout (``tools/odoo_suite.addons_path``), or, with the environment
    variable PROD_SUITE_REF set to a git revision, that revision's files.
    """

    def __init__(self, src, python, database):
        self.src, self.python, self.database = src, python, database
        self.snapshot = None
        ref = os.environ.get("PROD_SUITE_REF")
        if ref:
            self.snapshot = Path(tempfile.mkdtemp(prefix="prodtests-addons-"))
            self.addons_path = snapshot_addons_path(src, ref, self.snapshot)
        else:
            self.addons_path = addons_path(src)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        VAR.mkdir(parents=True, exist_ok=True)
        self.log_path = VAR / f"{database}.log"
        self.process = None

    def _options(self):
        return [
            f"--addons-path={self.addons_path}",
            f"--database={self.database}",
            f"--db-filter=^{self.database}$",
            "--db_host=127.0.0.1",
            "--db_user=" + os.environ.get("PGUSER", "root"),
        ]

    def run_once(self, log_name, *args, log_level="warn"):
        """Run odoo-bin on this database until it stops (an install, an upgrade):
        (exit code, log path)."""
        log_path = VAR / f"{self.database}-{log_name}.log"
        with open(log_path, "w", encoding="utf-8") as log:
            done = subprocess.run(  # noqa: S603 - our own odoo-bin command
                [
                    self.python,
                    str(self.src / "odoo-bin"),
                    *self._options(),
                    *args,
                    "--stop-after-init",
                    f"--log-level={log_level}",
                    f"--http-port={free_port()}",
                ],
                cwd=self.src,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        return done.returncode, log_path

    def install(self):
        """A new database with the addon (and Odoo's mail) installed, as an admin would."""
        dropdb(self.database)
        code, install_log = self.run_once("install", f"--init={ADDON}", "--without-demo=True")
        if code:
            pytest.exit(f"installing {ADDON} failed (exit {code}); see {install_log}")

    def start(self):
        command = [
            self.python,
            str(self.src / "odoo-bin"),
            *self._options(),
            f"--http-port={self.port}",
            f"--gevent-port={free_port()}",
            "--http-interface=127.0.0.1",
            "--workers=2",
            "--max-cron-threads=1",
            "--limit-time-real=300",
            "--limit-time-cpu=300",
            "--log-level=info",
            f"--logfile={self.log_path}",
        ]
        self.log_path.write_text("", encoding="utf-8")
        with open(VAR / f"{self.database}-stdout.log", "w", encoding="utf-8") as out:
            # Its own session: the master, its workers and the long-polling process form a
            # process group that stop() signals as one.
            self.process = subprocess.Popen(  # noqa: S603
                command, cwd=self.src, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def answers():
            if self.process.poll() is not None:
                pytest.exit(f"odoo-bin exited with {self.process.returncode}; see {self.log_path}")
            try:
                return requests.get(f"{self.url}/web/login", timeout=30).status_code == 200
            except requests.RequestException:
                return False

        wait_for(answers, 180, f"odoo-bin to answer on {self.url}", step=0.5)
        wait_for(self.cron_worker_pid, 60, "the cron worker to start", step=0.5)

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # Workers that outlived the master (they are in its process group).
        for pid in self.group_pids():
            os.kill(pid, signal.SIGKILL)

    def cleanup(self):
        if self.snapshot is not None:
            shutil.rmtree(self.snapshot, ignore_errors=True)

    # the log ------------------------------------------------------------------------------

    def log_size(self):
        return self.log_path.stat().st_size

    def log_since(self, offset):
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def problems_since(self, offset):
        return [line for line in self.log_since(offset).splitlines() if PROBLEM.search(line)]

    # processes ----------------------------------------------------------------------------

    def group_pids(self):
        """Live processes of the server's process group, the master left out."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.process.pid:
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            # fields[0]: state, [1]: ppid, [2]: process group
            if fields[0] != "Z" and int(fields[2]) == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def cron_worker_pid(self):
        """The live cron worker's pid, from the master's "Worker WorkerCron (pid) alive"."""
        alive = re.findall(r"Worker WorkerCron \((\d+)\) alive", self.log_since(0))
        for pid in reversed(alive):
            if int(pid) in self.group_pids():
                return int(pid)
        return None

    def pids_talking_to(self, port):
        """Processes of the server with an open TCP connection to 127.0.0.1:port."""
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            columns = line.split()
            remote, state, inode = columns[2], columns[3], columns[9]
            if state == "01" and int(remote.rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{inode}]")
        found = []
        for pid in self.group_pids():
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(fd) in inodes:
                        found.append(pid)
                        break
                except OSError:
                    continue
        return found


# the client ---------------------------------------------------------------------------------


class RpcError(Exception):
    pass


class Odoo:
    """The admin of the running server, over JSON-RPC; one requests session per object."""

    def __init__(self, server):
        self.server = server
        self.url = server.url
        self.database = server.database
        self.session = requests.Session()
        self.session.trust_env = False
        self.uid = None
        self._ids = itertools.count(1)
        self._nudged = {}

    def login(self):
        answer = self._post(
            "/web/session/authenticate",
            {"db": self.database, "login": ADMIN_LOGIN, "password": ADMIN_PASSWORD},
        )
        self.uid = answer["uid"]
        return self

    def clone(self):
        """Another admin session, for a thread of its own."""
        return Odoo(self.server).login()

    def _post(self, path, params, timeout=300):
        reply = self.session.post(
            self.url + path,
            json={"jsonrpc": "2.0", "method": "call", "params": params, "id": next(self._ids)},
            timeout=timeout,
        )
        reply.raise_for_status()
        body = reply.json()
        if "error" in body:
            data = body["error"].get("data") or {}
            raise RpcError(f"{data.get('name')}: {data.get('message')}\n{data.get('debug', '')}")
        # Odoo leaves "result" out of its answer when the method returned None.
        return body.get("result")

    def call(self, model, method, *args, timeout=300, **kwargs):
        return self._post(
            f"/web/dataset/call_kw/{model}/{method}",
            {"model": model, "method": method, "args": list(args), "kwargs": kwargs},
            timeout=timeout,
        )

    def xmlrpc(self, model, method, *args, **kwargs):
        """execute_kw over XML-RPC, as odoo-mailgate and external scripts do."""
        proxy = xmlrpc.client.ServerProxy(f"{self.url}/xmlrpc/2/object", allow_none=True)
        return proxy.execute_kw(
            self.database, self.uid, ADMIN_PASSWORD, model, method, list(args), kwargs
        )

    def read_one(self, model, record_id, fields):
        return self.call(model, "read", [record_id], fields)[0]

    def ref(self, xmlid):
        module, name = xmlid.split(".")
        found = self.call(
            "ir.model.data",
            "search_read",
            [("module", "=", module), ("name", "=", name)],
            ["res_id"],
        )
        return found[0]["res_id"]

    def set_param(self, key, value):
        self.call("ir.config_parameter", "set_param", key, value)

    # crons ----------------------------------------------------------------------------------

    def trigger(self, xmlid):
        """ir.cron._trigger() inside Odoo, committed: its NOTIFY wakes the cron worker."""
        self.call(
            "ir.actions.server",
            "run",
            [self.server.trigger_action],
            context={"prodtests_cron": xmlid},
        )

    def nudge(self, xmlid, every=5.0):
        """Trigger the cron when no trigger of it is due, or when the last one is older than
        every seconds: a cron worker that started after a trigger's NOTIFY (one that replaced
        a killed worker) would otherwise first sleep its minute."""
        last = self._nudged.get(xmlid)
        if self.cron_idle(xmlid) or last is None or time.monotonic() - last > every:
            self.trigger(xmlid)
            self._nudged[xmlid] = time.monotonic()

    def cron_idle(self, xmlid):
        """True when no trigger of the cron is due: triggering it again would add nothing."""
        cron_id = self.ref(xmlid)
        due = self.call(
            "ir.cron.trigger",
            "search_count",
            [("cron_id", "=", cron_id), ("call_at", "<=", _utc_now())],
        )
        return not due

    def run_cron(self, xmlid, timeout=120):
        """Trigger a cron and wait until the cron worker logged the end of one run of it."""
        cron_id = self.ref(xmlid)
        ended = re.compile(rf"Job '[^']*' \({cron_id}\) (fully done|partially done|failed)")
        mark = self.server.log_size()
        self.trigger(xmlid)
        wait_for(
            lambda: ended.search(self.server.log_since(mark)),
            timeout,
            f"a run of the cron {xmlid} to end",
        )


def utc_ago(seconds):
    """An Odoo Datetime string, seconds ago."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - seconds))


def _utc_now():
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


# mailboxes ----------------------------------------------------------------------------------


class Mailboxes:
    """Sandbox users and the Odoo servers connected to them, for one test."""

    def __init__(self, odoo, sb, tenant, test_name):
        self.odoo, self.sb, self.tenant = odoo, sb, tenant
        self.prefix = re.sub(r"[^a-z0-9]+", "-", test_name.lower())[-40:].strip("-")
        self.count = itertools.count(1)
        self.outgoing, self.incoming = [], []
        self.res_partner_model = None

    def new_user(self, name="user"):
        address = f"{self.prefix}-{name}-{next(self.count)}@{defaults.TENANT_DOMAIN}"
        self.sb.add_user(self.tenant, address, f"{name.title()} {self.prefix}")
        return address

    def _connect(self, model, record_id, address):
        action = self.odoo.call(model, "action_microsoft_graph_connect", [record_id])
        assert action["type"] == "ir.actions.act_url", action
        assert action["url"].startswith(self.sb.base_url), action["url"]
        signed_in = self.sb.sign_in(action["url"], login=address)
        assert signed_in.url, f"the sandbox did not redirect: {signed_in.page[:300]}"
        assert "/microsoft_outlook/confirm" in signed_in.url, signed_in.url
        landing = self.odoo.session.get(signed_in.url, allow_redirects=False, timeout=120)
        assert landing.status_code in (302, 303), (landing.status_code, landing.text[:500])
        status = self.odoo.read_one(model, record_id, ["microsoft_graph_status"])
        assert status["microsoft_graph_status"] == "valid", status

    def connect_outgoing(self, address, **values):
        server_id = self.odoo.call(
            "ir.mail_server",
            "create",
            {
                "name": f"Graph {address}",
                "smtp_authentication": "microsoft_graph",
                "smtp_user": address,
                "from_filter": address,
                "microsoft_graph_mailbox_kind": "personal",
                **values,
            },
        )
        self.outgoing.append(server_id)
        self._connect("ir.mail_server", server_id, address)
        return server_id

    def connect_incoming(self, address, settle=True, **values):
        """A Graph incoming server that files each new message as a new contact, confirmed;
        settle: then one fetchmail run, so that the start position is taken for sure."""
        if self.res_partner_model is None:
            self.res_partner_model = self.odoo.call(
                "ir.model", "search", [("model", "=", "res.partner")]
            )[0]
        server_id = self.odoo.call(
            "fetchmail.server",
            "create",
            {
                "name": f"Graph {address}",
                "server_type": "microsoft_graph",
                "user": address,
                "microsoft_graph_mailbox_kind": "personal",
                "object_id": self.res_partner_model,
                **values,
            },
        )
        self.incoming.append(server_id)
        self._connect("fetchmail.server", server_id, address)
        self.odoo.call("fetchmail.server", "button_confirm_login", [server_id])
        state = self.odoo.read_one("fetchmail.server", server_id, ["state"])["state"]
        assert state == "done", state
        # The position "from now" is taken at the connection, or else by the first run:
        # mail delivered before that run would not be new mail (test_send_once.py).
        if settle:
            self.odoo.run_cron(FETCH_CRON)
        return server_id

    def close(self):
        """Take this test's servers and queued mail out of the way of the next tests."""
        if self.outgoing:
            queued = self.odoo.call(
                "mail.mail",
                "search",
                [("state", "=", "outgoing"), ("mail_server_id", "in", self.outgoing)],
            )
            if queued:
                self.odoo.call("mail.mail", "write", queued, {"state": "cancel"})
            self.odoo.call("ir.mail_server", "write", self.outgoing, {"active": False})
        if self.incoming:
            self.odoo.call("fetchmail.server", "write", self.incoming, {"active": False})


# mail helpers -------------------------------------------------------------------------------


def queue_mails(odoo, server_id, address, count=1, subject="prodtests"):
    """Queue mails from address through server_id; return {mail id: Message-ID}."""
    ids = odoo.call(
        "mail.mail",
        "create",
        [
            {
                "subject": f"{subject} {n}",
                "body_html": f"<p>{subject} {n}</p>",
                "email_from": address,
                "email_to": f"customer{n}@example.com",
                "mail_server_id": server_id,
                "auto_delete": False,
            }
            for n in range(count)
        ],
    )
    rows = odoo.call("mail.mail", "read", ids, ["message_id"])
    return {row["id"]: row["message_id"] for row in rows}


def mail_states(odoo, mail_ids):
    rows = odoo.call("mail.mail", "read", list(mail_ids), ["state", "failure_reason"])
    return {row["id"]: row for row in rows}


def delivery_counts(sb, message_ids):
    counts = dict.fromkeys(message_ids, 0)
    for sent in sb.outbox():
        if sent.internet_message_id in counts:
            counts[sent.internet_message_id] += 1
    return counts


def imports(odoo, message_ids):
    """How many mail.message records Odoo made of each incoming Message-ID."""
    rows = odoo.call(
        "mail.message", "search_read", [("message_id", "in", list(message_ids))], ["message_id"]
    )
    counts = dict.fromkeys(message_ids, 0)
    for row in rows:
        counts[row["message_id"]] += 1
    return counts


def incoming_mime(to, subject, message_id):
    return (
        f"From: Customer <customer@example.com>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{subject}\r\n"
    ).encode()


def drive_queue(odoo, mail_ids, timeout, also=None):
    """Trigger the queue cron until none of mail_ids is outgoing; return their states."""
    deadline = time.monotonic() + timeout
    while True:
        states = mail_states(odoo, mail_ids)
        waiting = [mail_id for mail_id, row in states.items() if row["state"] == "outgoing"]
        if not waiting:
            return states
        if time.monotonic() > deadline:
            reasons = {states[mail_id]["failure_reason"] for mail_id in waiting[:5]}
            pytest.fail(f"{len(waiting)} mails still queued after {timeout} s: {reasons}")
        if also:
            also()
        odoo.nudge(QUEUE_CRON)
        time.sleep(0.5)


def drive_import(odoo, message_ids, timeout):
    """Trigger the fetchmail cron until Odoo imported every one of message_ids; return the
    import counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = imports(odoo, message_ids)
        if all(counts.values()):
            return counts
        if time.monotonic() > deadline:
            missing = [message_id for message_id, count in counts.items() if not count]
            pytest.fail(f"{len(missing)} messages not imported after {timeout} s: {missing[:5]}")
        odoo.nudge(FETCH_CRON)
        time.sleep(0.5)


def drive(odoo, cron, predicate, timeout, what):
    """Trigger cron whenever it is idle until predicate() is truthy; return its value."""

    def done():
        value = predicate()
        if not value:
            odoo.nudge(cron)
        return value

    return wait_for(done, timeout, what, step=0.5)


def deliver_incoming(sb, address, count, tag):
    """Deliver count new messages into the Inbox of address; return their Message-IDs."""
    message_ids = []
    slug = re.sub(r"[^A-Za-z0-9]+", "-", tag)
    for n in range(count):
        message_id = f"<{slug}-{n}-{time.monotonic_ns()}@customer.example.com>"
        sb.deliver(address, incoming_mime(address, f"{tag} {n}", message_id))
        message_ids.append(message_id)
    return message_ids


def hold_after(fault, skipped):
    """Let the first skipped requests that match fault pass; the fault fires from then on.

    The sandbox's faults fire on the first matches; a kill "in the middle of a page" needs
    the second request of a kind held, not the first.
    """
    matches = fault.matches
    seen = itertools.count()
    fault.matches = lambda request: matches(request) and next(seen) >= skipped
    return fault


def kill_cron_worker_in_request(server, sb, fault, timeout=60):
    """Wait until the sandbox holds a request of fault, then SIGKILL the cron worker, which
    must be connected to the sandbox (HTTP workers may keep idle connections to it too);
    return its pid."""
    pid = server.cron_worker_pid()
    wait_for(lambda: fault.hits >= 1, timeout, "the sandbox to hold the request")
    talking = server.pids_talking_to(sb.port)
    assert pid in talking, f"the cron worker {pid} is not the one talking to Graph: {talking}"
    os.kill(pid, signal.SIGKILL)
    return pid


def assert_clean_log(server, offset):
    problems = server.problems_since(offset)
    assert not problems, "the server log has problems:\n" + "\n".join(
        line[:600] for line in problems[:30]
    )
