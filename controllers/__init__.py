from . import main
from . import notifications
from . import certificates
