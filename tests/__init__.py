from . import test_install
from . import test_connect
from . import test_connect_errors
from . import test_tokens
from . import test_send
from . import test_lifecycle
from . import test_tours
from . import test_incoming
