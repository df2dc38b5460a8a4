from . import controllers
from . import models
from .hooks import uninstall_hook
from .services.redact import install_redaction

# Before any request runs: Odoo's access log and MSAL would otherwise print
# OAuth codes and tokens.
install_redaction()
