from . import main
from . import notifications
