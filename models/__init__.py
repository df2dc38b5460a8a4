from . import microsoft_outlook_graph_mixin
from . import microsoft_outlook_graph_flow
from . import ir_mail_server
from . import fetchmail_server
from . import res_config_settings
from . import res_users
from . import mail_mail
from . import microsoft_outlook_graph_failed_message
