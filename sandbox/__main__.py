"""python -m sandbox: run the Microsoft 365 sandbox until SIGINT or SIGTERM."""

import argparse
import shutil
import signal
import sys
import threading

from .core import Sandbox


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--tenant-fixture", help="JSON file of tenants, apps, users and messages")
    parser.add_argument("--ca-out", help="also write the CA certificate (PEM) to this path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    sb = Sandbox(seed=args.seed, host=args.host, port=args.port)
    if args.tenant_fixture:
        sb.load_fixture(args.tenant_fixture)
    sb.start()
    ca_path = sb.ca_file
    if args.ca_out:
        shutil.copyfile(sb.ca_file, args.ca_out)
        ca_path = args.ca_out
    # What an admin types into Settings for custom endpoints: hosts only (Odoo adds the
    # tenant and /v1.0 itself).
    print(f"base URL: {sb.base_url}")
    print(f"Authority URL and Graph URL (Settings, custom endpoints): {sb.base_url}")
    print(f"CA file: {ca_path}")
    for tenant in sb.directory.tenants:
        print(f"tenant {tenant.domain}: Microsoft Tenant {tenant.id} or {tenant.domain}")
    sys.stdout.flush()

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    done.wait()
    sb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
