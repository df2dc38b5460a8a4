from . import controllers
from . import models
from . import wizard
from .hooks import uninstall_hook
from .services.log_filters import install_log_filters

# Before any request runs: Odoo's access log and MSAL would otherwise print
# OAuth codes and tokens (and Odoo's mail queue a deferred send as an error).
install_log_filters()
