"""A local Microsoft 365 sandbox: Entra ID v2.0 and Graph mail over real HTTPS on 127.0.0.1.

Pure Python, no Odoo: imported as top-level ``sandbox`` by pytest and as
``odoo.addons.microsoft_outlook_graph.sandbox`` inside Odoo, hence relative imports only.
"""

from .core import Sandbox
from .faults import Fault
from .server import LogEntry
from .signin import SignInResult
from .tokens import SECRET_MARKER

__all__ = ["SECRET_MARKER", "Fault", "LogEntry", "Sandbox", "SignInResult"]
